"""Stage `baseline`: metadata-only models on the cached stamp metadata (no pixels).

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/baseline/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.baseline import stage
from dhs.runner import Option, Stage

STAGE = Stage("baseline", stage.run, stage.__doc__, options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--metrics", "metrics_path", "metrics/baseline.json")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
