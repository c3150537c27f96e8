"""Stage `known_lenses@{arch}`: recall of real, catalogued lenses by the trained lens finder.

Reads the curated catalogue (known_lenses.catalog), the cutouts and manifest the `cutouts`
stage left in data/cutouts (no network here), the FPR thresholds of metrics/completeness/{arch}.json and
the calibrator data/calibration/{arch}/calibrator.json. Scores every usable cutout with the
trained model and its training normalisation (dhs.finder.inference.score_images), and reports recall
(k of n, Wilson 95%) at every completeness threshold (score > t) and at every calibrated
probability threshold (p > t), overall, by grade and by theta_E bin where theta_E is known.

Writes metrics/known_lenses/{arch}.json (status ok | partial | offline | no_cutouts, row
accounting, thresholds, recall), plots/known_lenses/{arch}.csv (one row per selected lens:
cutout status, logit, score, probability, pass per threshold) and
plots/known_lenses/{arch}_gallery.png (grz composites with scores; look at it: each stamp
should hold a lens).

Without any cutout the stage reports no recall at all (never one it did not measure), says so
loudly and exits 0, or fails when known_lenses.require is true.
"""

import sys

from dhs.known_lenses.catalog import CatalogError
from dhs.known_lenses.cutouts import CutoutError
from dhs.known_lenses.operating_points import OperatingPointError
from dhs.known_lenses.run_status import RequireError
from dhs.known_lenses.scoring import ScoringError
from dhs.known_lenses.stage import run_known_lenses
from dhs.runner import Option, Stage

STAGE = Stage("known_lenses", run_known_lenses, __doc__, per_arch=True,
              errors=(CatalogError, CutoutError, OperatingPointError, RequireError, ScoringError), options=(
    Option("--cutouts", "cutout_dir", "data/cutouts"), Option("--models", "models_dir", "data/models"),
    Option("--thresholds", "thresholds_path", None, "completeness metrics JSON (default metrics/completeness/{arch}.json)"),
    Option("--calibrator", "calibrator_path", None, "default data/calibration/{arch}/calibrator.json"),
    Option("--metrics", "metrics_dir", "metrics/known_lenses"), Option("--plots", "plots_dir", "plots/known_lenses")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
