"""The command line end to end: data, train, eval, index, search, with the errors users meet."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sbirkit.cli import app

runner = CliRunner()


def _run(*args: str, ok: bool = True):
    result = runner.invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_help_lists_registered_datasets_and_backbones():
    out = _run("--help").output
    for name in ("synthetic", "folder", "qmul-v1", "quickdraw-ndjson", "tiny_cnn"):
        assert name in out
    listing = _run("list").output
    assert "sketchy_25" in listing and "triplet-synthetic" in listing and "triplet_sn" in listing


def test_data_synth_then_info_counts(tmp_path):
    out = tmp_path / "synth"
    _run("data", "synth", "--out", out, "--num-classes", "3", "--photos-per-class", "5", "--image-size", "32")
    assert len(list((out / "photo").rglob("*.png"))) == 15
    info = _run("data", "info", out, "--format", "folder", "--validate").output
    assert "classes: 3  samples: 30  photos: 15  sketches: 15" in info
    assert "validated: 30 decoded, 0 failed" in info


def test_data_info_errors_are_one_line_and_name_the_path(tmp_path):
    result = _run("data", "info", tmp_path / "nope", "--format", "folder", ok=False)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(tmp_path / "nope") in lines[0]
    result = _run("data", "info", tmp_path, "--format", "no-such-format", ok=False)
    assert result.exit_code == 2 and "unknown dataset format" in result.output


def test_data_info_reports_a_corrupt_file(tmp_path):
    out = tmp_path / "synth"
    _run("data", "synth", "--out", out, "--num-classes", "2", "--photos-per-class", "2", "--image-size", "32")
    victim = sorted((out / "photo").rglob("*.png"))[0]
    victim.write_bytes(b"not a png at all")
    result = _run("data", "info", out, "--format", "folder", "--validate", ok=False)
    assert result.exit_code == 1  # a failed file is a failed validation
    assert "validated: 7 decoded, 1 failed" in result.output and victim.name in result.output
    assert "error: 1 of 8 files failed to load or decode" in result.stderr


def test_data_info_on_real_qmul_v1_prints_the_published_pair_counts(shared_data):
    info = _run("data", "info", shared_data / "qmul_v1" / "shoes", "--format", "qmul-v1").output
    assert "paired sketch-photo: test 115, train 304" in info
    info = _run("data", "info", shared_data / "qmul_v1" / "chairs", "--format", "qmul-v1").output
    assert "paired sketch-photo: test 97, train 200" in info


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny model trained through the CLI (a few steps: only the plumbing is under test here)."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "run"
    _run("train", "triplet-synthetic", "--run-dir", run, "train.steps=6", "train.eval_every=3",
         "train.checkpoint_every=3", "train.warmup_steps=0", "data.options.num_classes=4",
         "data.options.photos_per_class=6", "data.options.image_size=32", "method.classes_per_batch=4",
         "train.batch_size=8", "model.embed_dim=16")
    photos = root / "photos"
    _run("data", "synth", "--out", root / "synth", "--num-classes", "4", "--photos-per-class", "3",
         "--image-size", "32", "--seed", "5")
    (root / "synth" / "photo").rename(photos)
    return run, photos, root


def test_train_writes_a_complete_run_dir(trained_run):
    run, _, _ = trained_run
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run / name).is_file(), name


def test_eval_prints_four_directions_and_the_protocol(trained_run):
    run, _, _ = trained_run
    out = _run("eval", run, "--split", "test").output
    for direction in ("sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo"):
        assert direction in out
    assert "split: test" in out and "mAP@all" in out and "Acc@1" in out
    saved = json.loads((run / "eval.json").read_text())
    assert saved["protocol"]["split"] == "test" and 0.0 <= saved["results"]["sketch2photo"]["metrics"]["map"] <= 1.0


def test_index_build_search_and_refusals(trained_run, tmp_path):
    run, photos, root = trained_run
    bad = photos / "cup" / "broken.png"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"\x89PNG broken")
    index = tmp_path / "index"
    built = _run("index", "build", run, photos, "--out", index)
    assert "(1 unreadable, skipped)" in built.output and "indexed 12 photos" in built.output

    sketch = next((root / "synth" / "sketch").rglob("*.png"))
    grid = tmp_path / "grid.png"
    first = _run("search", "--index", index, "--sketch", sketch, "-k", "5", "--grid", grid).output
    ranked = [line.split()[2] for line in first.splitlines() if line.strip()[:1].isdigit()]
    assert len(ranked) == 5 and Image.open(grid).size[0] > 5 * 32
    again = _run("search", "--index", index, "--sketch", sketch, "-k", "5").output  # reloaded from disk
    assert [line.split()[2] for line in again.splitlines() if line.strip()[:1].isdigit()] == ranked

    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), "white").save(blank)
    refused = _run("search", "--index", index, "--sketch", blank, ok=False)
    assert refused.exit_code == 2 and "blank" in refused.output

    live = index / (index / "CURRENT").read_text().strip()  # the version folder the pointer names
    meta = json.loads((live / "meta.json").read_text())
    meta["model_info"]["fingerprint"] = "someone-else"
    (live / "meta.json").write_text(json.dumps(meta))
    refused = _run("search", "--index", index, "--sketch", sketch, ok=False)
    assert refused.exit_code == 2 and "someone-else" in refused.output


def test_embed_writes_ids_and_vectors(trained_run, tmp_path):
    run, photos, _ = trained_run
    out = tmp_path / "emb.npz"
    _run("embed", run, photos, "--out", out)
    data = np.load(out)
    assert data["embeddings"].shape[0] == len(data["ids"]) == len(list(photos.rglob("*.png"))) - (
        1 if (photos / "cup" / "broken.png").exists() else 0)
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, rtol=1e-4)
