"""Query sketches that are blank in effect, photo-like, non-finite or over-sized; one preprocessing
path for a sketch file whether it is searched with or embedded."""

from __future__ import annotations

import json
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sbirkit.data import DataError, EmptySketchError, create_dataset
from sbirkit.data.dataset import MAX_IMAGE_PIXELS
from sbirkit.errors import UsageError
from sbirkit.index import embed_image_files, load_query_sketch
from sbirkit.index.files import (
    INK_CONTRAST,
    PhotoLikeSketchWarning,
    ink_stats,
)
from sbirkit.models import create_backbone

SVG_HEAD = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def _sketch_png(path, w=300, h=200, line=2, ink=0, paper=255):
    img = Image.new("L", (w, h), paper)
    d = ImageDraw.Draw(img)
    d.ellipse([w * 0.2, h * 0.2, w * 0.8, h * 0.8], outline=ink, width=line)
    d.line([w * 0.1, h * 0.9, w * 0.9, h * 0.1], fill=ink, width=line)
    img.save(path)
    return path


def _load_quietly(path, **kw):
    """load_query_sketch with any warning turned into an error (to show there was none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_query_sketch(path, **kw)


# ---- (a) non-finite coordinates, refused when parsed -----------------------------------------------
@pytest.mark.parametrize("coords", ["1e999", "Infinity", "NaN", "-Infinity"])
def test_ndjson_with_non_finite_coordinates(tmp_path, coords):
    p = tmp_path / "inf.ndjson"
    p.write_text('{"word": "cat", "drawing": [[[0, 10, %s], [0, 10, 20]]]}\n' % coords)
    with pytest.raises(DataError) as err:
        load_query_sketch(p, size=32)
    assert _one_line(err) == (
        f"{p}:1: coordinates: expected finite x, y (within float32), got NaN or inf in stroke 0"
    )


@pytest.mark.parametrize("d", ["M0 0 L1e999 5", "M0 0 L50 NaN"])
def test_svg_query_with_non_finite_coordinates(tmp_path, d):
    p = tmp_path / "nan.svg"
    p.write_text(SVG_HEAD + f'<path d="{d}"/></svg>')
    with pytest.raises(DataError) as err:
        load_query_sketch(p, size=32)
    msg = _one_line(err)
    assert msg.startswith(f"{p}: path[0] d: expected a") and ("finite" in msg or "number" in msg), msg


# ---- (b) no usable ink, by contrast ----------------------------------------------------------------
def test_svg_path_outside_the_viewbox_is_blank(tmp_path):
    p = tmp_path / "outside.svg"
    p.write_text(SVG_HEAD + '<path d="M 200 200 L 300 300 L 250 400" stroke="black"/></svg>')
    with pytest.raises(EmptySketchError) as err:
        load_query_sketch(p, size=64)
    assert _one_line(err).startswith(f"{p}: pixels: expected ink on the sketch (at least 5 pixels")
    assert "got 0: the image is blank in effect" in str(err.value)
    inside = tmp_path / "inside.svg"  # the same path moved into the box is fine
    inside.write_text(SVG_HEAD + '<path d="M 20 20 L 30 30 L 25 40" stroke="black"/></svg>')
    assert (np.asarray(_load_quietly(inside, size=64)) < 128).any()


@pytest.mark.parametrize("level", [0, 128, 200, 255])
def test_uniform_page_of_any_grey_is_blank(tmp_path, level):
    rng = np.random.default_rng(level)
    noise = rng.normal(0, 4, (240, 320))  # sensor noise of a photographed blank page
    p = tmp_path / f"grey{level}.jpg"
    Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8)).save(p, quality=90)
    with pytest.raises(EmptySketchError, match=rf"grey{level}.jpg: pixels: expected ink on the sketch"):
        load_query_sketch(p, size=64)


@pytest.mark.parametrize("value, size", [(235, 64), (210, 64), (220, 224)])
def test_single_faint_pixel_is_blank(tmp_path, value, size):
    arr = np.full((100, 100), 255, np.uint8)
    arr[50, 50] = value
    p = tmp_path / "dot.png"
    Image.fromarray(arr).save(p)
    with pytest.raises(EmptySketchError, match="dot.png: pixels: expected ink"):
        load_query_sketch(p, size=size)


def test_single_dark_pixel_is_too_little_ink(tmp_path):
    arr = np.full((100, 100), 255, np.uint8)
    arr[50, 50] = 0
    p = tmp_path / "speck.png"
    Image.fromarray(arr).save(p)
    with pytest.raises(EmptySketchError, match=r"speck.png: pixels: expected ink on the sketch \(at least 51 pixels"):
        load_query_sketch(p, size=224)


def test_faint_but_real_drawings_are_kept(tmp_path):
    # pencil on paper: grey lines well above the contrast margin on an off-white page
    p = _sketch_png(tmp_path / "pencil.png", ink=140, paper=235)
    img = np.asarray(_load_quietly(p, size=64).convert("L"))
    stats = ink_stats(img)
    assert stats.paper == 235 and stats.ink_pixels > 100 and not stats.photo_like
    # just under the margin: refused
    q = _sketch_png(tmp_path / "ghost.png", ink=235 - INK_CONTRAST + 8, paper=235)
    with pytest.raises(EmptySketchError, match="ghost.png"):
        load_query_sketch(q, size=64)


def test_ink_stats_of_a_drawing_and_a_blank():
    page = np.full((64, 64), 250, np.uint8)
    page[10, 5:60] = 20  # 55 ink pixels
    page[30, 5:60] = 240  # faint: not ink
    s = ink_stats(page)
    assert (s.pixels, s.paper, s.ink_pixels, s.min_ink_pixels) == (4096, 250, 55, 5)
    assert s.has_ink and not s.photo_like and s.levels == 3
    assert not ink_stats(np.full((64, 64), 90, np.uint8)).has_ink


# ---- (c) photo-like queries: warned, still searched ------------------------------------------------
def test_photo_is_warned_about_but_loaded(tmp_path):
    ds = create_dataset("synthetic", num_classes=3, photos_per_class=2, sketches_per_photo=1, image_size=96)
    photo, sketch = ds.photos()[0], ds.sketches()[0]
    p = tmp_path / "photo.png"
    ds.load_image(photo).save(p)
    with pytest.warns(PhotoLikeSketchWarning) as record:
        img = load_query_sketch(p, size=64)
    assert img.size == (64, 64) and len(record) == 1
    msg = str(record[0].message)
    assert "\n" not in msg and msg.startswith(f"{p}: looks like a photo, not a drawing (")
    s = tmp_path / "sketch.png"
    ds.load_image(sketch).save(s)
    _load_quietly(s, size=64)  # the drawing of the same object: no warning


def test_phone_size_thin_line_drawing_shrunk_to_32_px_is_not_photo_like():
    from sbirkit.data.dataset import resize_image

    img = Image.new("L", (4032, 3024), 255)
    ImageDraw.Draw(img).ellipse([4032 * 0.2, 3024 * 0.2, 4032 * 0.8, 3024 * 0.8], outline=0, width=3)  # as in bench_query
    small = np.asarray(resize_image(img, (32, 24), thicken=True))
    hist = np.bincount(small.ravel(), minlength=256)
    assert (hist >= 0.005 * small.size).sum() >= 24  # many levels with a few pixels each (line edges)...
    stats = ink_stats(small)
    assert stats.levels <= 2 and stats.paper_fraction > 0.8 and not stats.photo_like  # ...but not a photo


def test_random_noise_is_warned_at_its_size_and_blank_when_shrunk_flat(tmp_path):
    rng = np.random.default_rng(0)
    small = tmp_path / "noise64.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(small)
    with pytest.warns(PhotoLikeSketchWarning, match="noise64.png: looks like a photo"):
        load_query_sketch(small, size=64)
    big = tmp_path / "noise1024.png"  # shrunk 32x with thin lines kept dark: one flat dark page
    Image.fromarray(rng.integers(0, 256, (1024, 1024), dtype=np.uint8)).save(big)
    with pytest.raises(EmptySketchError, match="noise1024.png: pixels: expected ink"):
        load_query_sketch(big, size=32)


def test_real_photos_warn_and_real_sketches_do_not(shared_data, tmp_path):
    photos = sorted((shared_data / "cifar10" / "train" / "cat").glob("*.jpg"))[:5]
    for p in photos:
        with pytest.warns(PhotoLikeSketchWarning):
            load_query_sketch(p, size=64)
    for svg in sorted((shared_data / "tuberlin_svg").rglob("*.svg"))[:5]:
        _load_quietly(svg, size=64)
    ds = create_dataset("qmul-v1", str(shared_data / "qmul_v1"), category="shoes")
    for i, sample in enumerate(ds.sketches()[:3] + ds.photos()[:3]):  # sketches and edge maps
        p = tmp_path / f"qmul{i}.png"
        ds.read(sample).save(p)
        _load_quietly(p, size=64)


# ---- pixel cap, before decoding --------------------------------------------------------------------
def _png_header_only(path, w: int, h: int) -> None:
    """A PNG that declares w x h pixels but holds no image data: opening it reads only the header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"not zlib") + chunk(b"IEND", b""))


