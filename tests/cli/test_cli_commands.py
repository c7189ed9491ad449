"""The command line's outputs: index build/info, search over folders and as JSON, --drawing,
embed's real output path, data synth --overwrite, data info --validate's exit code, --help."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import invoke, ok, one_line_error
from PIL import Image


# ---- help -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["data", "info"], ["data", "synth"], ["search"], ["eval"],
                                     ["index", "build"], ["index", "info"]])
def test_help_shows_no_bool_type_for_flags(command):
    out = ok(*command, "--help").output
    assert "<bool>" not in out and "--help" in out
    if command == ["search"]:
        assert "--json" in out and "--drawing" in out
    if command == []:
        assert "--debug" in out


def test_list_shows_the_timm_and_torchvision_forms():
    out = ok("list").output
    backbones = next(line for line in out.splitlines() if line.startswith("backbones:"))
    assert "tiny_cnn" in backbones and "timm/<name>" in backbones and "tv/<name>" in backbones
    tv = next(line for line in out.splitlines() if line.strip().startswith("tv/<name>:"))
    assert "resnet18" in tv and "vgg16" in tv


# ---- data -----------------------------------------------------------------------------------------
def test_data_synth_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "synth"
    args = ("data", "synth", "--out", out, "--num-classes", "2", "--photos-per-class", "2", "--image-size", "16")
    ok(*args, "--seed", "1")
    (out / "NOTES.txt").write_text("mine")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    one_line_error(invoke(*args, "--seed", "2"), str(out), "expected a new or empty folder", "--overwrite")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written
    (out / "photo" / "stale").mkdir()
    (out / "photo" / "stale" / "old.png").write_bytes(b"x")
    ok(*args, "--seed", "2", "--num-classes", "3", "--overwrite")
    assert not (out / "photo" / "stale").exists()  # the old export is gone ...
    assert (out / "NOTES.txt").read_text() == "mine"  # ... other files stay
    rows = (out / "metadata.csv").read_text().splitlines()
    assert len(rows) == 1 + 12 and len(list((out / "photo").rglob("*.png"))) == 6
    (tmp_path / "file").write_text("x")
    one_line_error(invoke("data", "synth", "--out", tmp_path / "file", "--overwrite"), "found a file")


def test_data_info_validate_exits_1_and_counts_failures(tmp_path):
    out = tmp_path / "synth"
    ok("data", "synth", "--out", out, "--num-classes", "2", "--photos-per-class", "2", "--image-size", "16")
    assert "validated: 8 decoded, 0 failed" in ok("data", "info", out, "--validate").output
    sorted((out / "photo").rglob("*.png"))[0].write_bytes(b"not a png")
    sorted((out / "sketch").rglob("*.png"))[0].write_bytes(b"nor this")
    result = invoke("data", "info", out, "--validate")
    assert result.exit_code == 1
    assert "validated: 6 decoded, 2 failed" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "error: 2 of 8 files failed to load or decode (listed above)"
    assert invoke("data", "info", out).exit_code == 0  # without --validate nothing is decoded


# ---- embed ----------------------------------------------------------------------------------------
def test_embed_prints_the_path_it_wrote(cli_run, tmp_path):
    run, photos, _ = cli_run
    out = ok("embed", run, photos, "--out", tmp_path / "vectors").stdout
    assert out.strip().endswith(f"-> {tmp_path / 'vectors.npz'}")
    assert np.load(tmp_path / "vectors.npz")["embeddings"].shape == (9, 16)
    out = ok("embed", run, photos, "--out", tmp_path / "named.npz").stdout
    assert out.strip().endswith(f"-> {tmp_path / 'named.npz'}") and not (tmp_path / "named.npz.npz").exists()


# ---- index build / info ---------------------------------------------------------------------------
def test_index_build_reports_the_factory_it_used_and_info_shows_it(cli_run, tmp_path):
    run, photos, _ = cli_run
    out = tmp_path / "ivf"
    built = ok("index", "build", run, photos, "--out", out, "--factory", "IVF256,Flat").stdout
    assert "indexed 9 photos (0 unreadable, skipped) with IVF1,Flat" in built
    assert "factory: asked for IVF256,Flat, used IVF1,Flat: nlist 256 > 9 training vectors" in built
    info = ok("index", "info", out).stdout
    assert "items: 9  dim: 16" in info and "IVF1,Flat (asked for IVF256,Flat" in info
    assert "nprobe: 1" in info and "format version 2" in info and "backbone tiny_cnn" in info
    meta = json.loads(ok("index", "info", out, "--json").stdout)
    assert meta["factory"] == "IVF1,Flat" and meta["factory_requested"] == "IVF256,Flat"
    assert meta["ntotal"] == 9 and meta["dim"] == 16 and meta["metric"] == "ip" and meta["nprobe"] == 1
    assert meta["model_info"]["run"] == str(run.resolve()) and len(meta["model_info"]["fingerprint"]) == 16
    assert meta["version"].startswith("v-") and meta["created"] and meta["format_version"] == 2
    assert set(meta["files"]) == {"index.faiss", "items.jsonl", "meta.json"}


def test_index_build_into_an_existing_index_replaces_it(cli_run, cli_index, tmp_path):
    import shutil

    run, photos, _ = cli_run
    out = tmp_path / "idx"
    shutil.copytree(cli_index, out)
    before = (out / "CURRENT").read_text()
    ok("index", "build", run, photos, "--out", out, "--factory", "HNSW8")
    assert (out / "CURRENT").read_text() != before
    assert json.loads(ok("index", "info", out, "--json").stdout)["factory"] == "HNSW8"


# ---- search -------------------------------------------------------------------------------------
def _ranked(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.strip()[:1].isdigit()]


def test_search_json_matches_the_text_output(cli_index, cli_run):
    _, photos, sketches = cli_run
    sketch = sorted(sketches.rglob("*.png"))[0]
    text = ok("search", "--index", cli_index, "--sketch", sketch, "-k", "4").stdout
    data = json.loads(ok("search", "--index", cli_index, "--sketch", sketch, "-k", "4", "--json").stdout)
    assert data["k"] == 4 and data["metric"] == "ip" and data["skipped"] == [] and data["grid"] is None
    (query,) = data["queries"]
    assert query["query"] == str(sketch) and query["warnings"] == []
    assert [r["rank"] for r in query["results"]] == [1, 2, 3, 4]
    assert [r["path"] for r in query["results"]] == _ranked(text)
    scores = [r["score"] for r in query["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(r["class_name"] in {p.name for p in photos.iterdir()} for r in query["results"])


def test_search_over_a_folder_gives_one_block_per_sketch(cli_index, cli_run, tmp_path):
    _, _, sketches = cli_run
    folder = tmp_path / "queries"
    (folder / "sub").mkdir(parents=True)
    files = sorted(sketches.rglob("*.png"))[:3]
    for i, f in enumerate(files):
        (folder / ("sub" if i == 2 else ".") / f"q{i}.png").write_bytes(f.read_bytes())
    Image.new("RGB", (32, 32), "white").save(folder / "blank.png")  # refused, skipped, reported
    (folder / "notes.txt").write_text("not a sketch")  # not a sketch file: ignored
    grid = tmp_path / "grid.png"
    result = ok("search", "--index", cli_index, "--sketch", folder, "-k", "2", "--grid", grid)
    blocks = [line for line in result.stdout.splitlines() if line.startswith("query: ")]
    assert blocks == [f"query: {folder / n}" for n in ("q0.png", "q1.png", "sub/q2.png")]
    assert len(_ranked(result.stdout)) == 6
    assert "searched with 3 sketches (1 skipped)" in result.stdout
    assert "skipped" in result.stderr and "blank.png" in result.stderr
    assert Image.open(grid).size[1] > 3 * 32  # one row per searched sketch
    data = json.loads(ok("search", "--index", cli_index, "--sketch", folder, "-k", "2", "--json").stdout)
    assert [q["query"] for q in data["queries"]] == [str(folder / n) for n in ("q0.png", "q1.png", "sub/q2.png")]
    assert [len(q["results"]) for q in data["queries"]] == [2, 2, 2]
    assert [s["query"] for s in data["skipped"]] == [str(folder / "blank.png")]
    # the same sketch gives the same results alone and in a folder
    alone = json.loads(ok("search", "--index", cli_index, "--sketch", folder / "q0.png", "-k", "2",
                          "--json").stdout)
    single, batched = alone["queries"][0]["results"], data["queries"][0]["results"]
    assert [r["id"] for r in single] == [r["id"] for r in batched]
    assert [r["score"] for r in single] == pytest.approx([r["score"] for r in batched], abs=1e-5)
    (folder / "q0.png").unlink(), (folder / "q1.png").unlink(), (folder / "sub" / "q2.png").unlink()
    one_line_error(invoke("search", "--index", cli_index, "--sketch", folder), "none of the 1 sketch files")


def test_search_drawing_picks_the_ndjson_line(cli_index, tmp_path):
    q = tmp_path / "two.ndjson"
    line = {"word": "line", "drawing": [[[10, 240], [128, 128]]]}
    ring = {"word": "ring", "drawing": [[[128 + int(100 * np.cos(t)) for t in np.linspace(0, 6.3, 40)],
                                         [128 + int(100 * np.sin(t)) for t in np.linspace(0, 6.3, 40)]]]}
    q.write_text(json.dumps(line) + "\n" + json.dumps(ring) + "\n")

    def scores(*extra):
        data = json.loads(ok("search", "--index", cli_index, "--sketch", q, "-k", "9", "--json", *extra).stdout)
        return data["queries"][0]

    first, default, second = scores("--drawing", "0"), scores(), scores("--drawing", "1")
    assert first["drawing"] == 0 and second["drawing"] == 1
    assert first["results"] == default["results"]  # drawing 0 is the default
    assert [r["score"] for r in first["results"]] != [r["score"] for r in second["results"]]
    one_line_error(invoke("search", "--index", cli_index, "--sketch", q, "--drawing", "2"), "two.ndjson",
                   "drawing number below 2")



# ---- the library calls behind search and index info -------------------------------------------------
def test_search_and_index_info_are_library_calls_the_cli_prints(cli_index, cli_run):
    import torch

    from sbirkit.index import GalleryIndex, load_query_sketch
    from sbirkit.index.info import describe_index, format_index_info
    from sbirkit.index.run_model import load_run_encoder
    from sbirkit.index.search import search_sketch_files

    run, _, sketches = cli_run
    sketch = sorted(sketches.rglob("*.png"))[1]
    found = search_sketch_files(cli_index, sketch, 3)
    printed = json.loads(ok("search", "--index", cli_index, "--sketch", sketch, "-k", "3", "--json").stdout)
    assert found.as_dict() == printed
    # against a search by hand: the run's encoder on the query image, the index's own search
    encoder, size, _ = load_run_encoder(run)
    image = np.asarray(load_query_sketch(sketch, size=size), dtype=np.float32) / 255.0
    with torch.no_grad():
        q = encoder.encode_sketch(torch.from_numpy(image).permute(2, 0, 1)[None]).numpy()
    by_hand = GalleryIndex.load(cli_index).search(q, k=3).items_for(0)
    assert [r["id"] for r in found.blocks[0]] == [r["id"] for r in by_hand]
    assert [r["score"] for r in found.blocks[0]] == pytest.approx([r["score"] for r in by_hand], abs=1e-6)
    assert format_index_info(describe_index(cli_index)) + "\n" == ok("index", "info", cli_index).stdout
