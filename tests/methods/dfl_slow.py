"""``python -c 'import dfl_slow; dfl_slow.main()' train ...``: the sbirkit command line with every
CrossX-DFL training step slowed by ``DFL_STEP_SLEEP`` seconds (nothing random is touched), so a
test can kill a run in the middle."""

from __future__ import annotations

import os
import time


def main() -> None:
    from sbirkit.cli import main as cli_main
    from sbirkit.methods import crossx_dfl

    delay = float(os.environ.get("DFL_STEP_SLEEP", "0") or 0)
    original = crossx_dfl.CrossXDFL.training_step

    def slow(self, batch, ctx):
        time.sleep(delay)
        return original(self, batch, ctx)

    crossx_dfl.CrossXDFL.training_step = slow
    cli_main()
