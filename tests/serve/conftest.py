"""Fixtures for the server tests: one model trained well enough to retrieve by class, a photo
folder of unseen instances, an index of it, and an app (FastAPI's test client) in front of it.

Training takes ~10 s on one thread (6 synthetic classes, 600 steps); every test in tests/serve
shares it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'sbirkit[serve]')")

from serve_helpers import CLASSES, GALLERY_PER_CLASS, cli  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def serve_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def trained_run(serve_root) -> Path:
    """A triplet model on 6 synthetic classes (seed 0): val sketch->photo mAP about 0.55."""
    from sbirkit.engine import apply_overrides, load_preset, train

    config = apply_overrides(load_preset("triplet-synthetic"), [
        "train.steps=600", "train.eval_every=300", "train.checkpoint_every=300", "train.warmup_steps=20",
        "train.progress=false", "data.options.num_classes=6", "data.options.photos_per_class=100",
        "data.options.image_size=32", "method.classes_per_batch=6", "train.batch_size=36", "model.embed_dim=32",
    ])
    return train(config, serve_root / "run")


@pytest.fixture(scope="session")
def synth(serve_root) -> Path:
    """Photos and sketches of instances the model never saw (generator seed 7), as files."""
    out = serve_root / "synth"
    cli("data", "synth", "--out", out, "--num-classes", CLASSES, "--photos-per-class", GALLERY_PER_CLASS,
        "--image-size", 32, "--seed", 7)
    return out


@pytest.fixture(scope="session")
def index_dir(trained_run, synth, serve_root) -> Path:
    out = serve_root / "index"
    cli("index", "build", trained_run, synth / "photo", "--out", out)
    return out


@pytest.fixture(scope="session")
def app(index_dir):
    from sbirkit.serve import create_app

    return create_app(index_dir, batch_wait_ms=2.0)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c
