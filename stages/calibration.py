"""Stage `calibration@{arch}`: are the scores probabilities, and what do they mean in the survey?

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/calibration/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.calibration import stage
from dhs.runner import Option, Stage

STAGE = Stage("calibration", stage.run, stage.__doc__, per_arch=True, options=(
    Option("--scores", "scores_dir", "data/scores"), Option("--models", "models_dir", "data/models"),
    Option("--calibration", "calibration_dir", "data/calibration"), Option("--metrics", "metrics_dir", "metrics/calibration"),
    Option("--plots", "plots_dir", "plots/calibration")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
