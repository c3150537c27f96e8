"""A stage script runs the dhs of its own checkout, not the one installed in the environment:
`dvc exp run --temp` and queued experiments run in copies of the repository, and a copy whose
code differs must run that code (and torchrun re-launches the script by its path)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

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
