"""Calibration: reliability/ECE/MCE/Brier/log loss against analytic values, temperature scaling
recovering a known temperature, isotonic calibration, the prevalence shift against Bayes' rule,
purity at survey prevalence, refused params and splits, and the stage end to end on a score table."""

from __future__ import annotations

import hashlib
import json
import re
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import expit
from scipy.stats import norm

from dhs.evaluation.calibrator import Calibrator, load_calibrator, save_calibrator
from dhs.calibration.config import CalibrationConfig
from dhs.evaluation.fitting import DegenerateFitError, apply_isotonic, fit_isotonic, fit_temperature
from dhs.evaluation.prevalence import (posterior_at_prevalence, prevalence_logit_offset, prevalence_shift, purity_at_prevalence,
                                        purity_operating_points)
from dhs.evaluation.reliability import CalibrationError, brier_score, ece, log_loss, mce, reliability_curve
from dhs.params import ParamsError
from dhs.evaluation.thresholds import threshold_at_fpr
from stages import calibration as stage

CAL_PARAMS = {"method": "temperature", "n_bins": 15, "strategies": ["uniform", "quantile"], "fit_split": "val",
              "eval_split": "test", "survey_prevalence": 1.0e-3}


# --------------------------------------------------------------------------- temperature scaling

@pytest.mark.parametrize("t_true", [0.5, 2.5])
def test_temperature_scaling_recovers_the_temperature_the_logits_were_made_with(t_true):
    rng = np.random.default_rng(11)
    z_cal = rng.normal(0.0, 2.5, 40_000)                       # calibrated logits
    y = (rng.random(z_cal.size) < expit(z_cal)).astype(int)    # labels drawn from them
    t_fit = fit_temperature(t_true * z_cal, y)                 # the model reports T * z
    assert t_fit == pytest.approx(t_true, rel=0.03)


def test_fit_temperature_refuses_separable_and_single_class_data():
    with pytest.raises(DegenerateFitError, match="separated") as sep:
        fit_temperature([-3.0, -2.0, 2.0, 3.0], [0, 0, 1, 1])
    assert sep.value.side == "low"
    # an undertrained finder: logits near one value, independent of balanced labels; the NLL falls all
    # the way to T -> infinity (p -> 0.5)
    rng = np.random.default_rng(4)
    with pytest.raises(DegenerateFitError, match="no information") as flat:
        fit_temperature(rng.normal(-3.0, 0.3, 4000), rng.random(4000) < 0.5)
    assert flat.value.side == "high"
    with pytest.raises(CalibrationError, match="only controls"):
        fit_temperature([-1.0, 0.5, 2.0], [0, 0, 0])
    with pytest.raises(CalibrationError, match="NaN or Inf"):
        fit_temperature([0.1, np.nan, 1.0], [0, 1, 1])


# --------------------------------------------------------------------------- reliability, ECE, MCE, Brier, log loss

