"""Stage `cutouts`: fetch a FITS cutout of every selected known lens into data/cutouts, once.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/known_lenses/fetch.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.known_lenses import fetch
from dhs.runner import Option, Stage

STAGE = Stage("cutouts", fetch.run_cutouts, fetch.__doc__, options=(
    Option("--out", "cutout_dir", "data/cutouts"), Option("--metrics", "metrics_path", "metrics/cutouts.json"),
    Option("--no-progress", "progress", action="store_false")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
