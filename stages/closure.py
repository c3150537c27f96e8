"""Stage `closure`: the closure test of the measuring chain (an analytic finder with a known
selection function through completeness and selection).

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/selection/closure.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.runner import Option, Stage
from dhs.selection import closure

STAGE = Stage("closure", closure.run, closure.__doc__, options=(
    Option("--metrics", "metrics_path", "metrics/closure.json"), Option("--plots", "plots_dir", "plots/closure")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
