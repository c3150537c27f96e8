"""Stage `calibration@{arch}`: are the scores probabilities, and what do they mean in the survey?

Reads data/scores/{arch}.parquet. Fits temperature scaling (always) and, with
``calibration.method: isotonic``, an isotonic map on the fit split (val), and judges both on the
eval split (test), which must be a different split. Writes, atomically:

- data/calibration/{arch}/calibrator.json  the fitted map, its temperature, pi_train (injection
  fraction of the fit split) and the checkpoint it belongs to; ``dhs.calibration.reliability.load_calibrator``
  gives an object with ``.probabilities(logits)`` for later stages
- metrics/calibration/{arch}.json  ECE and MCE (per binning strategy), Brier score and log loss on
  the eval split before and after calibration; rows per split and label; the prevalence section:
  the logit offset to survey prevalence, posteriors there, and purity at each FPR threshold
- plots/calibration/{arch}.csv  reliability curves: one row per non-empty bin, strategy and
  stage (before | after)
- plots/calibration/{arch}.png  reliability diagram with the histogram of scores beneath

params.yaml ``calibration``: method (temperature | isotonic), n_bins, strategies
(uniform, quantile), fit_split, eval_split, survey_prevalence, fprs, min_expected_controls.
"""

import sys

from dhs.calibration.reliability import CalibrationError
from dhs.calibration.stage import run
from dhs.evaluation.scores import ScoresError
from dhs.evaluation.thresholds import ThresholdError
from dhs.runner import Option, Stage

STAGE = Stage("calibration", run, __doc__, per_arch=True, errors=(ScoresError, CalibrationError, ThresholdError), options=(
    Option("--scores", "scores_dir", "data/scores"), Option("--models", "models_dir", "data/models"),
    Option("--calibration", "calibration_dir", "data/calibration"), Option("--metrics", "metrics_dir", "metrics/calibration"),
    Option("--plots", "plots_dir", "plots/calibration")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
