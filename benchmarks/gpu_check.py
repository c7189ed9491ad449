"""The GPU check's stages (run by ``benchmarks/gpu_check.sh``; each stage exits non-zero when it
fails, with one line saying why).

    python benchmarks/gpu_check.py plan                 # CPU: every preset, its data, its overrides, checked
    python benchmarks/gpu_check.py gpu-tests            # the gpu-marked tests; fails if any is skipped
    python benchmarks/gpu_check.py presets              # one bf16 + channels_last step of every preset
    python benchmarks/gpu_check.py nccl                 # an NCCL process group of one: all_reduce, all_gather
    python benchmarks/gpu_check.py throughput           # img/s: the demo's training, triplet_sn-qmul_v1-grid

Data: presets that read real data get ``data.root`` (and the DoodleNet weights path) from
``$SBIRKIT_SHARED_DATA`` (default ``../shared/data`` beside the repository), the README's layout
(``qmul_v1/``, ``quickdraw_raw/``, ``cifar10/``, ``doodlenet/``). Presets whose data is not
there (Sketchy, TU-Berlin, QuickDraw-Extended are not in it) fail, loudly, unless
``--skip-missing-data`` says to list them as skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SBIRKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
#: the placeholder roots in the presets' comments and files -> where the shared data holds them
PLACEHOLDERS = {
    "/path/to/shared/data": SHARED,
    "/path/to/data": SHARED,
    "/path/to/qmul_v1": SHARED / "qmul_v1",
}
#: bf16 autocast and channels-last tensors: what every preset's one step runs with
SPEED = ["train.device=cuda", "train.amp=bf16", "train.channels_last=true"]
ONE_STEP = ["train.steps=1", "train.eval_every=0", "train.checkpoint_every=1", "train.warmup_steps=0",
            "train.progress=false", *SPEED]
TEACHER_KEYS = ("photo_teacher", "sketch_teacher", "discriminator")


def _resolve_paths(value, missing: list[str]):
    """``value`` with the placeholder roots replaced; a root that is not on disk goes in ``missing``."""
    if isinstance(value, dict):
        return {k: _resolve_paths(v, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_paths(v, missing) for v in value]
    if isinstance(value, str) and value.startswith("/path/to/"):
        for prefix, real in sorted(PLACEHOLDERS.items(), key=lambda kv: -len(kv[0])):
            if value == prefix or value.startswith(prefix + "/"):
                path = Path(str(real) + value[len(prefix):])
                if not path.exists():
                    missing.append(str(path))
                return str(path)
        missing.append(value)  # a data set the shared data does not hold
    return value


def preset_config(name: str, run_dir: Path, extra: list[str]) -> tuple[dict, list[str]]:
    """The preset with real paths and ``extra`` overrides (teachers trained for one step too);
    returns it and the data paths that are missing."""
    from sbirkit.engine import apply_overrides, load_preset

    missing: list[str] = []
    config = _resolve_paths(load_preset(name), missing)
    method = config.get("method") or {}
    for key in TEACHER_KEYS:
        spec = method.get(key)
        if isinstance(spec, dict) and spec.get("preset"):
            spec["overrides"] = [*(spec.get("overrides") or []), *extra]  # trained once, for one step
    start = (config.get("train") or {}).get("init_from")
    if isinstance(start, dict) and start.get("preset"):  # a preset that trains its own baseline first
        start["overrides"] = [*(start.get("overrides") or []), *extra]  # for one step too
    config = apply_overrides(config, [*extra, f"run_dir={run_dir}"])
    return config, sorted(set(missing))


def check_config(config: dict) -> None:
    """What can be checked without data or a GPU: keys, values, the method's options (and its
    teachers' presets with their overrides)."""
    from sbirkit.engine import apply_overrides, load_preset
    from sbirkit.engine.config import resolve
    from sbirkit.engine.options import check_config as check_sections
    from sbirkit.methods import method_class

    resolved = resolve(config)
    check_sections(resolved)
    method_class(resolved["method"]["name"]).parse_options(resolved.get("method"))
    specs = [(resolved.get("method") or {}).get(key) for key in TEACHER_KEYS]
    specs.append((resolved.get("train") or {}).get("init_from"))  # a baseline the run trains first
    for spec in specs:
        if isinstance(spec, dict) and spec.get("preset"):
            teacher = resolve(apply_overrides(load_preset(spec["preset"]), spec.get("overrides") or []))
            check_sections(teacher)


