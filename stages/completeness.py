"""Stage `completeness@{arch}`: the model's selection function from its score table, in Spark.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/completeness/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.completeness import stage
from dhs.runner import Option, Stage

STAGE = Stage("completeness", stage.run, stage.__doc__, per_arch=True, options=(
    Option("--scores", "scores_dir", "data/scores"), Option("--metrics", "metrics_dir", "metrics/completeness"),
    Option("--plots", "plots_dir", "plots/completeness"), Option("--roc", "roc_dir", None, "default: roc/ beside --plots (plots/roc)")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
