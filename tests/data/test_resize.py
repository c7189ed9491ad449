"""Shrinking raster images: same result as Pillow's min filter + box, thin lines dark, a pixel cap."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import sbirkit.data.dataset as dataset_module
from sbirkit.data import DataError, Modality, Sample, SBIRDataset
from sbirkit.data.dataset import MAX_IMAGE_PIXELS, resize_image


def _drawing(w: int, h: int, line: int = 1, mode: str = "L") -> Image.Image:
    img = Image.new(mode, (w, h), "white")
    d = ImageDraw.Draw(img)
    d.ellipse([w * 0.1, h * 0.1, w * 0.9, h * 0.9], outline="black", width=line)
    d.line([0, 0, w - 1, h - 1], fill="black", width=line)
    d.line([0, h - 1, w // 2, h // 3], fill=(90, 90, 90) if mode == "RGB" else 90, width=line)
    return img


def _pillow_reference(img: Image.Image, size: int) -> Image.Image:
    """The previous implementation: Pillow's MinFilter (width about half the factor), then BOX."""
    factor = min(img.size) / size
    k = int(factor // 2) * 2 - 1
    return img.filter(ImageFilter.MinFilter(max(3, k))).resize((size, size), Image.Resampling.BOX)


@pytest.mark.parametrize("w, h, size, mode", [(300, 300, 32, "L"), (410, 300, 64, "L"), (500, 380, 32, "RGB"),
                                              (200, 180, 60, "L")])
def test_thickened_shrink_equals_the_min_filter_box_reference(w, h, size, mode):
    img = _drawing(w, h, mode=mode)
    got = resize_image(img, size, thicken=True)
    assert got.mode == mode and got.size == (size, size)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(_pillow_reference(img, size)))


def test_thin_lines_stay_dark_when_shrunk_a_lot():
    img = _drawing(2400, 1800, line=2)
    plain = np.asarray(img.resize((32, 32), Image.Resampling.BOX))
    kept = np.asarray(resize_image(img, 32, thicken=True))
    assert plain.min() > 200  # a 2-px line averaged over 56-px blocks fades to near white
    assert kept.min() < 100 and (kept < 160).sum() >= 40  # the diagonal (32 px) and ellipse stay dark
    assert np.median(kept) == 255
    # small factors are plain resampling: no thickening below 3x, and none when not asked
    np.testing.assert_array_equal(np.asarray(resize_image(img, 32, thicken=False)), plain)
    small = _drawing(80, 80)
    np.testing.assert_array_equal(
        np.asarray(resize_image(small, 40, thicken=True)), np.asarray(small.resize((40, 40), Image.Resampling.BOX))
    )


def test_non_square_target_and_mode_fallback():
    img = _drawing(900, 600).convert("LA")
    out = resize_image(img, (60, 40), thicken=True)
    assert out.size == (60, 40) and out.mode == "RGBA"
    assert np.asarray(out)[..., 0].min() < 100  # the lines survive a 15x shrink


def test_pixel_cap_is_a_one_line_error_naming_the_image(monkeypatch):
    assert 10_000_000 <= MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS  # below Pillow's bomb limit
    monkeypatch.setattr(dataset_module, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(DataError) as err:
        resize_image(_drawing(120, 100), 32, thicken=True, where="big.png")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == "big.png: pixels: expected at most 10,000 pixels (0.01 MP), got 120x100 = 12,000; shrink the image first"
    assert resize_image(_drawing(100, 100), 32, thicken=True).size == (32, 32)  # exactly at the cap


class _OneImage(SBIRDataset):
    def __init__(self, img, **kw):
        self._img = img
        super().__init__(["cat"], [Sample("s/0", Modality.SKETCH, 0, "cat", source="/data/cat/0.png")], **kw)

    def read(self, sample):
        return self._img


def test_datasets_shrink_through_the_same_path_and_cap(monkeypatch):
    img = _drawing(480, 480)
    ds = _OneImage(img, image_size=32)
    got = np.asarray(ds.load_image(ds.samples[0]).convert("L"))
    np.testing.assert_array_equal(got, np.asarray(_pillow_reference(img, 32)))
    monkeypatch.setattr(dataset_module, "MAX_IMAGE_PIXELS", 200_000)
    with pytest.raises(DataError, match=r"^/data/cat/0.png: pixels: expected at most 200,000 pixels .* 480x480"):
        ds.load_image(ds.samples[0])
