"""The whole pipeline as a DVC experiment in a fresh copy, at 96 px: `dvc exp run -S`, then
`dvc exp show` lists it with its metrics, the ablation table is generated from it, and
`dvc plots diff` draws the completeness curves of both revisions (64 px and 96 px)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.conftest import copy_repo


@pytest.mark.slow
def test_dvc_exp_run_whole_pipeline_and_tables(tmp_path):
    work, env = copy_repo(tmp_path / "repo", n_stamps=240)
    p = yaml.safe_load((work / "params.yaml").read_text())
    # the uniform population's bright arcs: a few steps give scores with information in them
    # (the calibration stage refuses to fit a temperature to uninformative ones)
    p["simulate"].update(n_regions=8, split_fractions={"train": 0.5, "val": 0.25, "test": 0.25}, population="uniform")
    p["train"].update(epochs=1, steps_per_epoch=8, batch_size=32, warmup_steps=1, min_arc_snr=0.0, balance_classes=False)
    p["completeness"].update(n_bootstrap=20, spark={"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"})
    p["known_lenses"]["max_lenses"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run = lambda *a: subprocess.run(a, cwd=work, env=env, capture_output=True, text=True)  # noqa: E731
    for cmd in (["git", "add", "params.yaml"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"]):
        assert run(*cmd).returncode == 0

    # the seed's 64 vs 96 px comparison, end to end at 96 px, as an experiment with a changed lr too
    res = run("dvc", "exp", "run", "-n", "px96", "-S", "simulate.stamp_size=96", "-S", "known_lenses.size_px=96", "-S", "train.lr=0.0005")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    shown = run("dvc", "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    exps = [rev for entry in json.loads(shown.stdout) for e in (entry.get("experiments") or []) for rev in e["revs"]]
    named = [e for e in exps if e.get("name") == "px96"]
    assert named, [e.get("name") for e in exps]
    data = named[0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.0005
    assert data["metrics"]["metrics/train/small_cnn.json"]["data"]["stamp_size"] == 96
    comp = data["metrics"]["metrics/completeness/small_cnn.json"]["data"]
    assert 0.0 <= comp["auroc"] <= 1.0 and comp["threshold_by_name"]["fpr_0.1"]["n_controls"] > 0
    assert "metrics/calibration/small_cnn.json" in data["metrics"] and "metrics/gates/small_cnn.json" in data["metrics"]

    table = run("python", "-m", "dhs.experiments", "--out", "tables")
    assert table.returncode == 0, table.stderr
    md = (work / "tables" / "ablations.md").read_text()
    assert "px96" in md and "simulate.stamp_size=96" in md and "train.lr=0.0005" in md

    diff = run("dvc", "plots", "diff", "HEAD", "px96", "--targets", "plots/completeness/small_cnn/theta_e_arcsec.csv", "-o", "pd")
    assert diff.returncode == 0, diff.stderr
    html = (work / "pd" / "index.html").read_text()
    assert "wilson_lo" in html and "px96" in html
