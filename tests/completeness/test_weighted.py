"""Sky-weighted completeness and weighted thresholds (dhs.measurement.weighted,
dhs.evaluation.thresholds.weighted_threshold_at_fpr) against direct computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dhs.measurement.weighted import lookalike_sensitivity, sky_headline, weighted_cell
from dhs.evaluation.intervals import bootstrap_multiplicities, region_bootstrap, wilson_interval
from dhs.evaluation.thresholds import ThresholdError, threshold_at_fpr, weighted_threshold_at_fpr


def _injections(n=3000, seed=0, weighted=True):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"region_id": rng.integers(0, 25, n), "score": rng.uniform(0, 1, n),
                       "discoverable": (rng.uniform(0, 1, n) < 0.3).astype(int)})
    if weighted:
        df["sky_weight"] = rng.lognormal(0, 1, n)
    return df


def test_unit_weights_give_the_unweighted_count_and_its_intervals():
    df = _injections(weighted=False)
    regions = np.arange(25)
    mult = bootstrap_multiplicities(25, 300, 1)
    found = df.score.to_numpy() > 0.7
    c = weighted_cell(found, np.ones(len(df)), df.region_id.to_numpy(), 25, mult, 0.95)
    k, n = int(found.sum()), len(df)
    lo, hi = wilson_interval(k, n, 0.95)
    assert c["completeness"] == pytest.approx(k / n) and c["n"] == n and c["n_eff"] == pytest.approx(n)
    assert c["wilson_lo"] == pytest.approx(float(lo)) and c["wilson_hi"] == pytest.approx(float(hi))
    k_r = np.bincount(df.region_id, weights=found, minlength=25)[:, None]
    n_r = np.bincount(df.region_id, minlength=25)[:, None].astype(float)
    bl, bh = region_bootstrap(k_r, n_r, multiplicities=mult)
    assert c["boot_lo"] == pytest.approx(float(bl[0])) and c["boot_hi"] == pytest.approx(float(bh[0]))
    head = sky_headline(df, {"t": 0.7}, regions, mult, 0.95)
    assert head["weighted"] is False and head["t"]["all"]["completeness"] == pytest.approx(k / n)
    d = df.discoverable.to_numpy() == 1
    assert head["t"]["discoverable"]["completeness"] == pytest.approx(found[d].mean())
    assert head["discoverable_fraction"]["completeness"] == pytest.approx(d.mean())


def test_sky_weights_enter_as_a_weighted_mean_with_kish_n_eff():
    df = _injections()
    w, s, d = df.sky_weight.to_numpy(), df.score.to_numpy(), df.discoverable.to_numpy() == 1
    head = sky_headline(df, {"a": 0.5, "b": 0.9}, np.arange(25), bootstrap_multiplicities(25, 200, 2), 0.95)
    for name, t in (("a", 0.5), ("b", 0.9)):
        f = s > t
        assert head[name]["all"]["completeness"] == pytest.approx((w * f).sum() / w.sum())
        assert head[name]["discoverable"]["completeness"] == pytest.approx((w[d] * f[d]).sum() / w[d].sum())
        assert head[name]["discoverable"]["n"] == int(d.sum())
        c = head[name]["all"]
        assert c["boot_lo"] < c["completeness"] < c["boot_hi"] and c["wilson_lo"] < c["completeness"] < c["wilson_hi"]
    assert head["n_eff"] == pytest.approx(w.sum() ** 2 / (w * w).sum()) and head["n_eff"] < 0.6 * len(df)
    with pytest.raises(ValueError, match="sky_weight"):
        sky_headline(df.assign(sky_weight=-1.0), {"a": 0.5}, np.arange(25), bootstrap_multiplicities(25, 10, 2), 0.95)


def test_weighted_threshold_with_unit_weights_is_the_usual_threshold():
    rng = np.random.default_rng(4)
    s = rng.normal(0, 1, 5001)
    for fpr in (0.1, 0.01, 0.001, 0.0003):
        assert weighted_threshold_at_fpr(s, np.ones_like(s), fpr) == threshold_at_fpr(s, fpr).score
    # a heavier weight on the top controls raises the threshold: fewer of them may pass
    w = np.where(s > 2, 3.0, 1.0)
    assert weighted_threshold_at_fpr(s, w, 0.01) > threshold_at_fpr(s, 0.01).score
    with pytest.raises(ThresholdError, match="weights"):
        weighted_threshold_at_fpr(s, -w, 0.01)


def test_lookalike_rate_moves_the_threshold_the_way_it_should():
    rng = np.random.default_rng(5)
    n = 20000
    kind = np.where(rng.uniform(0, 1, n) < 0.02, "spiral", "lrg")
    score = np.where(kind == "spiral", rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.9, n))
    controls = pd.DataFrame({"score": score, "control_kind": kind})
    inj = _injections(4000, 6)
    out = lookalike_sensitivity(controls, inj, [0.01], ["spiral"], [0.5, 2.0], {0.01: "fpr_0.01"})
    t = {f: out["by_factor"][f]["fpr_0.01"]["score"] for f in ("0.5", "1", "2")}
    assert t["1"] == threshold_at_fpr(score, 0.01).score
    assert t["0.5"] < t["1"] < t["2"]
    c = {f: out["by_factor"][f]["fpr_0.01"]["discoverable"] for f in ("0.5", "1", "2")}
    assert c["0.5"] > c["1"] > c["2"]
    assert out["max_discoverable_shift"]["fpr_0.01"] == pytest.approx(max(c["0.5"] - c["1"], c["1"] - c["2"]))
    assert out["lookalike_fraction"] == pytest.approx((kind == "spiral").mean())
