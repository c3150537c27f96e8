"""Every stage script, run for real:

- it runs the dhs of its own checkout, not the one installed in the environment: `dvc exp run
  --temp` and queued experiments run in copies of the repository, and a copy whose code differs
  must run that code (and torchrun re-launches the script by its path);
- it refuses a bad value anywhere in the params file before any work: one line naming the file
  and the key, exit status ``EXIT_REFUSED`` (docs/errors.md), nothing written."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from dhs.runner import EXIT_REFUSED
from tests.conftest import REPO

SCRIPTS = sorted(p.name for p in (REPO / "stages").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_copy_of_the_repository_runs_its_own_dhs(script, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "stages", copy / "stages")
    shutil.copytree(REPO / "dhs", copy / "dhs", ignore=shutil.ignore_patterns("__pycache__"))
    runner = copy / "dhs" / "runner.py"
    # the copy's runner says where it is before parsing arguments
    runner.write_text(runner.read_text().replace("        args = self.parse(argv)\n",
                                                 "        print('RUNNER FROM', __file__)\n        args = self.parse(argv)\n", 1))
    r = subprocess.run([sys.executable, str(copy / "stages" / script), "--help"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"RUNNER FROM {copy / 'dhs' / 'runner.py'}" in r.stdout, r.stdout[:500]


def per_arch(script: str) -> bool:
    return importlib.import_module(f"stages.{script[:-3]}").STAGE.per_arch


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bad_params_value_anywhere_is_refused_before_any_work(script, tmp_path):
    """train.epochs is read by the train stage only; every stage checks the whole file first."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["train"]["epochs"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    arch = ["--arch", "small_cnn"] if per_arch(script) else []
    r = subprocess.run([sys.executable, str(REPO / "stages" / script), *arch, "--params", "params.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "DHS_HEARTBEAT_S": "0"})
    label = f"{script[:-3]} small_cnn" if arch else script[:-3]
    assert r.returncode == EXIT_REFUSED, r.stderr[-2000:]
    assert r.stderr.splitlines() == [f"{label}: FAILED: params.yaml: train.epochs must be an integer >= 1, got -1"], r.stderr[-2000:]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["params.yaml"]   # nothing written (the outputs default to cwd)
