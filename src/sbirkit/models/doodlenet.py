"""DoodleNet: a small CNN trained on the 345 Quick, Draw! classes, read from its Keras HDF5 file.

The original (yining1023/doodleNet, Keras 2.2.4) takes 28x28x1 ink-on-black bitmaps in [0, 1]:
3 x (two 3x3 'same' conv + ReLU, 2x2 max-pool) with 16/32/64 channels, dropout, a channels-last
Flatten, Dense 512 tanh, Dense 345 softmax. The file is read with h5py; no TensorFlow needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone
from .registry import register_backbone
from .weights import WeightsError, fit_state_dict

KERAS_SUFFIXES = (".h5", ".hdf5")


class DoodleNet(nn.Module):
    """The DoodleNet classifier; ``forward`` returns logits (Keras's softmax is left to the caller).

    ``embed`` gives the tanh hidden layer (512-d), the feature used as a sketch backbone. With
    ``num_classes=0`` there is no classifier and ``forward`` returns that embedding.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64),
        hidden: int = 512,
        num_classes: int = 345,
        image_size: int = 28,
        dropout: float = 0.1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        prev, side = 1, image_size
        for width in widths:
            layers += [
                nn.Conv2d(prev, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            prev, side = width, side // 2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(prev * side * side, hidden)
        self.classifier = nn.Linear(hidden, num_classes) if num_classes else None
        self.widths, self.hidden, self.num_classes, self.image_size = tuple(widths), hidden, num_classes, image_size
        self.class_names: list[str] | None = None

    def embed(self, ink: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` ink-on-black bitmaps -> ``(B, hidden)`` tanh features."""
        fmap = self.dropout(self.features(ink))
        # Keras flattens channels-last (H, W, C); permute so the Dense kernel rows line up
        return torch.tanh(self.fc(fmap.permute(0, 2, 3, 1).flatten(1)))

    def forward(self, ink: torch.Tensor) -> torch.Tensor:
        z = self.embed(ink)
        return self.classifier(z) if self.classifier is not None else z


def _read_keras_layers(path: Path) -> tuple[list[tuple[str, list[np.ndarray]]], dict]:
    """(layer name, weight arrays) for each Keras layer that has weights, in order; and the model config."""
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in group.attrs:
                raise WeightsError(f"{path}: layer_names: expected a Keras HDF5 model or weights file")
            config = json.loads(f.attrs["model_config"]) if "model_config" in f.attrs else {}
            layers = []
            for raw in group.attrs["layer_names"]:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                names = [
                    w.decode() if isinstance(w, bytes) else str(w) for w in group[name].attrs.get("weight_names", [])
                ]
                arrays = [np.asarray(group[name][w], dtype=np.float32) for w in names]
                if arrays:
                    layers.append((name, arrays))
            return layers, config
    except WeightsError:
        raise
    except Exception as exc:  # not HDF5, truncated, odd layout: name the file
        raise WeightsError(f"{path}: could not read Keras HDF5 weights ({type(exc).__name__}: {exc})") from exc


def _input_size(config: dict, default: int) -> int:
    """The input side from a Keras model config's ``batch_input_shape``, else ``default``."""
    inner = config.get("config")
    layers = inner.get("layers", []) if isinstance(inner, dict) else (inner or [])
    for layer in layers:
        shape = (layer.get("config") or {}).get("batch_input_shape")
        if shape and len(shape) == 4 and shape[1]:
            return int(shape[1])
    return default


def load_doodlenet(h5_path: str | Path, class_names: str | Path | None = None) -> DoodleNet:
    """Build a :class:`DoodleNet` from the Keras HDF5 file (widths and class count read from it).

    Conv kernels go HWIO -> OIHW, Dense kernels (in, out) -> (out, in). ``class_names`` (default:
    ``class_names.txt`` beside the file, if present) sets ``net.class_names``, one name a line.
    """
    path = Path(h5_path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights: expected the DoodleNet Keras file (doodleNet-model.h5); no such file")
    layers, config = _read_keras_layers(path)
    convs = [(n, a) for n, a in layers if a[0].ndim == 4]
    denses = [(n, a) for n, a in layers if a[0].ndim == 2]
    if len(convs) % 2 or not convs or len(denses) != 2 or len(convs) + len(denses) != len(layers):
        raise WeightsError(
            f"{path}: layers: expected pairs of Conv2D then 2 Dense layers, got "
            f"{[(n, [a.shape for a in arrs]) for n, arrs in layers]}"
        )
    widths = tuple(int(a[0].shape[3]) for _, a in convs[::2])
    hidden, num_classes = int(denses[0][1][0].shape[1]), int(denses[1][1][0].shape[1])
    side = int(round((denses[0][1][0].shape[0] / widths[-1]) ** 0.5))
    size = _input_size(config, 28 if side == 3 else side * 2 ** len(widths))
    net = DoodleNet(widths, hidden, num_classes, image_size=size)
    state: dict[str, torch.Tensor] = {}
    conv_modules = [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)]
    for idx, (name, arrays) in zip(conv_modules, convs):
        if len(arrays) != 2:
            raise WeightsError(f"{path}: {name}: expected a kernel and a bias, got {len(arrays)} arrays")
        state[f"features.{idx}.weight"] = torch.from_numpy(arrays[0].transpose(3, 2, 0, 1).copy())
        state[f"features.{idx}.bias"] = torch.from_numpy(arrays[1])
    for key, (name, arrays) in zip(("fc", "classifier"), denses):
        if len(arrays) != 2:
            raise WeightsError(f"{path}: {name}: expected a kernel and a bias, got {len(arrays)} arrays")
        state[f"{key}.weight"] = torch.from_numpy(arrays[0].T.copy())
        state[f"{key}.bias"] = torch.from_numpy(arrays[1])
    fit_state_dict(net, state, str(path))
    names_path = Path(class_names) if class_names is not None else path.with_name("class_names.txt")
    if class_names is not None or names_path.is_file():
        names = [line.strip() for line in names_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) != num_classes:
            raise WeightsError(
                f"{names_path}: class names: expected {num_classes} lines (one per output), got {len(names)}"
            )
        net.class_names = names
    return net.eval()


def _max_filter(ink: torch.Tensor, k: int) -> torch.Tensor:
    """A k x k max filter ('valid': the result is k - 1 smaller), applied separably."""
    return F.max_pool2d(F.max_pool2d(ink, (k, 1), stride=1), (1, k), stride=1)


def _ink_box(ink: torch.Tensor, pad: float, threshold: float = 0.1) -> tuple[int, int, int] | None:
    """(top, left, side) of a square around the ink of one ``(H, W)`` image with ``pad`` of side each way."""
    rows, cols = torch.nonzero(ink > threshold, as_tuple=True)
    if len(rows) == 0:
        return None
    y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    side = max(1, int(round(max(x1 - x0, y1 - y0) / (1.0 - 2.0 * pad))))
    return (y0 + y1) // 2 - side // 2, (x0 + x1) // 2 - side // 2, side


def sketch_to_ink(
    x: torch.Tensor,
    size: int = 28,
    fit: str = "bbox",
    line_width: float = 1.0,
    pad: float = 0.04,
    normalize_ink: bool = False,
) -> torch.Tensor:
    """RGB (or 1-channel) black-on-white sketches in [0, 1], any size -> ``(B, 1, size, size)`` ink on black.

    Mimics the Quick, Draw! 28-px bitmaps DoodleNet was trained on, to which it is very sensitive
    (blurring or thinning the strokes drops its accuracy to near zero): ``fit="bbox"`` crops each
    sketch to a square around its ink with ``pad`` margin (``"none"`` keeps the frame); strokes
    are thickened (max filter) to about ``line_width`` output pixels; then area resampling to
    ``size``. ``normalize_ink`` rescales each image so its darkest ink is 1.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"DoodleNet input: expected (B, 3 or 1, H, W) black-on-white images, got {tuple(x.shape)}")
    if fit not in ("bbox", "none"):
        raise ValueError(f"DoodleNet input: fit: expected 'bbox' or 'none', got {fit!r}")
    ink = 1.0 - (x.mean(dim=1, keepdim=True) if x.shape[1] == 3 else x)
    out = []
    for image in ink:
        box = _ink_box(image[0], pad) if fit == "bbox" else None
        side = box[2] if box is not None else max(image.shape[-2:])
        k = int(round(side / size * line_width)) if line_width > 0 else 1
        k += 1 - k % 2  # odd, so the filter is centred
        m = k // 2  # keep m extra pixels around the crop so strokes at its edge thicken fully
        if box is not None:
            top, left, side = box
            frame = side + m
            region = F.pad(image, (frame, frame, frame, frame))  # no ink outside, so crops never leave it
            region = region[:, top + frame - m : top + frame + side + m, left + frame - m : left + frame + side + m]
        else:
            region = F.pad(image, (m, m, m, m))
        region = _max_filter(region.unsqueeze(0), k) if k > 1 else region.unsqueeze(0)
        if region.shape[-2:] != (size, size):
            region = F.interpolate(region, size=(size, size), mode="area")
        out.append(region)
    ink = torch.cat(out)
    if normalize_ink:
        ink = ink / ink.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return ink.clamp(0.0, 1.0)


class DoodleNetBackbone(Backbone):
    """DoodleNet as a sketch backbone: black-on-white RGB in, 512-d tanh features out (no classifier).

    Inputs of any size are converted to Quick, Draw!-style 28-px bitmaps (``fit``, ``line_width``,
    ``normalize_ink``: see :func:`sketch_to_ink`). ``forward_features`` is the ``(B, 64, 3, 3)`` map.
    """

    input_stats = None  # converts raw [0, 1] black-on-white images itself
    weights_prefix = "net."
    classifier_keys = ("classifier",)
    weights_hint = (
        "the Keras file doodleNet-model.h5 (github.com/yining1023/doodleNet, model-keras/), "
        "or a state dict saved from DoodleNet / this backbone"
    )

    def __init__(self, in_chans: int = 3, fit: str = "bbox", line_width: float = 1.0, normalize_ink: bool = False):
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"doodlenet: in_chans: expected 1 or 3, got {in_chans}")
        if fit not in ("bbox", "none"):
            raise ValueError(f"doodlenet: fit: expected 'bbox' or 'none', got {fit!r}")
        self.net = DoodleNet(num_classes=0)
        self.fit, self.line_width, self.normalize_ink = fit, float(line_width), bool(normalize_ink)
        self.num_features = self.net.hidden
        self.feature_channels = self.net.widths[-1]

    def to_ink(self, x: torch.Tensor) -> torch.Tensor:
        """The 28-px ink-on-black bitmaps DoodleNet sees (see :func:`sketch_to_ink`)."""
        return sketch_to_ink(x, self.net.image_size, self.fit, self.line_width, normalize_ink=self.normalize_ink)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(self.to_ink(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(self.to_ink(x))

    def load_weights(self, path: str | Path) -> list[str]:
        if Path(path).suffix.lower() in KERAS_SUFFIXES:
            full = load_doodlenet(path)
            return fit_state_dict(
                self, full.state_dict(), str(path), prefix=self.weights_prefix, ignore=self.classifier_keys
            )
        return super().load_weights(path)


@register_backbone("doodlenet")
def doodlenet(
    in_chans: int = 3, fit: str = "bbox", line_width: float = 1.0, normalize_ink: bool = False
) -> DoodleNetBackbone:
    """DoodleNet (Quick, Draw! 345 classes) sketch backbone, 512-d; weights from doodleNet-model.h5."""
    return DoodleNetBackbone(in_chans=in_chans, fit=fit, line_width=line_width, normalize_ink=normalize_ink)
