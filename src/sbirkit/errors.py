"""The error types sbirkit raises for bad input, in a module that imports nothing heavy.

Every one is a :class:`SbirkitError`: an ordinary mistake (a bad file, key, flag or value) whose
message is one line naming the file, field or key and what was expected. The command line turns
any of them into that line and exit code 2 (``--debug`` or ``SBIRKIT_DEBUG=1`` shows the
traceback); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SbirkitError(Exception):
    """Base of sbirkit's user-facing errors: the message is one line saying what was wrong."""


class DataError(SbirkitError, ValueError):
    """Bad input data. The message is one line naming the path, the field and what was expected."""


class EmptySketchError(DataError):
    """A sketch with no strokes or no ink."""


class ConfigError(SbirkitError, ValueError):
    """A bad preset or override; the message names the file or key and what was expected."""


class CheckpointError(SbirkitError, RuntimeError):
    """A checkpoint file is missing or unreadable; the message names the file."""


class UsageError(SbirkitError, ValueError):
    """A bad command-line flag or function argument (the message names it and what was expected)."""


class UnknownNameError(SbirkitError, KeyError):
    """A name that no registry holds (a dataset format, backbone, method, distance ...).

    A ``KeyError`` for compatibility, but ``str()`` is the plain message (a bare ``KeyError``
    shows its argument's repr, quotes included).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
