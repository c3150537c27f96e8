"""benchmarks/gpu_check.py, the one script behind the README's GPU figures, run on the CPU with
tiny sizes: it runs its steps, keeps their logs, reads every figure into one table, and says so
(exit 1) when a step fails."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_reads_each_figure_into_one_table_and_fails_loudly(tmp_path):
    # the training-loop step (the quickest with a figure) and the gpu tests
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--only", "train", "tests",
                        "--budget-s", "3000", "--out", str(tmp_path / "ok")], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    table = r.stdout
    assert "gpu_check on no GPU" in table
    m = re.search(r"^train\s+loop small_cnn, images/s\s+([\d,]+)$", table, re.M)
    assert m and int(m.group(1).replace(",", "")) > 0, table
    # without a GPU every gpu test is collected and skipped, none fails
    assert re.search(r"^tests\s+gpu tests\s+\d+ skipped", table, re.M), table
    assert "device cpu (" in (tmp_path / "ok" / "train.log").read_text()
    # a step that fails: its status in the table and exit status 1
    bad = subprocess.run([sys.executable, str(SCRIPT), "--device", "no-such-device", "--quick", "--only", "fresh",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    assert re.search(r"^fresh\s+status, wall time\s+exit [1-9]", bad.stdout, re.M), bad.stdout