def _presets(pattern: str | None) -> list[str]:
    import fnmatch

    from sbirkit.engine import list_presets

    names = list_presets()
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


# ---- stages ------------------------------------------------------------------------------------------
def plan(args) -> int:
    """CPU: every preset's one-step config built and checked; data paths resolved."""
    bad, rows = 0, []
    with tempfile.TemporaryDirectory() as tmp:
        for name in _presets(args.only):
            try:
                config, missing = preset_config(name, Path(tmp) / name, ONE_STEP)
                check_config(config)
                status = "no data: " + ", ".join(missing) if missing else "ok"
            except Exception as exc:  # noqa: BLE001  (every preset is reported)
                status, bad = f"BROKEN: {type(exc).__name__}: {exc}", bad + 1
                config = {"method": {"name": "?"}, "data": {"name": "?"}}
            rows.append((name, config["method"]["name"], config["data"]["name"], status))
    for row in rows:
        print("{:42s} {:24s} {:18s} {}".format(*row))
    print(f"{len(rows)} presets, {bad} broken, {sum(r[3].startswith('no data') for r in rows)} without data here "
          f"(SBIRKIT_SHARED_DATA={SHARED})")
    return 1 if bad or not rows else 0


def gpu_tests(args) -> int:
    """The gpu-marked tests; a skipped one is a failure here (it would hide a missing piece)."""
    import pytest

    class Count:
        def __init__(self):
            self.skipped, self.passed, self.failed = [], 0, 0

        def pytest_runtest_logreport(self, report):
            if report.skipped:
                self.skipped.append(f"{report.nodeid}: {report.longrepr[-1] if report.longrepr else ''}")
            elif report.when == "call":
                self.passed += report.passed
                self.failed += report.failed

    count = Count()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-m", "gpu", str(REPO / "tests")], plugins=[count])
    for line in count.skipped:
        print(f"SKIPPED (a missing piece): {line}")
    print(f"gpu tests: {count.passed} passed, {count.failed} failed, {len(count.skipped)} skipped")
    return 1 if code != 0 or count.skipped or count.passed == 0 else 0


