"""Built-in dataset loaders; importing this package registers them."""

from . import folder, qmul, qmul_v2, quickdraw, quickdraw_extended, sketchrnn, sketchy, tuberlin  # noqa: F401
