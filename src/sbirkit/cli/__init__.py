"""The ``sbirkit`` command line: parse arguments, then call the library.

One module per command group (:mod:`.data`: ``list``, ``data``; :mod:`.runs`: ``train``, ``eval``,
``adapt``; :mod:`.embed`; :mod:`.index`; :mod:`.search`; :mod:`.serve`: ``serve``, ``demo``;
:mod:`.dfl`), each registering its commands on the one application in :mod:`.common`, which also
holds the one place for errors (every :class:`~sbirkit.errors.SbirkitError` is one ``error: ...``
line, exit code 2) and ``main``, the console script. The modules are imported here in the order
the commands are listed in ``--help``.
"""

from __future__ import annotations

# isort: off
from .common import _ordinary_message, app, main  # noqa: F401  (_ordinary_message: read by tests)
from . import data, runs, embed, index, search, serve, dfl  # noqa: F401  (register their commands)
# isort: on

__all__ = ["app", "main"]
