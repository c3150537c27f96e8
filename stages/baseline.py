"""Stage `baseline`: metadata-only models on the cached stamp metadata (no pixels).

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/baseline/stage.py."""

import sys

from dhs.baseline import stage
from dhs.baseline.models import BaselineError
from dhs.runner import Option, Stage
from dhs.stamps.cache import CacheError

STAGE = Stage("baseline", stage.run, stage.__doc__, errors=(BaselineError, CacheError), options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--metrics", "metrics_path", "metrics/baseline.json")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
