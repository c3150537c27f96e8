"""Stage `selection@{arch}`: the finder's selection function as a validated model and a file.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/selection/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.runner import Option, Stage
from dhs.selection import stage

STAGE = Stage("selection", stage.run, stage.__doc__, per_arch=True, options=(
    Option("--scores", "scores_dir", "data/scores"), Option("--completeness", "completeness_dir", "metrics/completeness"),
    Option("--models", "models_dir", "data/models"), Option("--out", "out_dir", "data/selection"),
    Option("--metrics", "metrics_dir", "metrics/selection"), Option("--plots", "plots_dir", "plots/selection")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
