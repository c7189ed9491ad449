"""What every command of the ``sbirkit`` command line shares: the application and its groups' class,
the one place for errors, flag checks, ``main``.

Errors: every :class:`~sbirkit.errors.SbirkitError` (and the few library exceptions that mean an
ordinary mistake, see :func:`_ordinary_message`) is printed as one ``error: ...`` line on
stderr with exit code 2, in one place (:class:`_App`); ``--debug`` or ``SBIRKIT_DEBUG=1``
shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn, Optional

import typer
from typer.core import TyperGroup, TyperOption

from ..errors import SbirkitError, UsageError

_PACKAGE = Path(__file__).resolve().parents[1]  # sbirkit/


def _names(kind: str) -> list[str]:
    """Registered names for the help text; an import problem shows up as '(unavailable)'."""
    try:
        if kind == "datasets":
            from ..data import list_datasets

            return list_datasets()
        if kind == "backbones":
            from ..models import list_backbones

            return list_backbones()
        if kind == "methods":
            from ..methods import list_methods

            return list_methods()
        if kind == "presets":
            from ..engine.config import list_presets

            return list_presets()
        if kind == "splits":
            from ..data.splits import list_manifests

            return list_manifests()
    except Exception as exc:  # pragma: no cover - only when a module is broken
        return [f"(unavailable: {exc})"]
    raise KeyError(kind)


def _help() -> str:
    backbones = [b for b in _names("backbones") if "/" not in b] + ["timm/<name>", "tv/<name>"]
    return (
        "sbirkit: sketch-based image retrieval. Train, evaluate, index and search.\n\n"
        f"Datasets: {', '.join(_names('datasets'))}\n\n"
        f"Backbones: {', '.join(backbones)}\n\n"
        "Run 'sbirkit list' for methods, presets and zero-shot split manifests. "
        "Errors are one line (exit code 2); --debug shows the traceback."
    )


# ---- one place for errors ----------------------------------------------------------------------
def _raised_by_sbirkit(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is sbirkit's own code (a check of its
    own), not a third-party library's."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):  # pragma: no cover - odd frame file names
        return False


def _ordinary_message(exc: BaseException) -> str | None:
    """The one-line message of an ordinary mistake; None for a bug (which keeps its traceback).

    Ordinary: any :class:`SbirkitError`; an ``OSError`` from the system (a missing or unreadable
    file, a full disk: ``errno`` is set); and a ``ValueError`` or a ``KeyError`` carrying a
    sentence that sbirkit's own code raised (argument checks, "unknown backbone ..."). A
    ``ValueError``/``KeyError`` raised inside numpy, torch or another library, or a bare
    ``KeyError('x')`` from a dict lookup, is a bug.
    """
    if isinstance(exc, SbirkitError):
        message = str(exc)
        if isinstance(exc, KeyError) and type(exc).__str__ is KeyError.__str__ and exc.args:
            message = str(exc.args[0])  # a KeyError's str() is its argument's repr
    elif isinstance(exc, OSError) and exc.errno is not None:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        message = f"{where}: {exc.strerror}" if exc.filename is not None else str(exc)
    elif isinstance(exc, KeyError):
        if not (_raised_by_sbirkit(exc) and exc.args and isinstance(exc.args[0], str) and " " in exc.args[0]):
            return None
        message = exc.args[0]  # unwrapped: str(KeyError) would add quotes around it
    elif isinstance(exc, ValueError) and _raised_by_sbirkit(exc):
        message = str(exc)
    else:
        return None
    return " ".join(line.strip() for line in message.splitlines() if line.strip()) or type(exc).__name__


def _debug_wanted(ctx: typer.Context) -> bool:
    if ctx.params.get("debug"):
        return True
    return os.environ.get("SBIRKIT_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def _hide_flag_types(command, ctx: typer.Context) -> None:
    """Typer 0.29 prints ``<bool>`` beside every flag in ``--help``; a flag takes no value, so
    give flags (and the help option) an empty metavar, which the help renderer shows as nothing."""
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class _Group(TyperGroup):
    """Every command group of the CLI: flags show no ``<bool>`` type in ``--help``."""

    def get_command(self, ctx: typer.Context, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _hide_flag_types(command, ctx)
        return command

    def format_help(self, ctx: typer.Context, formatter) -> None:
        _hide_flag_types(self, ctx)
        super().format_help(ctx, formatter)


class _App(_Group):
    """The top-level group: turns an ordinary mistake raised by any command into one line."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exit codes, usage errors: typer's own
            raise
        except Exception as exc:
            message = _ordinary_message(exc)
            if message is None or _debug_wanted(ctx):
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None


app = typer.Typer(help=_help(), no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  cls=_App)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", envvar="SBIRKIT_DEBUG", show_envvar=False,
                               help="Show the full traceback of an error instead of its one-line "
                               "message (or set SBIRKIT_DEBUG=1)."),
    threads: Optional[int] = typer.Option(None, "--threads", envvar="SBIRKIT_THREADS", show_envvar=False,
                                          help="torch (and FAISS) threads (or set SBIRKIT_THREADS). Default: "
                                          "OMP_NUM_THREADS if set, else the cores other work leaves free."),
) -> None:
    # --debug is read by _App.invoke; the thread count is set before any command runs
    from . import threads as _threads

    _threads.source = None  # this invocation's choice (app may be called again in one process)
    if threads is not None:
        _positive("--threads", threads)
        _threads.use_threads(threads)
    elif _console_script:
        _threads.choose_threads_for_free_cores()


def _fail(message: str) -> NoReturn:
    """Stop the command with a one-line ``error: message`` and exit code 2 (via :class:`_App`)."""
    raise UsageError(message)


def _positive(flag: str, value: int) -> None:
    if value < 1:
        _fail(f"{flag}: expected a positive integer, got {value}")


def _one_of(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(f"{flag}: expected one of {', '.join(choices)}, got {value!r}")


def _parse_options(options: list[str] | None) -> dict:
    """``key=value`` pairs with YAML-typed values (``max_per_class=20`` -> int, ``1e-3`` -> float)."""
    from ..engine.config import load_yaml

    out = {}
    for item in options or []:
        if "=" not in item:
            _fail(f"option {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = load_yaml(value)
    return out



def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one ``warning: ...`` line on stderr (Python's default adds the source line)."""
    import sys

    text = " ".join(str(message).split())
    print(f"warning: {text}", file=file if file is not None else sys.stderr)


#: set by :func:`main`: only the console script chooses a thread count from the load
#: (:mod:`.threads`); ``app`` called in-process (tests, notebooks) leaves the caller's alone
_console_script = False


def main() -> None:  # console-script entry point
    import warnings

    global _console_script
    _console_script = True
    warnings.showwarning = _one_line_warning
    app()
