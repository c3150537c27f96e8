"""Stage `gates@{arch}`: shortcut and leakage gates for one trained model.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/gates/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.gates import stage
from dhs.runner import Option, Stage

STAGE = Stage("gates", stage.run, stage.__doc__, per_arch=True, status=stage.status, options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--models", "models_dir", "data/models"),
    Option("--baseline", "baseline_metrics", "metrics/baseline.json"), Option("--metrics", "metrics_dir", "metrics/gates"),
    Option("--plots", "plots_dir", "plots/gates"), Option("--completeness", "completeness_dir", "metrics/completeness"),
    Option("--memo", "memo_dir", "data/gates", "scores of the last run kept for the next (dhs.gates.memo)")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
