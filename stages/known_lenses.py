"""Stage `known_lenses@{arch}`: recall of real, catalogued lenses by the trained lens finder.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/known_lenses/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.known_lenses import stage
from dhs.runner import Option, Stage

STAGE = Stage("known_lenses", stage.run_known_lenses, stage.__doc__, per_arch=True, options=(
    Option("--cutouts", "cutout_dir", "data/cutouts"), Option("--models", "models_dir", "data/models"),
    Option("--thresholds", "thresholds_path", None, "completeness metrics JSON (default metrics/completeness/{arch}.json)"),
    Option("--calibrator", "calibrator_path", None, "default data/calibration/{arch}/calibrator.json"),
    Option("--metrics", "metrics_dir", "metrics/known_lenses"), Option("--plots", "plots_dir", "plots/known_lenses")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
