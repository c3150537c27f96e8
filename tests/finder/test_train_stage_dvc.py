"""The training stage under DVC: every rerun DVC can make of a finished train@{arch} succeeds and
gives back the same curves and metrics, without training (real DVC in a fresh copy)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.conftest import copy_repo


def tree_bytes(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_dvc_reruns_of_a_finished_training_stage_rebuild_its_outputs(tmp_path):
    work, env = copy_repo(tmp_path / "repo", n_stamps=240)
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["train"].update(epochs=2, steps_per_epoch=3, batch_size=16, warmup_steps=1, min_arc_snr=0.0, balance_classes=False)
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run = lambda *a: subprocess.run(a, cwd=work, env=env, capture_output=True, text=True)  # noqa: E731
    for cmd in (["git", "add", "params.yaml"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"]):
        assert run(*cmd).returncode == 0

    res = run("dvc", "repro", "train@small_cnn")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # a run that trains says what it does before its progress bar: preprocessing, then scoring the test split
    assert "preprocessing val" in res.stderr and "scoring the" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    curves = tree_bytes(work / "dvclive" / "small_cnn")
    first = json.loads((work / "metrics/train/small_cnn.json").read_text())
    assert {"plots/metrics/train/loss.tsv", "plots/metrics/val/loss.tsv", "metrics.json"} <= set(curves)

    # forced; a key outside the trajectory; a key small_cnn does not read (the ResNet stem); another arch
    # added (train.archs is a dependency too)
    for cmd in (["dvc", "repro", "-f", "-s", "train@small_cnn"],
                ["dvc", "exp", "run", "-S", "train.eval_batch_size=256", "train@small_cnn"],
                ["dvc", "exp", "run", "-S", "train.stem=imagenet", "train@small_cnn"],
                ["dvc", "exp", "run", "-S", "train.archs=[small_cnn,resnet18]", "-S", "finders.measure=[small_cnn,resnet18]",
                 "train@small_cnn"]):
        res = run(*cmd)
        assert res.returncode == 0, (cmd, res.stdout[-3000:] + res.stderr[-3000:])
        assert "outputs rebuilt from it, no training" in res.stdout + res.stderr, cmd
        # nothing is preprocessed or scored again to rebuild
        assert "preprocessing" not in res.stderr and "scoring the" not in res.stdout, (cmd, res.stderr[-2000:])
        assert tree_bytes(work / "dvclive" / "small_cnn") == curves, cmd
        again = json.loads((work / "metrics/train/small_cnn.json").read_text())
        assert (again["history"], again["best"], again["params_hash"]) == (first["history"], first["best"], first["params_hash"]), cmd
        assert again["test_at_best"]["auc"] == pytest.approx(first["test_at_best"]["auc"], abs=1e-5)
