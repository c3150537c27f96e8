"""Stage `report`: one self-contained HTML page (plots/report/index.html) with every table and
figure of the run: headline comparison of the archs, dataset accounting, galleries, training
curves, ROC and TPR at fixed FPR, completeness (theta_E, theta_E/PSF, the theta_E x PSF surface),
sensitivity, calibration, gates, known-lens recovery, and the params and data version.

Every number is read from metrics/ and plots/ and shown with the file it came from. Inputs other
stages have not produced yet are reported as "not run: <stage> (<path> not found)" in their
section; the page is always written (atomically).
"""

import sys

from dhs.report.stage import run
from dhs.runner import Option, Stage

STAGE = Stage("report", run, __doc__, options=(
    Option("--root", "root", ".", "directory the metrics/, plots/, data/ and dvclive/ paths are relative to"),
    Option("--out", "out", "plots/report/index.html"),
    Option("--cache", "cache_dir", None, "the stamp cache (default: <root>/data/cache)")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
