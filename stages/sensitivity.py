"""Stage `sensitivity`: the Phase 4d proxy completeness for each theta_E/PSF threshold in params,
all and clean, with Wilson (and region-bootstrap) intervals, beside each trained arch's
model-based completeness at the operating FPRs (evaluation.fprs).

Writes metrics/sensitivity.json, plots/sensitivity/{var}.csv (DVC plots: one curve per proxy
threshold and per arch at completeness.plot_fpr) and plots/sensitivity/{var}.png.
"""

import sys

from dhs.completeness.counts import CompletenessError
from dhs.completeness.stage import run_sensitivity
from dhs.runner import Option, Stage

STAGE = Stage("sensitivity", run_sensitivity, __doc__, errors=(CompletenessError, ValueError), options=(
    Option("--scores", "scores_dir", "data/scores"), Option("--metrics", "metrics_path", "metrics/sensitivity.json"),
    Option("--plots", "plots_dir", "plots/sensitivity")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
