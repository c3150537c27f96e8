"""benchmarks/train_fit.py: the training split scored with a trained finder, at the thresholds of
metrics/completeness, counted per bin beside the evaluation split; checked against the finder's
own logits computed another way (score_images: normalisation measured on the fly)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO
from tests.finder.test_training import small_cfg
from dhs.evaluation.scores import score_table, sigmoid
from dhs.models.checkpoint import load_trained
from dhs.models.inference import score_images, score_split
from dhs.models.loader import NormConfig
from dhs.finder.training import train
from dhs.imaging.cache import open_split

_spec = importlib.util.spec_from_file_location("train_fit", REPO / "benchmarks" / "train_fit.py")
train_fit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_fit)


@pytest.fixture(scope="module")
def world(sim_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_fit")
    train(small_cfg(epochs=1), sim_cache, root / "models" / "small_cnn", NormConfig.from_params({}), augment=False, progress=False)
    tm = load_trained(root / "models" / "small_cnn", "cpu")
    test = open_split(sim_cache, "test")
    sc = score_table("test", test.stamp_meta(), score_split(tm, test, progress=False))
    sc.to_parquet(root / "scores.parquet", index=False)
    thr = float(np.quantile(sc.loc[sc["label"] == 0, "score"], 0.8))
    (root / "completeness.json").write_text(json.dumps({"eval_split": "test", "thresholds": [
        {"name": "fpr_0.2", "logit": float(np.log(thr / (1 - thr))), "score": thr}]}))
    return root, tm, thr


def test_counts_are_the_training_splits_own_at_the_evaluation_threshold(world, sim_cache, capsys):
    root, tm, thr = world
    rc = train_fit.main(["--params", str(REPO / "params.yaml"), "--models", str(root / "models"), "--cache", str(sim_cache),
                         "--metrics", str(root / "completeness.json"), "--scores", str(root / "scores.parquet"),
                         "--var", "arc_snr"])
    assert rc == 0
    out = capsys.readouterr().out
    split = open_split(sim_cache, "train")
    scores = sigmoid(score_images(tm, np.asarray(split.images, dtype=np.float32), split.meta))
    ctl = split.meta["is_control"].to_numpy() == 1
    assert f"control FPR train {int((scores[ctl] > thr).sum())}/{int(ctl.sum())} = " in out
    edges = yaml.safe_load((REPO / "params.yaml").read_text())["completeness"]["bins"]["arc_snr"]
    inj = split.meta[~ctl]
    snr = inj["arc_snr"].to_numpy(float)
    lines = [line.split() for line in out.splitlines() if line.strip().startswith("[")]
    assert len(lines) == len(edges) - 1
    for (lo, hi), parts in zip(zip(edges[:-1], edges[1:]), lines):
        sel = (snr >= lo) & (snr < hi if np.isfinite(hi) else snr <= hi)
        found, n = parts[2].split("/")
        assert (int(found), int(n)) == (int((scores[~ctl][sel] > thr).sum()), int(sel.sum())), parts
    sc = pd.read_parquet(root / "scores.parquet")
    tctl = sc["label"] == 0
    assert f"test {int((sc.loc[tctl, 'score'] > thr).sum())}/{int(tctl.sum())} = " in out


def test_missing_inputs_and_unknown_bins_are_refused_by_name(world, sim_cache, tmp_path):
    root, _, _ = world
    common = ["--params", str(REPO / "params.yaml"), "--models", str(root / "models"), "--cache", str(sim_cache),
              "--scores", str(root / "scores.parquet")]
    with pytest.raises(SystemExit, match=r"nothing\.json not found: run `dvc repro completeness@small_cnn` first"):
        train_fit.main(common + ["--metrics", str(tmp_path / "nothing.json")])
    with pytest.raises(SystemExit, match=r"completeness.bins has no \['colour'\]"):
        train_fit.main(common + ["--metrics", str(root / "completeness.json"), "--var", "colour"])
    (tmp_path / "empty.json").write_text(json.dumps({"thresholds": []}))
    with pytest.raises(SystemExit, match="empty.json: no thresholds"):
        train_fit.main(common + ["--metrics", str(tmp_path / "empty.json")])
