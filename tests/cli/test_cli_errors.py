"""Ordinary mistakes on the command line give one ``error:`` line and exit code 2; ``--debug``
and ``SBIRKIT_DEBUG=1`` show the traceback instead (issue 8, item 7)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import invoke, ok, one_line_error

from sbirkit import cli
from sbirkit.errors import CheckpointError, DataError, SbirkitError


class _UnknownName(SbirkitError, KeyError):
    """A KeyError-based SbirkitError whose str() is still KeyError's repr."""


# ---- the classifier ------------------------------------------------------------------------------
def _raise(exc):
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_ordinary_message_keeps_quotes_and_joins_lines():
    from sbirkit.registry import Registry

    reg = Registry("backbone")
    try:
        reg.get("nope")
    except KeyError as exc:
        assert cli._ordinary_message(exc) == "unknown backbone 'nope'; known: (none)"  # closing quote kept
    assert cli._ordinary_message(_raise(DataError("a.png: pixels: expected ink"))) == "a.png: pixels: expected ink"
    assert cli._ordinary_message(_raise(CheckpointError("x.pt: bad\n  detail"))) == "x.pt: bad detail"
    assert cli._ordinary_message(_raise(_UnknownName("unknown method 'x'"))) == "unknown method 'x'"
    missing = _raise(FileNotFoundError(2, "No such file or directory", "/no/such"))
    assert cli._ordinary_message(missing) == "/no/such: No such file or directory"


def test_ordinary_message_leaves_bugs_alone():
    assert cli._ordinary_message(_raise(KeyError("x"))) is None  # a bare dict lookup, not a message
    assert cli._ordinary_message(_raise(TypeError("unsupported operand"))) is None
    assert cli._ordinary_message(_raise(RuntimeError("boom"))) is None
    try:
        np.zeros(3).reshape(2, 2)  # a ValueError raised inside numpy
    except ValueError as exc:
        assert cli._ordinary_message(exc) is None
    try:
        {}["a key with spaces"]  # raised in this test file: not sbirkit's own check
    except KeyError as exc:
        assert cli._ordinary_message(exc) is None


def test_a_sentence_valueerror_raised_by_sbirkit_is_ordinary():
    from sbirkit.eval import evaluate_directions

    with pytest.raises(ValueError) as info:
        evaluate_directions(np.zeros((1, 2)), np.zeros(1), np.zeros((1, 2)), np.zeros(1), directions=["nope"])
    assert "nope" in cli._ordinary_message(info.value)


# ---- --debug ------------------------------------------------------------------------------------
def test_debug_flag_and_env_var_show_the_traceback(tmp_path):
    missing = tmp_path / "nonexistent"
    one_line_error(invoke("eval", missing), str(missing), "run directory not found")
    for result in (invoke("--debug", "eval", missing), invoke("eval", missing, env={"SBIRKIT_DEBUG": "1"})):
        assert result.exit_code == 1 and isinstance(result.exception, CheckpointError)
    one_line_error(invoke("eval", missing, env={"SBIRKIT_DEBUG": "0"}))


