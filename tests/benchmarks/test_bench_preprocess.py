"""benchmarks/bench_preprocess.py runs on a small batch and prints every variant and every part of
the elliptical removal (what it measures is speed, which tests never assert)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_bench_preprocess_prints_each_variant_and_each_part_of_the_removal():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_preprocess.py"), "--batch", "16", "--repeats", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout
    for name in ("annulus only", "circle about host (peer)", "ellipse + residual noise (default)", "host centre",
                 "shape moments, all weights", "profile in elliptical annuli", "whole removal"):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(name)), None)
        assert line is not None, (name, out)
        words = line.split()
        unit = "stamps/s" if "stamps/s" in words else "us/stamp"
        assert float(words[words.index(unit) - 1]) > 0, line
    assert "1.00x the circular subtraction" in out and "1.00 of the whole removal" in out
