"""Stage `stamps`: stage the Phase 4c stamp set into data/stamps, account for every row, and
write the decoded training cache into data/cache.

stamps.source:
  synthetic          simulate a DR10-like survey in the contract (the embedded default)
  /a/local/dir       copy a Hive-partitioned Phase 4c dataset from disk
  s3://bucket/prefix copy it from S3 (credentials from the AWS chain; endpoint from params)
"""

import sys

from dhs.contract.validate import DatasetInvalid
from dhs.runner import Option, Stage
from dhs.simulate.config import ConfigError
from dhs.stamps.cache import CacheError
from dhs.stamps.stage import RejectionRateError, run
from dhs.stamps.staging import StagingError

STAGE = Stage("stamps", run, __doc__, errors=(ConfigError, DatasetInvalid, StagingError, RejectionRateError, CacheError), options=(
    Option("--out", "out_dir", "data/stamps"), Option("--metrics", "metrics_path", "metrics/stamps.json"),
    Option("--cache", "cache_dir", "data/cache")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