def presets(args) -> int:
    """One training step of every preset on the GPU in bf16 with channels_last."""
    _need_cuda()
    from sbirkit.engine import Trainer

    failed, skipped, rows = [], [], []
    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    for name in _presets(args.only):
        t0 = time.perf_counter()
        try:
            config, missing = preset_config(name, root / name / "run", ONE_STEP)
            if missing:
                (skipped if args.skip_missing_data else failed).append(name)
                rows.append((name, "SKIPPED" if args.skip_missing_data else "FAIL", f"no data: {', '.join(missing)}"))
                continue
            Trainer(config, root / name / "run").fit()
            rows.append((name, "ok", f"{time.perf_counter() - t0:.1f} s"))
        except Exception as exc:  # noqa: BLE001
            failed.append(name)
            rows.append((name, "FAIL", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"))
            if args.verbose:
                traceback.print_exc()
        print("{:42s} {:8s} {}".format(*rows[-1]), flush=True)
    print(f"presets: {len(rows) - len(failed) - len(skipped)} ok, {len(failed)} failed, {len(skipped)} skipped "
          f"(no data){': ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


def nccl(args) -> int:
    """An NCCL process group of one process: all_reduce, all_gather (the autograd one the engine
    uses) and a barrier on the GPU."""
    _need_cuda()
    import torch
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    backend, device = ("gloo", "cpu") if _CPU else ("nccl", "cuda")
    if not dist.is_available() or (backend == "nccl" and not dist.is_nccl_available()):
        print("error: this torch build has no NCCL (torch.distributed.is_nccl_available() is False)")
        return 1
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    extra = {} if _CPU else {"device_id": torch.device("cuda", 0)}
    dist.init_process_group(backend, rank=0, world_size=1, **extra)
    try:
        x = torch.arange(4, dtype=torch.float32, device=device)
        dist.all_reduce(x)
        g = torch.ones(3, device=device, requires_grad=True)
        gathered = torch.cat(all_gather(g))
        gathered.sum().backward()
        dist.barrier()
        ok = x.tolist() == [0.0, 1.0, 2.0, 3.0] and gathered.shape == (3,) and g.grad.tolist() == [1.0, 1.0, 1.0]
        version = ".".join(map(str, torch.cuda.nccl.version())) if backend == "nccl" else "-"
        print(f"{backend}: process group of 1, version {version}, all_reduce {x.tolist()}, all_gather "
              f"{tuple(gathered.shape)}, grad {g.grad.tolist()}: {'ok' if ok else 'WRONG'}")
        return 0 if ok else 1
    finally:
        dist.destroy_process_group()


def throughput(args) -> int:
    """Training img/s (sketches + photos) on the GPU, bf16 + channels_last: the demo's run and
    the QMUL-V1 grid preset (its features cached first; extraction timed on its own)."""
    _need_cuda()
    import torch

    from sbirkit.demo import demo_config
    from sbirkit.engine import Trainer, apply_overrides
    from sbirkit.engine.runlog import read_metrics

    root = Path(tempfile.mkdtemp(prefix="gpu-throughput-"))
    runs = {"demo (triplet-synthetic)": apply_overrides(demo_config(root / "demo"), [])}
    grid, missing = preset_config("triplet_sn-qmul_v1-grid", root / "grid" / "run", [])
    if missing:
        print(f"error: triplet_sn-qmul_v1-grid: no data at {', '.join(missing)} (set SBIRKIT_SHARED_DATA)")
        return 1
    runs["triplet_sn-qmul_v1-grid"] = grid
    device = "CPU (--cpu: a smoke test)" if _CPU else torch.cuda.get_device_name(0)
    print(f"device: {device}, torch {torch.__version__}")
    code = 0
    for label, config in runs.items():
        steps = args.steps
        config = apply_overrides(config, [*SPEED, f"train.steps={steps}", "train.log_every=10",
                                          "train.eval_every=0", f"train.checkpoint_every={steps}",
                                          "train.progress=false", f"run_dir={root / label.split()[0]}"])
        t0 = time.perf_counter()
        try:
            run = Trainer(config).fit()
        except Exception as exc:  # noqa: BLE001
            print(f"{label}: FAIL {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            code = 1
            continue
        wall = time.perf_counter() - t0
        rates = [r["samples_per_s"] for r in read_metrics(run / "metrics.jsonl") if "samples_per_s" in r]
        steady = rates[1:] or rates  # the first window holds cuDNN's autotuning and warm-up
        pairs = statistics.median(steady)
        print(f"{label}: {2 * pairs:,.0f} img/s ({pairs:,.0f} sketch-photo pairs/s, median of {len(steady)} "
              f"windows of 10 steps, batch {config['train']['batch_size']}); {steps} steps in {wall:.1f} s wall "
              f"(data, feature extraction and validation included)")
    return code


def _need_cuda() -> None:
    if _CPU:  # --cpu: the script's own smoke test, not a GPU check
        SPEED[0] = "train.device=cpu"
        ONE_STEP[ONE_STEP.index("train.device=cuda")] = "train.device=cpu"
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"error: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                         "this stage needs a GPU")


_CPU = False
STAGES = {"plan": plan, "gpu-tests": gpu_tests, "presets": presets, "nccl": nccl, "throughput": throughput}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--only", help="fnmatch pattern of preset names (default: every preset)")
    ap.add_argument("--skip-missing-data", action="store_true",
                    help="list presets whose data is not here as skipped instead of failing")
    ap.add_argument("--steps", type=int, default=60, help="training steps timed by 'throughput'")
    ap.add_argument("-v", "--verbose", action="store_true", help="tracebacks of failing presets")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU: a smoke test of this script, not a GPU check")
    args = ap.parse_args(argv)
    global _CPU
    _CPU = args.cpu
    return STAGES[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
