"""Stage `completeness@{arch}`: the model's selection function from its score table, in Spark.

Thresholds at each FPR of evaluation.fprs on the evaluation split's controls (plus optional
fixed scores), completeness per bin of every binning variable and of the theta_E x PSF surface,
for all and clean stamps, with Wilson and region-bootstrap intervals.

Writes metrics/completeness/{arch}.json (headline numbers), plots/completeness/{arch}/{var}.csv
(one per variable, declared as DVC plots; rows with primary=1 are the plotted threshold),
plots/completeness/{arch}/{var}.png, the surface CSV/PNG, and plots/roc/{arch}.csv.
"""

import sys

from dhs.completeness.counts import CompletenessError
from dhs.completeness.stage import run
from dhs.evaluation.scores import ScoresError
from dhs.runner import Option, Stage

STAGE = Stage("completeness", run, __doc__, per_arch=True, errors=(CompletenessError, ScoresError, ValueError), options=(
    Option("--scores", "scores_dir", "data/scores"), Option("--metrics", "metrics_dir", "metrics/completeness"),
    Option("--plots", "plots_dir", "plots/completeness"), Option("--roc", "roc_dir", None, "default: roc/ beside --plots (plots/roc)")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
