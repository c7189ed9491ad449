"""The best data-free model is servable: the shipped ImageNet-1k -> Quick, Draw! class map names
only real classes, and a classifier-only run (stand-in teachers with the real label sets: a tiny
CNN with ImageNet's 1,000 outputs and one with Quick, Draw!'s 345) builds an index with
``sbirkit index build``, answers ``sbirkit search`` and is served by ``sbirkit serve``'s app,
from files a fresh clone has (no ../shared data, no downloaded weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from sbirkit.cli import app as cli_app
from sbirkit.data.classnames import normalize_class_name
from sbirkit.methods.crossx_dfl.label_space import CLASS_MAPS_DIR, load_class_map
from sbirkit.methods.crossx_dfl.teachers import TeacherNet, imagenet_class_names


def _quickdraw_names() -> list[str]:
    return [n for n in (CLASS_MAPS_DIR / "quickdraw-345.txt").read_text(encoding="utf-8").splitlines() if n.strip()]


def test_the_imagenet_quickdraw_map_names_only_known_classes():
    quickdraw = {normalize_class_name(n) for n in _quickdraw_names()}
    imagenet = {normalize_class_name(n) for n in imagenet_class_names()}
    assert len(quickdraw) == 345 and len(imagenet) == 1000
    mapping = load_class_map("imagenet-quickdraw", "test")
    targets = [t for t in mapping if t != "__source__"]
    unknown_targets = [t for t in targets if normalize_class_name(t) not in quickdraw]
    used = [n for t in targets for n in mapping[t]]
    unknown = [n for n in used if normalize_class_name(n) not in imagenet]
    assert unknown_targets == [] and unknown == []
    assert len(used) == len({normalize_class_name(n) for n in used})  # no ImageNet class counts twice
    assert len(targets) == 185 and len(used) == 470
    assert len(mapping["dog"]) == 118 and mapping["cat"][0] == "tabby" and "mouse" not in mapping


def _cli(*args) -> str:
    result = CliRunner().invoke(cli_app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _stand_in(path: Path, classes: list[str], seed: int) -> tuple[Path, Path]:
    torch.manual_seed(seed)
    net = TeacherNet("tiny_cnn", len(classes))
    torch.save(net.state_dict(), path)
    names = path.with_suffix(".txt")
    names.write_text("\n".join(classes) + "\n", encoding="utf-8")
    return path, names


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A classifier-only run of the shipped serving preset with stand-in teachers, a folder of
    synthetic photos and sketches, and an index of the photos."""
    root = tmp_path_factory.mktemp("servable")
    photo, photo_names = _stand_in(root / "photo_teacher.pt", imagenet_class_names(), 0)
    sketch, sketch_names = _stand_in(root / "sketch_teacher.pt", _quickdraw_names(), 1)
    _cli("data", "synth", "--out", root / "synth", "--num-classes", 3, "--photos-per-class", 4, "--image-size", 32)
    run = root / "runs" / "classifier_only"
    _cli("train", "dfl_classifier_only-quickdraw_imagenet", "--run-dir", run, "train.progress=false",
         "data={name: synthetic, options: {num_classes: 3, photos_per_class: 4, image_size: 32}, test_split: test}",
         "method.image_size=32",
         f"method.photo_teacher={{checkpoint: {photo}, backbone: tiny_cnn, classes: {photo_names}, "
         "class_map: imagenet-quickdraw}",
         f"method.sketch_teacher={{checkpoint: {sketch}, backbone: tiny_cnn, classes: {sketch_names}}}")
    index = root / "index"
    out = _cli("index", "build", run, root / "synth" / "photo", "--out", index)
    assert "indexed 12 photos (0 unreadable, skipped)" in out
    return {"root": root, "run": run, "index": index, "photo": photo, "photo_names": photo_names}


def test_a_classifier_only_run_indexes_its_teachers_posteriors_over_the_mapped_classes(served):
    from sbirkit.engine import load_run
    from sbirkit.index import GalleryIndex

    method, config = load_run(served["run"])
    assert method.encoder.embed_dim == 185  # the Quick, Draw! classes with an ImageNet counterpart
    index = GalleryIndex.load(served["index"])
    assert len(index) == 12 and index.dim == 185
    # each indexed vector is the photo teacher's probabilities summed over the ImageNet classes of
    # each Quick, Draw! class, renormalised and L2-normalised (checked from the raw network)
    net = TeacherNet("tiny_cnn", 1000)
    net.load_state_dict(torch.load(served["photo"], weights_only=True))
    net.eval()
    mapping = load_class_map("imagenet-quickdraw", "test")
    lookup = {normalize_class_name(n): i for i, n in enumerate(imagenet_class_names())}
    targets = [t for t in mapping if t != "__source__"]
    from PIL import Image

    item = index.items[0]
    image = Image.open(served["root"] / "synth" / "photo" / item["path"] if not Path(item["path"]).is_absolute()
                       else item["path"]).convert("RGB").resize((32, 32))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        p = net(x).softmax(1)[0]
    mass = torch.stack([p[[lookup[normalize_class_name(n)] for n in mapping[t]]].sum() for t in targets])
    expected = F.normalize(mass / mass.sum(), dim=0).numpy()
    stored = index.index.reconstruct(0)
    assert np.allclose(stored, expected, atol=1e-4)
    assert np.allclose(method.encoder.encode_photo(x)[0].detach().numpy(), expected, atol=1e-5)


def test_search_and_serve_answer_a_drawing_from_the_classifier_only_index(served):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sbirkit.serve import create_app

    sketch = next((served["root"] / "synth" / "sketch").rglob("*.png"))
    out = _cli("search", "--index", served["index"], "--sketch", sketch, "-k", 5)
    assert out.count(".png") >= 5
    with TestClient(create_app(served["index"], batch_wait_ms=1.0)) as client:
        xs, ys = [10, 50, 90, 10], [10, 90, 10, 10]
        reply = client.post("/search?k=4", json={"strokes": [[xs, ys]], "canvas": [100, 100]})
        assert reply.status_code == 200, reply.text
        results = reply.json()["results"]
        assert len(results) == 4
        scores = [r["score"] for r in results]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
        info = client.get("/info").json()
        assert info["model"]["embed_dim"] == 185 and info["model"]["run"].endswith("classifier_only")
