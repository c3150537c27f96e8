"""The reproducibility claim, on real runs of the pipeline in a fresh copy (stamps -> train ->
infer -> completeness under `dvc repro`): a forced rerun on the same machine gives every output
byte for byte; a rerun with another thread count (float reductions in another order, as on
another CPU) agrees within the intervals; and the check does fail for a run that is really
different (a finder that learned nothing: one step at a vanishing learning rate)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO, tiny_pipeline_copy

SCRIPT = REPO / "benchmarks" / "reproducibility_check.py"


def _check(ref, cand, tmp_path, name):
    out = tmp_path / f"{name}.json"
    r = subprocess.run([sys.executable, str(SCRIPT), str(ref), str(cand), "--json", str(out)], capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(out.read_text()), r.stdout


@pytest.mark.slow
def test_same_machine_byte_for_byte_other_threads_within_intervals_and_a_real_change_caught(tmp_path):
    work, env, p = tiny_pipeline_copy(tmp_path / "repo", 400, epochs=2, split_fractions={"train": 0.5, "val": 0.2, "test": 0.3})
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    one_thread = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}   # the thread counts stated, not inherited

    def repro(extra_env=None, force=True):
        r = subprocess.run(["dvc", "repro", *(["-f"] if force else []), "completeness@small_cnn"], cwd=work,
                           env={**env, **(extra_env or one_thread)}, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    def keep(name):
        dest = tmp_path / name
        for d in ("metrics", "plots"):
            shutil.copytree(work / d, dest / d)
        return dest

    repro()
    first = keep("first")
    repro()
    code, res, text = _check(first, work, tmp_path, "again")
    assert code == 0 and res["files_compared"] >= 10 and res["files_identical"] == res["files_compared"], text

    repro({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    code, res, text = _check(first, work, tmp_path, "threads")
    print(text)
    assert code == 0 and res["within_tolerance"], text

    # a finder that learned nothing: one step at a vanishing learning rate (one step at the usual rate
    # already separates the tiny survey's bright arcs about as well as sixteen)
    p["train"]["steps_per_epoch"] = 1
    p["train"]["epochs"] = 1
    p["train"]["lr"] = 1e-9
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    repro(force=False)
    code, res, text = _check(first, work, tmp_path, "untrained")
    assert code == 1 and not res["within_tolerance"], text
    assert any(not r["within"] for r in res["comparisons"])