def test_ece_and_mce_on_a_hand_worked_example():
    # bin [0.1, 0.2): mean 0.1, observed 1/2 (gap 0.4); bin [0.9, 1.0]: mean 0.9, observed 1 (gap 0.1)
    probs, labels = [0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1]
    assert ece(probs, labels, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert mce(probs, labels, n_bins=10) == pytest.approx(0.4)
    assert brier_score(probs, labels) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert log_loss(probs, labels) == pytest.approx(-(math.log(0.9) + math.log(0.1) + 2 * math.log(0.9)) / 4)


def test_bin_convention_left_closed_last_bin_closed_and_quantile_counts():
    c = reliability_curve([0.0, 0.2, 0.3999, 0.4, 1.0], [0, 0, 1, 1, 1], n_bins=5)
    assert c.count.tolist() == [1, 2, 1, 0, 1]                  # 0.2 opens bin 1; 1.0 falls in the last bin
    assert np.isnan(c.mean_predicted[3]) and np.isnan(c.observed_fraction[3])
    q = reliability_curve(np.arange(100) / 100, np.arange(100) % 2, n_bins=10, strategy="quantile")
    assert q.count.tolist() == [10] * 10
    tied = reliability_curve([0.3] * 50 + [0.7] * 50, [0, 1] * 50, n_bins=15, strategy="quantile")
    assert tied.count.sum() == 100 and tied.n_bins < 15       # coinciding quantile edges merge


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_of_perfectly_calibrated_scores_is_near_zero(strategy):
    rng = np.random.default_rng(5)
    s = rng.random(200_000)
    y = (rng.random(s.size) < s).astype(int)                  # P(y=1 | s) = s
    assert ece(s, y, 15, strategy) < 0.01
    assert brier_score(s, y) == pytest.approx(1 / 6, abs=3e-3)  # E[s(1 - s)] for s ~ U(0, 1)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_of_a_known_miscalibration_matches_its_analytic_value(strategy):
    # s ~ U(0, 1) but P(y=1 | s) = s^2: the gap s - s^2 >= 0 everywhere, so for any binning
    # ECE = E[s - s^2] = 1/2 - 1/3 = 1/6; log loss = -E[s^2 ln s + (1 - s^2) ln(1 - s)] = 1/9 + 7/18 = 1/2.
    rng = np.random.default_rng(6)
    s = rng.random(300_000)
    y = (rng.random(s.size) < s**2).astype(int)
    assert ece(s, y, 15, strategy) == pytest.approx(1 / 6, abs=5e-3)
    assert log_loss(s, y) == pytest.approx(0.5, abs=5e-3)
    if strategy == "uniform":
        # MCE: the bin [7/15, 8/15] around the peak of s - s^2; mean gap (a+b)/2 - (a^2+ab+b^2)/3
        a, b = 7 / 15, 8 / 15
        assert mce(s, y, 15, strategy) == pytest.approx((a + b) / 2 - (a * a + a * b + b * b) / 3, abs=0.012)


def test_metrics_refuse_logits_and_misaligned_labels():
    with pytest.raises(CalibrationError, match="not logits"):
        ece([-2.0, 3.0], [0, 1])
    with pytest.raises(CalibrationError, match="aligned"):
        brier_score([0.2, 0.8], [0, 1, 1])
    with pytest.raises(CalibrationError, match="0 \\(control\\) or 1"):
        log_loss([0.2, 0.8], [0, 2])


# --------------------------------------------------------------------------- isotonic

def test_isotonic_fit_matches_sklearn_and_calibrates_a_nonlinear_distortion():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(8)
    z = rng.normal(0, 2, 20_000)
    y = (rng.random(z.size) < expit(z)).astype(int)
    raw = np.sign(z) * np.abs(z) ** 1.7                        # monotone, not a temperature
    x, p = fit_isotonic(raw[:10_000], y[:10_000])
    assert np.all(np.diff(x) > 0) and np.all(np.diff(p) >= 0)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw[:10_000], y[:10_000])
    np.testing.assert_allclose(apply_isotonic(raw[10_000:], x, p), ref.predict(raw[10_000:]), atol=1e-12)
    before = ece(expit(raw[10_000:]), y[10_000:])
    after = ece(apply_isotonic(raw[10_000:], x, p), y[10_000:])
    assert after < 0.03 < before


# --------------------------------------------------------------------------- prevalence

def test_prevalence_shift_matches_bayes_rule_on_a_worked_example():
    # P(lens | s) = 0.9 on a balanced set means likelihood ratio 9; at prevalence 1e-3
    # Bayes gives 9 * 0.001 / (9 * 0.001 + 1 * 0.999) = 0.009 / 1.008
    assert posterior_at_prevalence([0.9], 0.5, 1e-3)[0] == pytest.approx(0.009 / 1.008, rel=1e-12)
    assert prevalence_logit_offset(0.5, 1e-3) == pytest.approx(math.log(1e-3 / 0.999))
    assert posterior_at_prevalence([0.9, 0.2], 0.3, 0.3) == pytest.approx([0.9, 0.2])


@pytest.mark.parametrize("pi_train", [0.5, 0.3])
def test_prevalence_shift_matches_bayes_rule_for_known_class_densities(pi_train):
    # scores from N(+1, 1) for lenses and N(-1, 1) for non-lenses: the exact posterior at any
    # prevalence pi is pi f1 / (pi f1 + (1 - pi) f0)
    x = np.linspace(-4, 6, 41)
    f1, f0 = norm.pdf(x, 1, 1), norm.pdf(x, -1, 1)

    def bayes(pi):
        return pi * f1 / (pi * f1 + (1 - pi) * f0)

    calibrated_logit = np.log(bayes(pi_train) / (1 - bayes(pi_train)))
    np.testing.assert_allclose(expit(prevalence_shift(calibrated_logit, pi_train, 1e-3)), bayes(1e-3), rtol=1e-10)


