"""Built-in dataset loaders; importing this package registers them."""

from . import folder, qmul, quickdraw, sketchrnn, sketchy, svg  # noqa: F401