def test_query_over_the_pixel_cap_is_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    _png_header_only(p, 9000, 9000)  # 81 MP declared; decoding it would fail (no data)
    with pytest.raises(DataError) as err:
        load_query_sketch(p, size=32)
    msg = _one_line(err)
    assert msg == (
        f"{p}: pixels: expected at most {MAX_IMAGE_PIXELS:,} pixels (50 MP), got 9000x9000 = 81,000,000; "
        "shrink the image first"
    )
    small = tmp_path / "small.png"
    _png_header_only(small, 90, 90)  # under the cap the same file fails as undecodable
    with pytest.raises(DataError, match="small.png: could not decode the image"):
        load_query_sketch(small, size=32)


def test_non_square_query_is_shrunk_then_padded(tmp_path):
    p = _sketch_png(tmp_path / "wide.png", w=1200, h=400, line=3)
    img = np.asarray(_load_quietly(p, size=60).convert("L"))
    assert img.shape == (60, 60)
    rows = np.flatnonzero((img < 128).any(axis=1))
    assert rows.min() >= 20 - 1 and rows.max() <= 40  # the 3:1 drawing sits in the middle 20 rows
    assert img[:19].min() == 255 and img[41:].min() == 255  # white padding above and below
    assert img.min() < 80  # 3-px lines shrunk 20x stay dark