def test_prevalence_refuses_impossible_prevalences():
    with pytest.raises(CalibrationError, match="strictly between 0 and 1"):
        prevalence_logit_offset(0.5, 0.0)
    with pytest.raises(CalibrationError, match="strictly between 0 and 1"):
        purity_at_prevalence(0.5, 0.01, 1.0)


def test_purity_arithmetic_on_known_numbers():
    assert purity_at_prevalence(0.8, 0.01, 1e-3) == pytest.approx(0.0008 / (0.0008 + 0.01 * 0.999))
    assert purity_at_prevalence(1.0, 0.0, 1e-3) == 1.0
    assert math.isnan(purity_at_prevalence(0.0, 0.0, 1e-3))


def test_purity_operating_points_use_the_completeness_threshold_and_bound_zero_fpr():
    controls = np.arange(1000) / 1000                          # 0.000 ... 0.999, untied
    injections = np.r_[np.full(50, 0.9995), np.full(50, 0.995), np.full(100, 0.5)]
    p1, p2 = purity_operating_points(injections, controls, [0.01, 1e-4], prevalence=0.01)
    # FPR 0.01: 10 controls (0.990..0.999) pass, 100 of 200 injections
    assert p1["threshold_score"] == threshold_at_fpr(controls, 0.01).score == pytest.approx(0.989)
    assert (p1["n_controls_above"], p1["achieved_fpr"], p1["tpr"]) == (10, 0.01, 0.5)
    assert p1["purity"] == pytest.approx(0.005 / (0.005 + 0.01 * 0.99)) and not p1["purity_bounded"]
    # FPR 1e-4: no control passes, so purity is only bounded, using FPR < 1/1000
    assert p2["n_controls_above"] == 0 and p2["low_count"] and p2["purity"] is None and p2["purity_bounded"]
    assert p2["tpr"] == 0.25
    assert p2["purity_lower_bound"] == pytest.approx(0.0025 / (0.0025 + 0.001 * 0.99))


# --------------------------------------------------------------------------- params

def test_params_refuse_unknown_keys_equal_splits_and_text_numbers():
    with pytest.raises(ParamsError, match=r"unknown keys \['bins'\]"):
        CalibrationConfig.from_params({**CAL_PARAMS, "bins": 15})
    with pytest.raises(ParamsError, match="both 'test'"):
        CalibrationConfig.from_params({**CAL_PARAMS, "fit_split": "test"})
    with pytest.raises(ParamsError, match="write 1.0e-3"):
        CalibrationConfig.from_params({**CAL_PARAMS, "survey_prevalence": "1e-3"})
    with pytest.raises(ParamsError, match="method must be one of"):
        CalibrationConfig.from_params({**CAL_PARAMS, "method": "platt"})
    with pytest.raises(ParamsError, match="strategies"):
        CalibrationConfig.from_params({**CAL_PARAMS, "strategies": ["uniform", "uniform"]})
    cfg = CalibrationConfig.from_params(CAL_PARAMS)
    assert (cfg.fit_split, cfg.eval_split, cfg.fprs) == ("val", "test", (0.1, 0.01, 0.001))


# --------------------------------------------------------------------------- calibrator file

def test_calibrator_round_trip_and_refusals(tmp_path):
    cal = Calibrator(method="isotonic", temperature=1.7, pi_train=0.4, checkpoint="m/checkpoint_best.pt",
                     checkpoint_sha256="ab" * 32, fit_split="val", n_fit=10,
                     isotonic_logits=(-1.0, 0.0, 2.0), isotonic_probs=(0.1, 0.3, 0.9))
    save_calibrator(tmp_path / "c.json", cal)
    back = load_calibrator(tmp_path / "c.json")
    assert back == cal
    np.testing.assert_allclose(back.probabilities([-5.0, 1.0, 9.0]), [0.1, 0.6, 0.9])
    np.testing.assert_allclose(back.temperature_probabilities([1.7]), [expit(1.0)])
    d = json.loads((tmp_path / "c.json").read_text())
    (tmp_path / "bad.json").write_text(json.dumps({**d, "temperature": -1.0}))
    with pytest.raises(CalibrationError, match="temperature must be finite and > 0"):
        load_calibrator(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({**d, "format": "something-else"}))
    with pytest.raises(CalibrationError, match="rerun"):
        load_calibrator(tmp_path / "old.json")


