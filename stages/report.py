"""Stage `report`: one self-contained HTML page with every table and figure of the run.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/report/stage.py."""

import sys

from dhs.report import stage
from dhs.runner import Option, Stage

STAGE = Stage("report", stage.run, stage.__doc__, options=(
    Option("--root", "root", ".", "directory the metrics/, plots/, data/ and dvclive/ paths are relative to"),
    Option("--out", "out", "plots/report/index.html"),
    Option("--cache", "cache_dir", None, "the stamp cache (default: <root>/data/cache)")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