# ---- one preprocessing path: embed --modality sketch == search -------------------------------------
def test_sketch_embedded_and_searched_give_the_same_vector(tmp_path):
    torch.manual_seed(0)
    net = create_backbone("tiny_cnn").eval()
    seen = []

    def encode(x):
        seen.append(x.clone())
        return net(x)

    files = [
        _sketch_png(tmp_path / "a.png", w=640, h=480),
        _sketch_png(tmp_path / "b.png", w=200, h=500, line=1),
    ]
    (tmp_path / "c.svg").write_text(SVG_HEAD + '<path d="M10 10 C 40 90 60 90 90 10"/></svg>')
    (tmp_path / "d.ndjson").write_text(json.dumps({"drawing": [[[0, 50, 100], [0, 80, 0]]]}) + "\n")
    files += [tmp_path / "c.svg", tmp_path / "d.ndjson"]
    size = 64
    emb, ok, failures = embed_image_files(encode, files, size, batch_size=3, progress=False, modality="sketch")
    assert ok == files and failures == []
    for i, f in enumerate(files):
        # what `sbirkit search` does with the file
        image = load_query_sketch(f, size=size)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            q = torch.nn.functional.normalize(net(x), dim=1).numpy()[0]
        assert float(q @ emb[i]) == pytest.approx(1.0, abs=1e-6)
    batch_inputs = torch.cat(seen)
    direct = torch.from_numpy(np.asarray(load_query_sketch(files[0], size=size), np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(batch_inputs[0], direct)  # the very same pixels

    # the photo path preprocesses the same sketch differently (stretch, no line keeping)
    seen.clear()
    photo_emb, _, _ = embed_image_files(encode, files[:1], size, progress=False)
    assert not torch.equal(seen[0][0], direct)
    assert float(photo_emb[0] @ emb[0]) < 1 - 1e-4
    assert embed_image_files(encode, files[:1], size, progress=False, modality="photo")[0].tolist() == photo_emb.tolist()


def test_embed_sketches_skips_blank_ones_and_checks_modality(tmp_path):
    good = _sketch_png(tmp_path / "good.png")
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    emb, ok, failures = embed_image_files(lambda x: x.mean(dim=(2, 3)), [good, blank], 32, progress=False,
                                          modality="sketch")
    assert ok == [good] and emb.shape == (1, 3)
    assert [(p, r.split(":")[0]) for p, r in failures] == [(blank, "EmptySketchError")]
    assert "blank.png: pixels: expected ink" in failures[0][1]
    with pytest.raises(UsageError, match="modality: expected 'photo' or 'sketch', got 'video'"):
        embed_image_files(lambda x: x, [good], 32, progress=False, modality="video")


def test_a_gallery_photo_over_the_pixel_cap_is_skipped_and_reported(tmp_path, monkeypatch):
    import torch
    from PIL import Image

    from sbirkit.data import dataset as dataset_module
    from sbirkit.index import embed_image_files

    Image.new("RGB", (40, 40), "white").save(tmp_path / "small.png")
    Image.new("RGB", (200, 100), "white").save(tmp_path / "large.png")
    monkeypatch.setattr(dataset_module, "MAX_IMAGE_PIXELS", 10_000)  # 200x100 = 20,000 is over
    emb, ok, failures = embed_image_files(lambda x: torch.ones(len(x), 4), [tmp_path / "small.png",
                                          tmp_path / "large.png"], 16, progress=False)
    assert [p.name for p in ok] == ["small.png"] and emb.shape == (1, 4)
    assert len(failures) == 1 and failures[0][0].name == "large.png" and "pixels" in failures[0][1]
