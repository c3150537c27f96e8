"""Stage `stamps`: the stamp set staged into data/stamps, every row accounted for, and the training cache.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/stamps/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.contract.validate import DatasetInvalid
from dhs.runner import Option, Stage
from dhs.simulate.config import ConfigError
from dhs.stamps import stage
from dhs.imaging.cache import CacheError
from dhs.cutouts.client import CutoutError
from dhs.stamps.real_hosts import HostCatalogError
from dhs.stamps.staging import StagingError

STAGE = Stage("stamps", stage.run, stage.__doc__, errors=(ConfigError, DatasetInvalid, StagingError, stage.RejectionRateError, CacheError,
                                                           HostCatalogError, CutoutError), options=(
    Option("--out", "out_dir", "data/stamps"), Option("--metrics", "metrics_path", "metrics/stamps.json"), Option("--plots", "plots_dir", "plots/stamps"),
    Option("--cache", "cache_dir", "data/cache")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
