"""Stage `train@{arch}`: train one architecture on the cached train split, select on val.

Runs single-process, or re-launches itself under torchrun when train.nproc > 1 (NCCL on GPU,
gloo on CPU); rank 0 writes checkpoints, dvclive curves and metrics.
"""

import sys

from dhs.finder.checkpoint import TrainingError
from dhs.finder.stage import run_train
from dhs.runner import Option, Stage
from dhs.stamps.cache import CacheError

STAGE = Stage("train", run_train, __doc__, per_arch=True, errors=(TrainingError, CacheError), status=lambda code, _: code, options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--models", "models_dir", "data/models"),
    Option("--metrics", "metrics_dir", "metrics/train"), Option("--live", "live_dir", "dvclive")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
