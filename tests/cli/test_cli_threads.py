"""The command line's thread count (sbirkit.cli.threads): --threads / SBIRKIT_THREADS exactly,
OMP_NUM_THREADS left to torch, otherwise the console script leaves the cores other work keeps busy
alone, so the demo and the CLI do not collapse on a busy machine (BENCHMARKS.md "Demo")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import invoke, ok, one_line_error

from sbirkit.cli import common, threads

SRC = Path(__file__).resolve().parents[2] / "src"
TINY = ["train.steps=1", "train.eval_every=1", "train.warmup_steps=0", "train.progress=false",
        "data.options.num_classes=4", "data.options.photos_per_class=6", "data.options.image_size=32",
        "method.classes_per_batch=4", "train.batch_size=8", "model.embed_dim=8"]


@pytest.fixture
def keep_threads(monkeypatch):
    """Restore torch's thread count and OMP_NUM_THREADS (set_threads changes both)."""
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "sentinel")  # recorded, so the undo restores the original
    monkeypatch.setattr(threads, "source", None)
    yield
    torch.set_num_threads(before)


def _spinner(cpu: int) -> subprocess.Popen:
    """A child that keeps one core (``cpu``) fully busy until killed."""
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    return subprocess.Popen([sys.executable, "-c", code])


@pytest.mark.parametrize("cores, busy, expected", [
    (2, None, 2), (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 1.7, 1), (2, 5.0, 1),
    (8, 1.0, 7), (8, 2.49, 6), (1, 0.0, 1), (4, -0.2, 4),
])
def test_free_threads_leaves_the_busy_cores_alone(cores, busy, expected):
    assert threads.free_threads(cores, busy) == expected


def test_the_environment_chooses_when_omp_or_mkl_is_set():
    assert threads.user_chose_threads({"OMP_NUM_THREADS": "3"})
    assert threads.user_chose_threads({"MKL_NUM_THREADS": "1"})
    assert not threads.user_chose_threads({"OMP_NUM_THREADS": " ", "PATH": "/bin"})


@pytest.mark.skipif(not Path("/proc/stat").is_file() or not hasattr(os, "sched_getaffinity"),
                    reason="samples /proc/stat (Linux)")
def test_busy_cores_sees_a_core_kept_busy():
    cpu = sorted(os.sched_getaffinity(0))[0]
    child = _spinner(cpu)
    try:
        busy = threads.busy_cores(0.3)
    finally:
        child.kill()
        child.wait()
    assert busy is not None and 0.8 <= busy <= threads.usable_cores() + 1e-6


def test_threads_flag_sets_torch_and_records_it_in_the_run(tmp_path, keep_threads):
    run = tmp_path / "run"
    ok("--threads", "1", "train", "triplet-synthetic", "--run-dir", run, *TINY)
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert json.loads((run / "meta.json").read_text())["torch_threads"] == 1
    ok("list", env={"SBIRKIT_THREADS": "2"})
    assert torch.get_num_threads() == 2
    one_line_error(invoke("--threads", "0", "list"), "--threads", "expected a positive integer, got 0")


def test_the_console_script_uses_the_cores_left_free(monkeypatch, keep_threads):
    """The rule itself with a machine stubbed in: 4 usable cores, one kept busy -> 3 threads; the
    environment or an idle machine leaves torch's count; the app called in-process never chooses."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda sample_seconds=0.2: 1.0)
    torch.set_num_threads(4)
    ok("list")  # in-process: not the console script
    assert torch.get_num_threads() == 4
    monkeypatch.setattr(common, "_console_script", True)
    ok("list")  # OMP_NUM_THREADS is set (keep_threads): torch already read it
    assert torch.get_num_threads() == 4
    monkeypatch.delenv("OMP_NUM_THREADS")
    ok("list")
    assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "busy_cores", lambda sample_seconds=0.2: 0.1)
    torch.set_num_threads(4)
    ok("list")  # idle: torch's default stays, and children choose for themselves
    assert torch.get_num_threads() == 4 and "OMP_NUM_THREADS" not in os.environ
    ok("--threads", "2", "list")  # the flag wins over the rule
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(not Path("/proc/stat").is_file() or not hasattr(os, "sched_getaffinity")
                    or len(os.sched_getaffinity(0)) < 2, reason="needs two cores and /proc/stat")
def test_a_cli_run_beside_a_busy_core_leaves_it_alone(tmp_path):
    """The real console script (python -m sbirkit) with no thread setting, beside a child that keeps
    one of its cores busy: the run's meta.json records fewer threads than usable cores."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                              "SBIRKIT_THREADS")}
    env["PYTHONPATH"] = str(SRC)
    cores = len(os.sched_getaffinity(0))
    child = _spinner(sorted(os.sched_getaffinity(0))[-1])
    try:
        done = subprocess.run([sys.executable, "-m", "sbirkit", "train", "triplet-synthetic", "--run-dir",
                               str(tmp_path / "run"), *TINY], env=env, capture_output=True, text=True,
                              timeout=300)
    finally:
        child.kill()
        child.wait()
    assert done.returncode == 0, done.stderr
    recorded = json.loads((tmp_path / "run" / "meta.json").read_text())["torch_threads"]
    assert 1 <= recorded <= cores - 1


def test_set_threads_reaches_an_imported_faiss(keep_threads):
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    try:
        threads.set_threads(1)
        assert faiss.omp_get_max_threads() == 1 and torch.get_num_threads() == 1
    finally:
        faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("total, workers, expected", [(16, 4, 4), (2, 4, 1), (7, 2, 3), (4, 1, 4)])
def test_per_worker_share(total, workers, expected):
    assert threads.per_worker(total, workers) == expected


def test_serve_workers_share_a_count_sbirkit_chose_but_keep_one_the_user_set(monkeypatch, keep_threads, tmp_path):
    """serve --workers N: N worker processes of a full count each would oversubscribe the cores N
    times, so a count chosen by the free-cores rule is split (OMP_NUM_THREADS, read by the spawned
    workers); --threads or OMP_NUM_THREADS given by the user is per process and stays."""
    import sbirkit.serve.run as serve_run

    started = []
    monkeypatch.setattr(serve_run, "serve", lambda config, **kw: started.append(kw["workers"]))
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda sample_seconds=0.2: 0.0)
    monkeypatch.setattr(common, "_console_script", True)
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(4)
    ok("serve", "--index", tmp_path, "--workers", "2")  # idle machine: torch's 4, two workers of 2
    assert started == [2] and threads.source == "default"
    assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    torch.set_num_threads(4)
    ok("--threads", "3", "serve", "--index", tmp_path, "--workers", "2")  # the user's count, per worker
    assert torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    ok("serve", "--index", tmp_path, "--workers", "2", "--threads", "1")
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    torch.set_num_threads(4)
    ok("serve", "--index", tmp_path, "--workers", "2")  # the environment chose: left alone
    assert torch.get_num_threads() == 4 and threads.source == "environment"
