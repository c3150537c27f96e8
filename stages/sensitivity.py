"""Stage `sensitivity`: the Phase 4d proxy beside each arch's model-based completeness.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/completeness/sensitivity.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.completeness import sensitivity
from dhs.runner import Option, Stage

STAGE = Stage("sensitivity", sensitivity.run_sensitivity, sensitivity.__doc__, options=(
    Option("--scores", "scores_dir", "data/scores"), Option("--metrics", "metrics_path", "metrics/sensitivity.json"),
    Option("--plots", "plots_dir", "plots/sensitivity")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
