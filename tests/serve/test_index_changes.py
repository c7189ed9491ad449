"""index add / index remove on the command line, and the server picking the change up
(POST /admin/reload with the token only; every worker of a multi-worker server)."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient
from serve_helpers import CLASSES, GALLERY_PER_CLASS, cli, folder_digest
from typer.testing import CliRunner

from sbirkit.cli import app as cli_app
from sbirkit.index import GalleryIndex

TOKEN = "s3cret-token-for-tests-0123456789"
N = CLASSES * GALLERY_PER_CLASS


def fails(*args) -> str:
    result = CliRunner().invoke(cli_app, [str(a) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.output)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.fixture
def own_index(index_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    return copy


@pytest.fixture(scope="module")
def more_photos(tmp_path_factory):
    out = tmp_path_factory.mktemp("more")
    cli("data", "synth", "--out", out, "--num-classes", 2, "--photos-per-class", 3, "--image-size", 32,
        "--seed", 11)
    (out / "photo" / "tree" / "broken.png").write_bytes(b"\x89PNG not really")
    return out / "photo"


def test_index_add_then_search_finds_the_new_photos(own_index, more_photos):
    out = cli("index", "add", more_photos, "--index", own_index, "--id-prefix", "batch2/")
    assert "added 6 photos (1 unreadable, skipped)" in out and f"{N + 6} items now" in out
    index = GalleryIndex.load(own_index)
    assert len(index) == N + 6 and index.updated is not None
    assert [it["id"] for it in index.items[-6:]] == [f"batch2/{c}/{i:04d}.png" for c in ("house", "tree")
                                                     for i in range(3)]
    photo = more_photos / "tree" / "0001.png"
    from sbirkit.serve import create_app

    with TestClient(create_app(own_index)) as c:
        top = c.post("/search?k=1&direction=photo2photo", content=photo.read_bytes(),
                     headers={"Content-Type": "image/png"}).json()["results"][0]
        assert top["id"] == "batch2/tree/0001.png" and top["class_name"] == "tree"


def test_index_add_refuses_ids_already_there_and_changes_nothing(own_index, synth):
    before = folder_digest(own_index)
    msg = fails("index", "add", synth / "photo", "--index", own_index)
    assert msg == f"error: {synth / 'photo'}: id 'cup/0000.png' is already in {own_index}; pick another --id-prefix"
    assert folder_digest(own_index) == before


def test_index_add_with_another_model_is_refused(own_index, more_photos, tmp_path):
    other = tmp_path / "other"
    cli("train", "triplet-synthetic", "--run-dir", other, "train.steps=2", "train.eval_every=2",
        "train.checkpoint_every=2", "train.warmup_steps=0", "data.options.num_classes=4",
        "data.options.photos_per_class=6", "data.options.image_size=32", "method.classes_per_batch=4",
        "train.batch_size=8", "model.embed_dim=32", "train.progress=false")
    before = folder_digest(own_index)
    msg = fails("index", "add", more_photos, "--index", own_index, "--run", other, "--id-prefix", "x/")
    assert msg.startswith(f"error: {own_index}: model_info.fingerprint: index built with model ")
    assert folder_digest(own_index) == before


def test_index_remove_by_id(own_index, tmp_path):
    out = cli("index", "remove", "cup/0000.png", "fish/0003.png", "--index", own_index)
    assert out.strip() == f"removed 2 items from {own_index}: {N - 2} left"
    ids = [it["id"] for it in GalleryIndex.load(own_index).items]
    assert "cup/0000.png" not in ids and "fish/0003.png" not in ids and len(ids) == N - 2
    listing = tmp_path / "ids.txt"
    listing.write_text("house/0001.png\n\nhouse/0002.png\n")
    assert "removed 2 items" in cli("index", "remove", "--ids-from", listing, "--index", own_index)


def test_index_remove_of_an_unknown_id_changes_nothing(own_index):
    before = folder_digest(own_index)
    msg = fails("index", "remove", "cup/0000.png", "no/such.png", "--index", own_index)
    assert msg == "error: remove: ids: expected ids the index holds, got 1 it does not: 'no/such.png'"
    assert fails("index", "remove", "--index", own_index).startswith("error: ID: expected at least one id")
    assert folder_digest(own_index) == before


# ---- the server picks changes up ---------------------------------------------------------------------
def test_without_a_token_there_is_no_reload_endpoint(client):
    assert client.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_reload_needs_the_token_and_serves_the_new_version(own_index, more_photos):
    from sbirkit.serve import create_app

    with TestClient(create_app(own_index, admin_token=TOKEN)) as c:
        assert c.get("/info").json()["admin_reload"] is True
        assert "/admin/reload" in c.get("/openapi.json").json()["paths"]
        old = c.get("/info").json()["index"]["version"]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
            r = c.post("/admin/reload", headers=headers)
            assert r.status_code == 401 and r.json() == {"error": "authorization: expected 'Bearer <admin token>'"}
        cli("index", "add", more_photos, "--index", own_index, "--id-prefix", "new/")
        assert c.get("/health").json()["items"] == N  # not until asked
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["items"] == N + 6 and body["previous_version"] == old and body["version"] != old
        assert body["model_reloaded"] is False  # same model: kept in memory
        assert c.get("/health").json()["items"] == N + 6
        assert c.get("/items/new%2Ftree%2F0002.png").status_code == 200


def test_a_failed_reload_keeps_serving_the_old_index(own_index):
    from sbirkit.serve import create_app

    with TestClient(create_app(own_index, admin_token=TOKEN)) as c:
        (own_index / "CURRENT").write_text("not-a-version\n")
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409
        assert r.json()["error"].startswith("reload failed, still serving version v-")
        assert c.get("/health").json() == {"status": "ok", "items": N}


def test_every_worker_reloads_when_one_is_asked(own_index, more_photos, tmp_path):
    """Workers share a signal file: the one that got POST /admin/reload rewrites it, the others
    see the change before their next request (no process needed to test it)."""
    from sbirkit.serve.config import ServeConfig
    from sbirkit.serve.state import StateHolder

    config = ServeConfig(index_dir=str(own_index), admin_token=TOKEN, reload_signal=str(tmp_path / "reload"))
    first, second = StateHolder(config), StateHolder(config)
    cli("index", "add", more_photos, "--index", own_index, "--id-prefix", "w/")
    assert len(second.current().index) == N
    first.reload(announce=True)
    assert len(first.current().index) == N + 6
    assert second.stale() and len(second.current().index) == N + 6 and not second.stale()


def test_startup_line_says_where_the_server_listens(monkeypatch, index_dir):
    import uvicorn

    from sbirkit.serve.config import ServeConfig
    from sbirkit.serve.run import serve

    ran = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append(self.config))
    lines = []
    serve(ServeConfig(index_dir=str(index_dir)), port=0, echo=lines.append)
    assert lines[0].startswith("sbirkit serve: http://127.0.0.1:") and "(localhost only;" in lines[0]
    assert f"{N:,} items" in lines[0] and "1 worker, batching 5 ms / 32" in lines[0]
    assert ran[0].app.state.config.allowed_hosts == ("127.0.0.1", "localhost", "::1", "[::1]")
    lines.clear()
    monkeypatch.setattr("sbirkit.serve.run._bind", lambda host, port: _FakeSocket())
    serve(ServeConfig(index_dir=str(index_dir)), host="0.0.0.0", port=8123, echo=lines.append)
    assert lines[0].startswith("sbirkit serve: http://0.0.0.0:8123/  (on 0.0.0.0: reachable from other machines "
                               "(--host 0.0.0.0); search has no authentication;")
    assert ran[1].app.state.config.allowed_hosts is None


class _FakeSocket:
    def getsockname(self):
        return ("0.0.0.0", 8123)

    def close(self):
        pass


def test_serve_refuses_mistakes_in_one_line(index_dir, tmp_path):
    assert fails("serve", "--index", tmp_path / "none") == f"error: {tmp_path / 'none'}: expected a gallery " \
        "index folder, found nothing there"
    assert fails("serve", "--index", index_dir, "--admin-token", "short").startswith(
        "error: --admin-token: expected at least 16 characters")
    assert fails("serve", "--index", index_dir, "--max-k", 0) == "error: --max-k: expected a positive integer, got 0"
    assert fails("serve", "--index", index_dir, "--run", tmp_path).startswith(f"error: {tmp_path}")
