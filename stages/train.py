"""Stage `train@{arch}`: train one architecture on the cached train split, select on val.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/finder/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.finder import stage
from dhs.runner import Option, Stage

STAGE = Stage("train", stage.run_train, stage.__doc__, per_arch=True, status=lambda code, _: code, options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--models", "models_dir", "data/models"),
    Option("--metrics", "metrics_dir", "metrics/train"), Option("--live", "live_dir", "dvclive"),
    Option("--node-rank", "node_rank", "0", "this machine's rank in a multi-node run (distributed.nnodes > 1); node 0 runs dvc repro")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