# --------------------------------------------------------------------------- the stage

def write_scores(path: Path, t_model: float = 2.0, n_val: int = 3000, n_test: int = 4000, seed: int = 2) -> pd.DataFrame:
    """A score table in the dhs.evaluation.scores layout: calibrated logits z, labels drawn from them, and a
    model that reports t_model * z; val and test from disjoint regions."""
    rng = np.random.default_rng(seed)
    n = n_val + n_test
    z = rng.normal(0.0, 2.5, n)
    logit = t_model * z
    split = np.r_[["val"] * n_val, ["test"] * n_test]
    region = np.where(split == "val", rng.integers(0, 5, n), rng.integers(5, 15, n))
    df = pd.DataFrame({"task_id": [f"t{i:06d}" for i in range(n)], "split": split,
                       "label": (rng.random(n) < expit(z)).astype(np.int8), "logit": logit, "score": expit(logit),
                       "region_id": [f"r{r}" for r in region]})
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return df


@pytest.fixture
def workspace(tmp_path):
    """A score table for arch 'toy', its checkpoint file, and a params writer."""
    df = write_scores(tmp_path / "scores" / "toy.parquet")
    ckpt = tmp_path / "models" / "toy" / "checkpoint_best.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights of the toy model")

    def params(**over) -> str:
        p = tmp_path / "params.yaml"
        p.write_text(yaml.safe_dump({"calibration": {**CAL_PARAMS, **over}}))
        return str(p)

    def args(**over) -> list[str]:
        return ["--arch", "toy", "--params", params(**over), "--scores", str(tmp_path / "scores"), "--models", str(tmp_path / "models"),
                "--calibration", str(tmp_path / "cal"), "--metrics", str(tmp_path / "metrics"), "--plots", str(tmp_path / "plots")]

    return {"root": tmp_path, "df": df, "ckpt": ckpt, "args": args}


def test_stage_end_to_end_writes_every_output(workspace):
    root, df = workspace["root"], workspace["df"]
    assert stage.main(workspace["args"]()) == 0
    m = json.loads((root / "metrics" / "toy.json").read_text())
    test = df[df.split == "test"]
    assert m["rows"]["test"] == {"total": len(test), "injection": int(test.label.sum()), "control": int((test.label == 0).sum())}
    assert m["rows"]["val"]["total"] == 3000 and m["rows_other_splits"] == 0
    assert m["temperature"] == pytest.approx(2.0, rel=0.1)
    for k in ("ece_uniform", "ece_quantile", "brier", "log_loss"):
        assert m["eval"]["after"][k] < m["eval"]["before"][k]
    assert m["eval"]["after"]["ece_uniform"] < 0.03
    # the calibrator: temperature scaling of raw logits, tied to the checkpoint's bytes
    cal = load_calibrator(root / "cal" / "toy" / "calibrator.json")
    assert cal.checkpoint_sha256 == hashlib.sha256(workspace["ckpt"].read_bytes()).hexdigest()
    assert cal.pi_train == pytest.approx(df[df.split == "val"].label.mean())
    np.testing.assert_allclose(cal.probabilities(test.logit), expit(test.logit / m["temperature"]))
    # prevalence: offset from the val injection fraction, purity consistent with its own TPR/FPR
    pv = m["prevalence"]
    assert pv["logit_offset"] == pytest.approx(math.log(1e-3 / 0.999) - math.log(cal.pi_train / (1 - cal.pi_train)))
    assert [p["target_fpr"] for p in pv["operating_points"]] == [0.1, 0.01, 0.001]
    for p in pv["operating_points"]:
        assert p["n_controls"] == m["rows"]["test"]["control"]
        if not p["purity_bounded"]:
            assert p["purity"] == pytest.approx(purity_at_prevalence(p["tpr"], p["achieved_fpr"], 1e-3))
    # the plot table: every eval stamp counted once per strategy and stage
    curves = pd.read_csv(root / "plots" / "toy.csv")
    assert set(curves.columns) >= {"strategy", "stage", "bin", "mean_predicted", "observed_fraction", "count"}
    assert (curves.groupby(["strategy", "stage"])["count"].sum() == len(test)).all()
    assert len(curves.groupby(["strategy", "stage"])) == 4
    import matplotlib.image

    png = matplotlib.image.imread(root / "plots" / "toy.png")
    assert png.ndim == 3 and png.shape[0] > 300 and png.shape[1] > 300


