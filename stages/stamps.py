"""Stage `stamps`: the stamp set staged into data/stamps, every row accounted for, and the training cache.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/stamps/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.runner import Option, Stage
from dhs.stamps import stage

STAGE = Stage("stamps", stage.run, stage.__doc__, options=(
    Option("--out", "out_dir", "data/stamps"), Option("--metrics", "metrics_path", "metrics/stamps.json"), Option("--plots", "plots_dir", "plots/stamps"),
    Option("--cache", "cache_dir", "data/cache")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
