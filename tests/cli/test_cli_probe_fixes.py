"""Command-line findings of issue 21's probe: `search --grid` into a folder that does not exist
is a one-line error that creates nothing."""

from __future__ import annotations

from cli_helpers import invoke, one_line_error


def test_search_grid_into_a_missing_folder_creates_nothing(cli_index, cli_run, tmp_path):
    _, _, sketches = cli_run
    sketch = sorted(sketches.rglob("*.png"))[0]
    target = tmp_path / "missing" / "deeper" / "x.png"
    one_line_error(invoke("search", "--index", cli_index, "--sketch", sketch, "--grid", target),
                   f"--grid {target}: expected a file in an existing folder")
    assert not (tmp_path / "missing").exists()
    ok = invoke("search", "--index", cli_index, "--sketch", sketch, "--grid", tmp_path / "x.png")
    assert ok.exit_code == 0 and (tmp_path / "x.png").is_file()
