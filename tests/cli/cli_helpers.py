"""Helpers for the command-line tests: run a command, assert success, assert a one-line error.

Their own module (not conftest.py): test modules import them by name, and a second conftest.py
elsewhere in tests/ (tests/serve) would shadow a `from conftest import ...` when both folders are
collected in one pytest call.
"""

from __future__ import annotations

from typer.testing import CliRunner

from sbirkit.cli import app

runner = CliRunner()


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def ok(*args, env: dict | None = None):
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def one_line_error(result, *needles: str) -> str:
    """Assert exit code 2 and exactly one ``error: ...`` line on stderr (no traceback); return it."""
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]
