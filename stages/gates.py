"""Stage `gates@{arch}`: shortcut and leakage gates for one trained model.

Runs every gate of ``dhs.gates`` on the cache with the model's best checkpoint and writes
metrics/gates/{arch}.json (status PASS / FAIL / SKIP, value and threshold per gate, and
``all_passed``) and plots/gates/{arch}.png, and prints a PASS/FAIL table. The ring probe renders
with the simulator's own configuration (``simulate`` in params).

Exit status: 0 when the gates ran (whatever they found) unless ``gates.enforce`` is true and a
gate is not PASS, then 1; 2 when the stage could not run (bad params, missing cache or model).
"""

import sys

from dhs.finder.checkpoint import TrainingError
from dhs.gates.stage import run, status
from dhs.runner import Option, Stage
from dhs.simulate.config import ConfigError
from dhs.stamps.cache import CacheError

STAGE = Stage("gates", run, __doc__, per_arch=True, errors=(CacheError, TrainingError, ConfigError), status=status, options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--models", "models_dir", "data/models"),
    Option("--baseline", "baseline_metrics", "metrics/baseline.json"), Option("--metrics", "metrics_dir", "metrics/gates"),
    Option("--plots", "plots_dir", "plots/gates")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
