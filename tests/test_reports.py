"""A command's report is what the user sees, also through a pipe: ``python -m minidiff schedule ... | head`` ends
quietly when the reader stops early, and still writes its ``--plot``."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_schedule_into_a_reader_that_closes_early_writes_its_plot_and_no_error(tmp_path):
    plot = tmp_path / "sigmas.png"
    command = [sys.executable, "-m", "minidiff", "schedule", "--steps", "50", "--plot", str(plot)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line, as `| head -0` is (and `| head -1` soon after)
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0 and stderr == ""
    assert plot.stat().st_size > 0
