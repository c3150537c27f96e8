"""Stage `infer@{arch}`: score every val and test stamp of the cache exactly once.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/infer/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.infer import stage
from dhs.runner import Option, Stage

STAGE = Stage("infer", stage.run_infer, stage.__doc__, per_arch=True, options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--models", "models_dir", "data/models"),
    Option("--scores", "scores_dir", "data/scores"), Option("--metrics", "metrics_dir", "metrics/infer")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
