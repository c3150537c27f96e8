"""Stage `infer@{arch}`: score every val and test stamp of the cache exactly once.

Writes data/scores/{arch}.parquet (task_id, split, label, logit, score and every scalar
metadata column, see dhs.evaluation.scores) and metrics/infer/{arch}.json (rows per split and
label, and the rows the stamps stage rejected before the cache, so every input row is accounted
for).
"""

import sys

from dhs.evaluation.scores import ScoresError
from dhs.finder.checkpoint import TrainingError
from dhs.finder.stage import run_infer
from dhs.runner import Option, Stage
from dhs.stamps.cache import CacheError

STAGE = Stage("infer", run_infer, __doc__, per_arch=True, errors=(CacheError, ScoresError, TrainingError), options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--models", "models_dir", "data/models"),
    Option("--scores", "scores_dir", "data/scores"), Option("--metrics", "metrics_dir", "metrics/infer")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