def test_console_entry_point_prints_one_line_and_exits_2(tmp_path):
    code = "import sys; from sbirkit.cli import main; sys.argv[0] = 'sbirkit'; main()"
    proc = subprocess.run([sys.executable, "-c", code, "search", "--index", tmp_path / "nowhere", "--sketch",
                           tmp_path / "s.png", "-k", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: -k: expected a positive integer, got 0"
    proc = subprocess.run([sys.executable, "-c", code, "--debug", "search", "--index", tmp_path, "--sketch",
                           tmp_path / "s.png", "-k", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "UsageError" in proc.stderr


# ---- eval -----------------------------------------------------------------------------------------
def test_eval_errors_are_one_line(cli_run):
    run, _, _ = cli_run
    one_line_error(invoke("eval", run, "--split", "bogus"), "split 'bogus'", "expected sketches and photos")
    one_line_error(invoke("eval", run, "--which", "foo"), "which", "'foo'")
    one_line_error(invoke("eval", run, "--data", "root"), "'root'", "expected key=value")
    line = one_line_error(invoke("eval", run, "--data", "name=nope"), "unknown dataset format 'nope'")
    assert not line.startswith("error: \"") and not line.endswith("'\"")
    one_line_error(invoke("eval", run, "--data", "options=3"), "--data options", "expected a mapping")


@pytest.mark.parametrize("which", ["best", "last"])
def test_corrupt_checkpoint_is_one_line(cli_run, tmp_path, which):
    run, photos, _ = cli_run
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    (broken / f"{which}.pt").write_bytes(b"not a torch file at all")
    one_line_error(invoke("eval", broken, "--which", which), f"{which}.pt")
    one_line_error(invoke("index", "build", broken, photos, "--out", tmp_path / "idx", "--which", which),
                   f"{which}.pt")
    assert not (tmp_path / "idx").exists()


# ---- index build: everything checked before embedding ---------------------------------------------
@pytest.fixture
def no_embedding(monkeypatch):
    """Fail the test if anything gets embedded."""
    import sbirkit.index

    def refuse(*a, **k):
        raise AssertionError("embedded images before refusing a bad argument")

    monkeypatch.setattr(sbirkit.index, "embed_image_files", refuse)


def test_index_build_refuses_bad_arguments_before_embedding(cli_run, tmp_path, no_embedding):
    run, photos, _ = cli_run
    out = tmp_path / "idx"
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--factory", "Bogus"),
                   "could not build FAISS index 'Bogus'", "could not parse index string Bogus")
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--factory", "PQ7"),
                   "'PQ7' for 16-dim vectors")  # a factory that does not fit the model's dim
    one_line_error(invoke("index", "build", run, tmp_path / "missing", "--out", out), "missing",
                   "expected a folder of images")
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--batch-size", "0"),
                   "--batch-size: expected a positive integer, got 0")
    one_line_error(invoke("index", "build", run, photos, "--out", out, "--which", "newest"), "--which", "'newest'")
    (tmp_path / "a_file").write_text("x")
    one_line_error(invoke("index", "build", run, photos, "--out", tmp_path / "a_file"),
                   "expected a folder for the index, found a file")
    one_line_error(invoke("index", "build", run, photos, "--out", photos.parent),
                   "refusing to overwrite a folder holding files other than an index")
    one_line_error(invoke("index", "build", tmp_path / "norun", photos, "--out", out), "norun")
    assert not out.exists()


def test_embed_refuses_bad_arguments_before_embedding(cli_run, tmp_path, no_embedding):
    run, photos, _ = cli_run
    one_line_error(invoke("embed", run, photos, "--out", tmp_path / "e", "--batch-size", "-1"), "--batch-size")
    one_line_error(invoke("embed", run, photos, "--out", tmp_path / "e", "--modality", "audio"), "--modality",
                   "'audio'")
    (tmp_path / "d.npz").mkdir()
    one_line_error(invoke("embed", run, photos, "--out", tmp_path / "d"), "expected a file name, found a folder")


# ---- search ---------------------------------------------------------------------------------------
def test_search_errors_are_one_line(cli_index, cli_run, tmp_path):
    _, _, sketches = cli_run
    sketch = sorted(sketches.rglob("*.png"))[0]
    one_line_error(invoke("search", "--index", cli_index, "--sketch", sketch, "-k", "0"),
                   "-k: expected a positive integer, got 0")
    one_line_error(invoke("search", "--index", cli_index, "--sketch", sketch, "--nprobe", "4"),
                   "--nprobe: only IVF indexes take it", "'Flat'")
    one_line_error(invoke("search", "--index", cli_index, "--sketch", sketch, "--drawing", "-1"), "--drawing")
    one_line_error(invoke("search", "--index", tmp_path / "noindex", "--sketch", sketch),
                   "noindex", "expected a gallery index folder")
    one_line_error(invoke("search", "--index", cli_index, "--sketch", tmp_path / "none.png"), "none.png")
    (tmp_path / "empty").mkdir()
    one_line_error(invoke("search", "--index", cli_index, "--sketch", tmp_path / "empty"),
                   "expected sketch files", "found none")


def test_broken_index_files_are_one_line(cli_index, cli_run, tmp_path):
    _, _, sketches = cli_run
    sketch = sorted(sketches.rglob("*.png"))[0]
    broken = tmp_path / "idx"
    shutil.copytree(cli_index, broken)
    live = broken / (broken / "CURRENT").read_text().strip()
    items = (live / "items.jsonl").read_bytes()
    (live / "items.jsonl").write_bytes(items.replace(b'"id": "', b'"id": "\xff', 1))
    one_line_error(invoke("search", "--index", broken, "--sketch", sketch), "items.jsonl:1:", "expected UTF-8")
    (live / "items.jsonl").write_bytes(items)
    meta = (live / "meta.json").read_text()
    (live / "meta.json").write_text(json.dumps([json.loads(meta)]))
    one_line_error(invoke("search", "--index", broken, "--sketch", sketch), "meta.json: expected a JSON object, got list")
    one_line_error(invoke("index", "info", broken), "meta.json: expected a JSON object, got list")
    (live / "meta.json").write_text(meta)
    lines = items.splitlines(keepends=True)
    (live / "items.jsonl").write_bytes(b"".join(lines[1:] + lines[:1]))  # shuffled rows
    one_line_error(invoke("search", "--index", broken, "--sketch", sketch), "items.jsonl: sha256")


# ---- data -----------------------------------------------------------------------------------------
def test_data_info_errors_are_one_line(tmp_path):
    one_line_error(invoke("data", "info", "-f", "folder"), "format 'folder' reads files", "dataset root")
    one_line_error(invoke("data", "info", tmp_path, "-f", "folder", "-o", "bogus=1"),
                   "--option bogus", "it takes: pairing")
    line = one_line_error(invoke("data", "info", tmp_path, "-f", "no-such-format"),
                          "unknown dataset format 'no-such-format'")
    assert "'no-such-format';" in line  # the closing quote survives
    one_line_error(invoke("data", "info", tmp_path / "nope", "-f", "folder"), str(tmp_path / "nope"))
    ok("data", "info", "-f", "synthetic", "-o", "num_classes=2", "-o", "photos_per_class=2")  # no path needed


def test_data_synth_refuses_bad_counts():
    one_line_error(invoke("data", "synth", "--out", "unused", "--num-classes", "0"), "--num-classes")


def test_console_warnings_are_one_line(cli_index, tmp_path):
    # a photo given as a query sketch is searched, with the photo-like warning on one line
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = (rng.integers(0, 256, (64, 64, 1)) // 32 * 32).repeat(3, axis=2).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    code = "import sys; from sbirkit.cli import main; sys.argv[0] = 'sbirkit'; main()"
    proc = subprocess.run([sys.executable, "-c", code, "search", "--index", cli_index, "--sketch",
                           tmp_path / "photo.png", "-k", "1"], capture_output=True, text=True, timeout=300)
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert proc.returncode == 0, proc.stderr
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "photo" in warnings[0], proc.stderr
