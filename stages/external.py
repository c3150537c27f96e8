"""Stage `external@{name}`: check a finder made elsewhere (finders.external: an ONNX or TorchScript
model, or a score table) against its input spec and pack it for the stages that score with it.

The stage is declared here and run by dhs.runner; its body is dhs.infer.packing.run_external and
what it checks is described in dhs/models/external.py."""

import sys
from pathlib import Path

# this checkout's dhs, not the one the environment installed (dvc exp run --temp and --queue run copies)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dhs.infer import packing
from dhs.runner import Option, Stage

STAGE = Stage("external", packing.run_external, packing.run_external.__doc__, per_arch=True, options=(
    Option("--models", "models_dir", "data/models"), Option("--metrics", "metrics_dir", "metrics/external")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
