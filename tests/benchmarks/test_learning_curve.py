"""benchmarks/learning_curve.py: the train stage's loop at each budget, the evaluation split scored
with its checkpoint, and the sky-weighted completeness at thresholds set on that split's controls,
checked against a direct count from the same checkpoint's scores."""

from __future__ import annotations

import importlib.util

import numpy as np
import yaml

from tests.conftest import REPO
from dhs.evaluation.scores import score_table
from dhs.evaluation.thresholds import threshold_at_fpr
from dhs.models.checkpoint import load_trained
from dhs.models.inference import score_split
from dhs.imaging.cache import open_split

_spec = importlib.util.spec_from_file_location("learning_curve", REPO / "benchmarks" / "learning_curve.py")
learning_curve = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learning_curve)


def test_each_budget_is_trained_scored_and_counted_as_the_completeness_stage_does(sim_cache, tmp_path, capsys):
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["train"].update(batch_size=16, min_arc_snr=0.0, balance_classes=False, eval_batch_size=64)
    p["evaluation"]["fprs"] = [0.2]
    p["completeness"]["plot_fpr"] = 0.2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    rc = learning_curve.main(["--params", str(tmp_path / "params.yaml"), "--cache", str(sim_cache), "--steps", "2", "5",
                              "--work", str(tmp_path / "work")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 steps" in out and "5 steps" in out
    # the 5-step row against a direct count with the checkpoint it wrote
    test = open_split(sim_cache, "test")
    sc = score_table("test", test.stamp_meta(), score_split(load_trained(tmp_path / "work" / "small_cnn-5", "cpu"), test, progress=False))
    t = threshold_at_fpr(sc.loc[sc.label == 0, "score"], 0.2).score
    inj = sc[sc.label == 1]
    w = inj["sky_weight"].to_numpy(float)
    expected = float((w * (inj["score"].to_numpy() > t)).sum() / w.sum())
    line = next(line for line in out.splitlines() if line.startswith("5 steps"))
    assert f"/ {expected:.3f}" in line
    assert np.isfinite(expected)
