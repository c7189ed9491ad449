"""The estimators (generators) of data-free SBIR: noise -> images in [0, 1] at the method's size.

* :class:`Estimator` (``conv``): a DCGAN-style convolutional generator, any pixel pattern.
* :class:`StrokeEstimator` (``strokes``): the sketch side as a drawing: a fixed number of
  quadratic or cubic Bezier strokes with widths, rendered by the differentiable rasteriser of
  :mod:`sbirkit.models.bezier`, so every generated sketch is made of lines like a real one
  (``method.sketch_estimator: strokes``). A conv estimator fitted to a sketch teacher tends to
  paint filled blobs that the teacher scores but that look nothing like a drawing.

:func:`build_estimators` makes the pair a CrossX-DFL run trains (``photo``: always conv).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from ...models.bezier import bezier_points, render_strokes

SKETCH_ESTIMATORS = ("conv", "strokes")
STROKE_CURVES = {"quadratic": 3, "cubic": 4}  # control points per stroke


def rgb(x: torch.Tensor) -> torch.Tensor:
    """Grey ``(B, 1, H, W)`` images as RGB (real sketches are read as grey RGB)."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class Estimator(nn.Module):
    """A generator: noise ``(B, noise_dim)`` -> images ``(B, channels, S, S)`` in [0, 1].

    Linear to an s×s map (s in 3..7), then (nearest 2x upsampling, 3x3 conv, BatchNorm, LeakyReLU)
    until S = s·2^n, then a 3x3 conv and a sigmoid: S may be 16, 24, 28, 32, 48, 56, 64, 96, ...
    """

    def __init__(self, noise_dim: int, image_size: int, channels: int, width: int = 16):
        super().__init__()
        side, ups = int(image_size), 0
        while side % 2 == 0 and side > 7:
            side, ups = side // 2, ups + 1
        if ups < 1 or not 3 <= side <= 7:
            raise ConfigError(f"method.image_size: expected s·2^n with s in 3..7 and n >= 1 (16, 24, 32, 48, 64, ...), "
                              f"got {image_size}")
        c = int(width) * 4
        self.start, self.side = c, side
        self.project = nn.Linear(noise_dim, c * side * side)
        layers: list[nn.Module] = [nn.BatchNorm2d(c)]
        for _ in range(ups):
            out = max(int(width) // 2, c // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, out, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.LeakyReLU(0.2, inplace=True)]
            c = out
        layers += [nn.Conv2d(c, channels, 3, padding=1), nn.Sigmoid()]
        self.body = nn.Sequential(*layers)
        self.channels = channels

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(noise).view(len(noise), self.start, self.side, self.side))


class StrokeEstimator(nn.Module):
    """Noise ``(B, noise_dim)`` -> sketches drawn with ``strokes`` Bezier strokes ``(B, channels, S, S)``.

    An MLP (two Linear -> BatchNorm -> LeakyReLU layers of ``hidden`` units) gives, per stroke,
    its control points (a sigmoid into the canvas less a ``padding`` margin, as real sketches are
    framed), its width (``widths`` = (least, most) pixels, through a sigmoid) and its opacity (a
    sigmoid, so a stroke can fade out and the number drawn varies). The strokes are sampled at
    ``samples`` points each and rendered black on white by :func:`sbirkit.models.bezier.render_strokes`.
    """

    def __init__(self, noise_dim: int, image_size: int, channels: int = 1, strokes: int = 8, curve: str = "cubic",
                 widths: Sequence[float] = (1.0, 3.0), hidden: int = 256, samples: int = 9, softness: float = 0.3,
                 padding: float = 0.08):
        super().__init__()
        if curve not in STROKE_CURVES:
            raise ConfigError(f"method.stroke_curve: expected one of {', '.join(STROKE_CURVES)}, got {curve!r}")
        if isinstance(strokes, bool) or not isinstance(strokes, int) or strokes < 1:
            raise ConfigError(f"method.stroke_count: expected a positive integer, got {strokes!r}")
        lo, hi = (float(w) for w in widths)
        if not 0 < lo <= hi:
            raise ConfigError(f"method.stroke_widths: expected [least, most] pixels with 0 < least <= most, got {widths!r}")
        self.size, self.channels, self.strokes, self.points = int(image_size), int(channels), int(strokes), STROKE_CURVES[curve]
        self.width_range, self.samples, self.softness, self.padding = (lo, hi), int(samples), float(softness), float(padding)
        self.body = nn.Sequential(nn.Linear(noise_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2, inplace=True))
        self.control = nn.Linear(hidden, strokes * self.points * 2)
        self.width = nn.Linear(hidden, strokes)
        self.opacity = nn.Linear(hidden, strokes)
        with torch.no_grad():
            self.opacity.bias.fill_(2.0)  # strokes start visible (opacity 0.88)

    def stroke_parameters(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(control points (B, N, K, 2) in [0, 1], widths (B, N) in pixels, opacity (B, N))``."""
        h = self.body(noise)
        b = len(noise)
        control = self.padding + (1 - 2 * self.padding) * torch.sigmoid(self.control(h)).view(b, self.strokes,
                                                                                              self.points, 2)
        lo, hi = self.width_range
        widths = lo + (hi - lo) * torch.sigmoid(self.width(h))
        return control, widths, torch.sigmoid(self.opacity(h))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        control, widths, opacity = self.stroke_parameters(noise)
        image = render_strokes(bezier_points(control, self.samples), widths, self.size, self.softness, opacity)
        return image.expand(-1, self.channels, -1, -1) if self.channels > 1 else image


def build_estimators(options) -> nn.ModuleDict:
    """``{"photo": conv Estimator, "sketch": conv or stroke Estimator}`` from CrossX-DFL's options."""
    o = options
    if o.sketch_estimator not in SKETCH_ESTIMATORS:
        raise ConfigError(f"method.sketch_estimator: expected one of {', '.join(SKETCH_ESTIMATORS)}, "
                          f"got {o.sketch_estimator!r}")
    photo = Estimator(o.noise_dim, o.image_size, 3, o.width)
    if o.sketch_estimator == "strokes":
        widths = o.stroke_widths
        if not isinstance(widths, (list, tuple)) or len(widths) != 2:
            raise ConfigError(f"method.stroke_widths: expected [least, most] pixels, got {widths!r}")
        sketch = StrokeEstimator(o.noise_dim, o.image_size, o.sketch_channels, o.stroke_count, o.stroke_curve,
                                 widths)
    else:
        sketch = Estimator(o.noise_dim, o.image_size, o.sketch_channels, o.width)
    return nn.ModuleDict({"photo": photo, "sketch": sketch})
