"""``sbirkit adapt`` and ``sbirkit eval --adapt``: an adapted run folder that eval, index build and
search accept, the source run left byte-for-byte untouched, qmul-v1 support folders, and one-line
errors for bad input (too few pairs, unpaired sketches, a run with no adaptive head, k <= 0)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from cli_helpers import invoke, ok, one_line_error

from sbirkit.data import create_dataset
from sbirkit.data.synthetic.writer import write_folder_layout
from sbirkit.engine import Trainer, load_run
from sbirkit.engine.inference import embed_samples

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "methods"))
from adaptive_helpers import tiny_config  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    """(run folder, support folder of the new class 'cup' in the folder layout)."""
    root = tmp_path_factory.mktemp("adaptive")
    run = root / "run"
    Trainer(tiny_config(), run).fit()
    config = tiny_config()
    ds = create_dataset("synthetic", **config["data"]["options"])
    cup = ds.subset(s for s in ds.samples if s.class_name == "cup" and s.split == "test")
    write_folder_layout(cup, root / "support", progress=False)
    return run, root / "support"


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_adapt_writes_a_run_that_eval_index_and_search_accept(adaptive_run, tmp_path):
    run, support = adaptive_run
    before = _hashes(run)
    out = tmp_path / "adapted"
    result = ok("adapt", run, "--support", support, "-k", "2", "--out", out)
    assert "adapted" in result.output and "margin" in result.output and f"run: {out}" in result.output
    assert _hashes(run) == before  # the source run folder is not modified
    meta = json.loads((out / "meta.json").read_text())["adapted"]
    assert meta["k"] == 2 and len(meta["pairs"]) == 2 and meta["strategy"] == "meta" and meta["steps"] == 1
    assert 0 < meta["margin"] < 1 and meta["from_run"] == str(run.resolve())
    assert all("/cup/" in s and "/cup/" in p for s, p in meta["pairs"])

    method, _ = load_run(out)
    source, _ = load_run(run)
    ds = create_dataset("synthetic", **tiny_config()["data"]["options"])
    cups = [s for s in ds.sketches("test") if s.class_name == "cup"]
    a = embed_samples(method.encoder, ds, cups)[0]
    b = embed_samples(source.encoder, ds, cups)[0]
    assert not np.allclose(a, b)  # the head was adapted
    state_a, state_b = method.state_dict(), source.state_dict()
    changed = {k for k in state_a if not torch.equal(state_a[k], state_b[k])}
    assert changed == {"encoder.encoder.head.proj.1.weight", "encoder.encoder.head.proj.1.bias"}

    ok("eval", out, "--split", "test", "-d", "sketch2photo")
    assert (out / "eval-test-best.json").is_file()
    ok("index", "build", out, support / "photo", "--out", tmp_path / "idx")
    sketch = next((support / "sketch" / "cup").glob("*.png"))
    found = ok("search", "--index", tmp_path / "idx", "--sketch", sketch, "-k", "3", "--json")
    assert len(json.loads(found.stdout)["queries"][0]["results"]) == 3
    assert _hashes(run) == before

    again = tmp_path / "again"
    ok("adapt", run, "--support", support, "-k", "2", "--out", again)
    assert torch.equal(torch.load(again / "best.pt", weights_only=True)["model"]["encoder.encoder.head.proj.1.weight"],
                       torch.load(out / "best.pt", weights_only=True)["model"]["encoder.encoder.head.proj.1.weight"])


def test_eval_adapt_prints_the_protocol_and_saves_its_record(adaptive_run):
    run, _ = adaptive_run
    result = ok("eval", run, "--adapt", "2", "--tasks", "class", "--draws", "2")
    assert "protocol: adapt2-class (class-level tasks, k=2, 2 draws, strategy meta, groups: cup, umbrella)" \
        in result.output
    assert "Acc@1" in result.output and "sketch2photo (micro)" in result.output
    saved = json.loads((run / "eval-test-best-adapt2-class.json").read_text())
    assert saved["protocol"]["draws"] == 2
    one_line_error(invoke("eval", run, "--adapt", "0"), "--adapt", "positive")
    one_line_error(invoke("eval", run, "--adapt", "2", "--tasks", "shoes"), "--tasks")
    one_line_error(invoke("eval", run, "--tasks", "user"), "--adapt")


def test_bad_input_is_a_one_line_error_and_writes_nothing(adaptive_run, cli_run, tmp_path):
    run, support = adaptive_run
    before = _hashes(run)
    out = tmp_path / "out"
    one_line_error(invoke("adapt", run, "--support", support, "-k", "0", "--out", out), "-k", "positive")
    one_line_error(invoke("adapt", run, "--support", support, "-k", "50", "--out", out), "k=50", "pairs")
    triplet_run = cli_run[0]
    one_line_error(invoke("adapt", triplet_run, "--support", support, "-k", "2", "--out", out),
                   "no adaptive head", "triplet")
    broken = tmp_path / "broken"
    shutil.copytree(support, broken)
    (broken / "metadata.csv").unlink()
    lone = next((broken / "photo" / "cup").glob("*.png"))
    shutil.copy(next((broken / "sketch" / "cup").glob("*.png")), broken / "sketch" / "cup" / "nophoto-1.png")
    one_line_error(invoke("adapt", run, "--support", broken, "-k", "2", "--out", out), "no paired photo", "nophoto")
    assert lone.is_file()
    one_line_error(invoke("adapt", run, "--support", tmp_path / "missing", "-k", "2", "--out", out), "--support")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    one_line_error(invoke("adapt", run, "--support", support, "-k", "2", "--out", tmp_path / "full"), "--out")
    one_line_error(invoke("adapt", run, "--support", support, "-k", "2", "--out", out, "--support-format", "zip"),
                   "--support-format")
    assert not out.exists() and _hashes(run) == before


def test_a_qmul_v1_support_folder(adaptive_run, tmp_path):
    run, _ = adaptive_run
    folder = tmp_path / "q"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        arr = np.full((n, 256, 256), 255, np.uint8)
        for i in range(n):
            r, c = rng.integers(0, 200, 2)
            arr[i, r:r + 40, c:c + 8] = 0
        scipy.io.savemat(folder / f"bags_sketch_db_{split}.mat", {"data": arr})
        scipy.io.savemat(folder / f"bags_edge_db_{split}.mat", {"data": arr})
    out = tmp_path / "bags"
    ok("adapt", run, "--support", folder, "--support-format", "qmul-v1", "-k", "1", "--split", "train",
       "--out", out)
    meta = json.loads((out / "meta.json").read_text())["adapted"]
    assert meta["support_format"] == "qmul-v1" and meta["k"] == 1 and len(meta["negative_photos"]) == 1
    assert meta["pairs"][0][0].endswith(".mat#" + meta["pairs"][0][0].rsplit("#", 1)[1])
    one_line_error(invoke("adapt", run, "--support", folder, "--support-format", "qmul-v1", "-k", "4",
                          "--split", "train", "--out", tmp_path / "b4"), "k=4")