def test_an_uninformative_finder_gets_outputs_with_the_cause_not_a_failed_stage(workspace, capsys):
    """A finder whose logits say nothing about the label (undertrained) makes the temperature fit run
    to its upper bound: the stage still writes every output, with status degenerate, the cause (the
    fit split's AUROC, what to do) and the identity calibrator, so the report can say why."""
    root, df = workspace["root"], workspace["df"]
    rng = np.random.default_rng(9)
    df = df.assign(logit=rng.normal(-3.0, 0.3, len(df)))          # scores drawn without looking at the label
    df = df.assign(score=expit(df.logit))
    df.to_parquet(root / "scores" / "toy.parquet", index=False)
    assert stage.main(workspace["args"]()) == 0
    err = capsys.readouterr().err
    assert "DEGENERATE FIT" in err and "undertrained" in err
    m = json.loads((root / "metrics" / "toy.json").read_text())
    assert m["status"] == "degenerate" and re.search(r"AUROC 0\.(4[5-9]|5[0-5])", m["cause"]) and "metrics/train/toy.json" in m["cause"]
    assert m["temperature"] == 1.0
    assert json.loads((root / "metrics" / "toy.headline.json").read_text())["status"] == "degenerate"
    cal = load_calibrator(root / "cal" / "toy" / "calibrator.json")
    np.testing.assert_allclose(cal.probabilities(df.logit), expit(df.logit))
    assert (root / "plots" / "toy.png").is_file() and (root / "plots" / "toy.csv").is_file()
    # the report's calibration table states it
    from dhs.report.summaries import calibration_tables

    html = calibration_tables(m)
    assert "degenerate temperature fit" in html and "undertrained" in html


def test_a_healthy_fit_says_ok(workspace):
    assert stage.main(workspace["args"]()) == 0
    m = json.loads((workspace["root"] / "metrics" / "toy.json").read_text())
    assert m["status"] == "ok" and m["cause"] is None


def test_stage_isotonic_option(workspace):
    root, df = workspace["root"], workspace["df"]
    assert stage.main(workspace["args"](method="isotonic")) == 0
    m = json.loads((root / "metrics" / "toy.json").read_text())
    cal = load_calibrator(root / "cal" / "toy" / "calibrator.json")
    assert m["method"] == cal.method == "isotonic" and m["isotonic_knots"] == len(cal.isotonic_logits) > 2
    assert cal.temperature == pytest.approx(m["temperature"]) and "after_temperature" in m["eval"]
    val, test = df[df.split == "val"], df[df.split == "test"]
    x, p = fit_isotonic(val.logit, val.label)
    np.testing.assert_allclose(cal.probabilities(test.logit), apply_isotonic(test.logit, x, p))
    assert m["eval"]["after"]["ece_uniform"] < m["eval"]["before"]["ece_uniform"]


def test_stage_refuses_equal_splits_with_exit_code_2(workspace, capsys):
    assert stage.main(workspace["args"](fit_split="test", eval_split="test")) == 2
    err = capsys.readouterr().err
    assert "FAILED" in err and "fit on val, evaluate on test" in err
    assert not (workspace["root"] / "metrics" / "toy.json").exists()


def _rewrite(workspace, df: pd.DataFrame) -> None:
    df.to_parquet(workspace["root"] / "scores" / "toy.parquet", index=False)


def test_stage_refuses_empty_single_class_and_region_sharing_splits(workspace, capsys):
    df = workspace["df"]
    _rewrite(workspace, df[df.split == "test"])
    assert stage.main(workspace["args"]()) == 2
    assert "split 'val' of the score table is empty" in capsys.readouterr().err
    _rewrite(workspace, df[(df.split == "val") | (df.label == 0)])
    assert stage.main(workspace["args"]()) == 2
    assert "split 'test' holds only controls" in capsys.readouterr().err
    shared = df.copy()
    shared.loc[shared.index[-1], "region_id"] = shared.loc[shared.split == "val", "region_id"].iloc[0]
    _rewrite(workspace, shared)
    assert stage.main(workspace["args"]()) == 2
    assert "share 1 region(s)" in capsys.readouterr().err


def test_stage_refuses_unknown_param(workspace, capsys):
    assert stage.main(workspace["args"](n_bin=20)) == 2
    assert "unknown keys ['n_bin'] in 'calibration'" in capsys.readouterr().err
