"""The whole pipeline as a DVC experiment in a fresh copy, at 96 px: `dvc exp run -S`, then
`dvc exp show` lists it with its headline metrics, the ablation table is generated from it,
`dvc plots diff` draws the completeness curves of both revisions (64 px and 96 px), and the
experiment is shared: pushed to a local DVC remote added after it ran, pulled into a second
clone, applied there, and `dvc repro` in that clone recomputes nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import yaml

from tests.conftest import tiny_pipeline_copy


@pytest.mark.slow
def test_dvc_exp_run_whole_pipeline_and_tables(tmp_path):
    work, env, p = tiny_pipeline_copy(tmp_path / "repo", 240)
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
    # DVC shows one file, summary.json: a handful of numbers per finder; the detail files are outputs,
    # read at the experiment's commit
    metrics = data["metrics"]
    assert sorted(metrics) == ["summary.json"], sorted(metrics)
    exp_rev = named[0]["rev"]
    train_detail = json.loads(run("git", "show", f"{exp_rev}:metrics/train/small_cnn.json").stdout)
    assert train_detail["stamp_size"] == 96
    summary = metrics["summary.json"]["data"]
    assert set(summary) == {"small_cnn", "data"} and summary["data"]["source"] == "synthetic"
    s = summary["small_cnn"]
    assert 0.0 <= s["auroc"] <= 1.0 and s["gates"] in ("PASS", "FAIL") and s["calibration"] in ("ok", "degenerate")
    assert s["fpr"] == 0.01 and s["all_lo"] <= s["all"] <= s["all_hi"] and s["discoverable_lo"] <= s["discoverable"] <= s["discoverable_hi"]
    n_keys = len(json.dumps(summary).split(","))
    assert n_keys < 20, n_keys   # a line a person can read at the terminal, not the ~660 keys of the detail files
    shown_table = run("dvc", "metrics", "show")
    assert shown_table.returncode == 0 and max(map(len, shown_table.stdout.splitlines())) < 600, shown_table.stdout[:2000]

    table = run("python", "-m", "dhs.experiments", "--out", "tables")
    assert table.returncode == 0, table.stderr
    md = (work / "tables" / "ablations.md").read_text()
    assert "px96" in md and "simulate.stamp_size=96" in md and "train.lr=0.0005" in md
    runs_table, numbers = md.split("\n\n", 1)
    assert "simulate.stamp_size=96" in runs_table and "simulate.stamp_size=96" not in numbers   # said once per run, not per row
    assert "| low count |" in md and "| gates |" in md

    diff = run("dvc", "plots", "diff", "HEAD", "px96", "--targets", "plots/completeness/small_cnn/theta_e_arcsec.csv", "-o", "pd")
    assert diff.returncode == 0, diff.stderr
    html = (work / "pd" / "index.html").read_text()
    assert "wilson_lo" in html and "px96" in html

    # sharing: a git remote and a DVC remote added after the experiment ran. The DVC remote goes
    # in config.local, which every revision sees (a remote committed now is absent from the
    # experiment's own commit, and `dvc exp push` would upload nothing)
    remote, store = tmp_path / "origin.git", tmp_path / "store"
    for cmd in (["git", "init", "-q", "--bare", str(remote)], ["git", "remote", "add", "origin", str(remote)],
                ["git", "push", "-q", "origin", "HEAD:refs/heads/main"],
                ["dvc", "remote", "add", "--local", "-d", "shared", str(store)], ["dvc", "exp", "push", "origin", "px96"]):
        res = run(*cmd)
        assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-2000:])
    assert any(p.is_file() for p in store.rglob("*")), "dvc exp push uploaded no data"

    clone = tmp_path / "colleague"
    res = subprocess.run(["git", "clone", "-q", "-b", "main", str(remote), str(clone)], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    run2 = lambda *a: subprocess.run(a, cwd=clone, env=env, capture_output=True, text=True)  # noqa: E731
    for cmd in (["dvc", "remote", "add", "--local", "-d", "shared", str(store)], ["dvc", "exp", "pull", "origin", "px96"],
                ["dvc", "exp", "apply", "px96"]):
        res = run2(*cmd)
        assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-2000:])
    assert json.loads((clone / "metrics/train/small_cnn.json").read_text())["stamp_size"] == 96
    assert (clone / "data/models/small_cnn/checkpoint_best.pt").is_file()
    applied = snapshot(clone)
    res = run2("dvc", "repro")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ran = [line for line in res.stdout.splitlines() if line.startswith("Running stage")]
    # cutouts is always_changed (it asks the service for what is missing); its output hash is
    # unchanged, so nothing downstream reruns
    assert ran == ["Running stage 'cutouts':"], res.stdout[-3000:]
    assert snapshot(clone) == applied


def snapshot(root):
    """sha256 of dvc.lock and every metrics file: what a rerun that recomputed something would change."""
    files = [root / "dvc.lock", *sorted((root / "metrics").rglob("*.json"))]
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
