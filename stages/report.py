"""Stage `report`: one self-contained HTML page with every table and figure of the run.

The stage is declared here and run by dhs.runner; its body, and the description ``--help``
prints, are in dhs/report/stage.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.report import stage
from dhs.runner import Option, Stage

STAGE = Stage("report", stage.run, stage.__doc__, options=(
    Option("--root", "root", ".", "directory the metrics/, plots/, data/ and dvclive/ paths are relative to"),
    Option("--out", "out", "plots/report/index.html"),
    Option("--cache", "cache_dir", None, "the stamp cache (default: <root>/data/cache)"),
    Option("--summary", "summary", "summary.json", "the headline numbers per finder (the DVC metrics file)")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
