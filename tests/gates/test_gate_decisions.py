"""How a gate decides: on the 95% interval of its statistic, not on the point value, and SKIP
below ``gates.min_rows_per_class``.

The core-masked gate runs here on small synthetic stamps (20 x 20 px, sky noise only) scored by a
finder made of two parts: an "arc" logit it reads from the metadata (informative, untouched by
the mask) plus the mean of the 4 central r-band pixels in sky sigma. Injections carry extra
light in the core, ``core_light`` sky sigma per pixel, so masking the core costs the finder
exactly what that light was worth: a small ``core_light`` is a true drop below the 0.05 limit,
a large one a real core shortcut. Everything is computed: masking, scoring, AUROCs, bootstrap.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dhs.gates.config import GatesConfig
from dhs.gates.core import core_masked_gate
from dhs.gates.metadata import metadata_gate
from dhs.gates.probes import ring_probe_gate
from dhs.gates.result import (BEYOND, CONSISTENT, INSIDE, MIN_ROWS_PER_CLASS, STRADDLES, VALUE_ONLY, Limit, auc_drop_with_ci,
                              count_ratio_with_ci, decide)
from dhs.gates.shuffle import shuffle_gate
from dhs.params import ParamsError
from dhs.imaging.geometry import core_mask

SIZE, SKY, PIXEL_SCALE = 20, 0.005, 0.262
CORE = core_mask(SIZE, 5.0)        # what the gate masks (core_radius_px 5)
CENTRE = core_mask(SIZE, 1.0)      # what the finder reads: the 4 central pixels
CFG = GatesConfig.from_params({"n_bootstrap": 200})
SMALL, LARGE = 40, 2000            # stamps per class
# true drop with core_light 0.15 (20000 per class): 0.032, below the 0.05 limit; with 1.5: 0.20
NOISE_ONLY, SHORTCUT = 0.15, 1.5


def stamps(n_per_class: int, core_light: float, seed: int):
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_per_class), np.ones(n_per_class)].astype(int)
    img = (rng.standard_normal((len(y), 3, SIZE, SIZE)) * SKY).astype(np.float32)
    img[:, :, CORE] += (core_light * SKY * y)[:, None, None].astype(np.float32)
    meta = pd.DataFrame({"arc_logit": rng.standard_normal(len(y)) + 1.0 * y,
                         **{f"sky_sigma_{b}_nmgy": np.full(len(y), SKY) for b in "grz"}})
    return img, y, meta


def finder(images, meta):
    return meta["arc_logit"].to_numpy() + images[:, 1][:, CENTRE].mean(axis=1) / SKY


def masked(n_per_class, core_light, seed, cfg=CFG):
    return core_masked_gate(finder, *stamps(n_per_class, core_light, seed), cfg, PIXEL_SCALE)


# --- (a) noise above the threshold does not fail, at any n ----------------------------------------

def test_a_drop_over_the_limit_by_noise_alone_passes_at_small_and_at_large_n():
    thr = CFG.core_mask_max_auc_drop
    large = masked(LARGE, NOISE_ONLY, 100)
    # the large sample pins the true drop below the limit: value and whole interval
    assert large["status"] == "PASS" and large["decision"] == INSIDE, large["detail"]
    assert large["value_ci95"][1] < thr and large["n"] == 2 * LARGE
    # the same finder on 40 stamps per class: this draw's point drop exceeds the limit (seed chosen
    # so it does; the assert keeps it so), the interval reaches back below it
    small = masked(SMALL, NOISE_ONLY, 1025)
    assert small["value"] > thr and small["value_ci95"][0] < thr < small["value_ci95"][1]
    assert small["status"] == "PASS" and small["decision"] == CONSISTENT, small["detail"]
    assert "consistent with the limit" in small["detail"] and "raise gates.n_eval" in small["detail"]
    assert small["value_ci95"][1] - small["value_ci95"][0] > 3 * (large["value_ci95"][1] - large["value_ci95"][0])
    # the record carries what was decided on
    assert small["threshold"] == thr and small["n_bootstrap"] == 200 and "whole 95% interval" in small["rule"]
    # without an interval the point value decides, and the detail says so: this draw FAILs
    bare = masked(SMALL, NOISE_ONLY, 1025, GatesConfig.from_params({"n_bootstrap": 0}))
    assert bare["status"] == "FAIL" and bare["decision"] == VALUE_ONLY and bare["value_ci95"] is None
    assert "no 95% interval (gates.n_bootstrap is 0)" in bare["detail"]


# --- (b) a real shortcut fails at both n ---------------------------------------------------------

def test_a_real_core_shortcut_fails_at_small_and_at_large_n():
    for n in (SMALL, LARGE):
        r = masked(n, SHORTCUT, 100)
        assert r["status"] == "FAIL" and r["decision"] == BEYOND, (n, r["detail"])
        assert r["value_ci95"][0] >= CFG.core_mask_max_auc_drop and r["value"] > 0.12
        assert "core-brightness shortcut" in r["detail"]


# --- (c) below the minimum: SKIP, saying what to raise ------------------------------------------

def test_below_min_rows_per_class_the_gates_skip_and_name_the_counts_and_what_to_raise():
    r = masked(25, SHORTCUT, 100)   # a real shortcut, but 25 < 30 per class: not decided
    assert r["status"] == "SKIP" and r["passed"] is False and r["value"] is None
    assert "25 injection and 25 control rows" in r["detail"] and ">= 30 of each (gates.min_rows_per_class)" in r["detail"]
    assert "raise gates.n_eval" in r["detail"]
    # the minimum is a param: at 20 the same stamps are decided
    assert masked(25, SHORTCUT, 100, GatesConfig.from_params({"n_bootstrap": 200, "min_rows_per_class": 20}))["status"] == "FAIL"
    # injections that clear the core count, not all injections
    img, y, meta = stamps(40, SHORTCUT, 100)
    meta["theta_e_arcsec"] = np.where(np.arange(len(y)) % 2 == 0, 2.5, 0.5) * y
    meta["psf_fwhm_used_r"] = 1.3
    r = core_masked_gate(finder, img, y, meta, CFG, PIXEL_SCALE)
    assert r["status"] == "SKIP" and "20 injection(s) clearing the core and 40 control rows" in r["detail"]
    # the ring probe counts probed controls, the shuffle gate injections: before any rendering or scoring
    few = (img[:12], meta.iloc[:12].reset_index(drop=True))
    ring = ring_probe_gate(finder, *few, CFG, survey=None)
    assert ring["status"] == "SKIP" and "12 controls to probe" in ring["detail"] and "raise gates.n_probe" in ring["detail"]
    shuf = shuffle_gate(finder, *few, np.zeros(50), CFG, 0.0)
    assert shuf["status"] == "SKIP" and "12 injections" in shuf["detail"] and "gates.min_rows_per_class" in shuf["detail"]


def test_min_rows_per_class_is_checked_by_the_schema():
    assert GatesConfig.from_params({}).min_rows_per_class == 30 == MIN_ROWS_PER_CLASS
    with pytest.raises(ParamsError, match=r"gates.min_rows_per_class must be an integer >= 10 .*raise it, got 5"):
        GatesConfig.from_params({"min_rows_per_class": 5})
    with pytest.raises(ParamsError, match=r"gates.n_probe must be >= gates.min_rows_per_class \(50\).*raise n_probe"):
        GatesConfig.from_params({"min_rows_per_class": 50, "n_probe": 40})


# --- (d) the paired interval -----------------------------------------------------------------------

def test_the_paired_drop_interval_is_no_wider_than_the_unpaired_one_on_correlated_scores():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(300), np.ones(300)].astype(int)
    before = rng.standard_normal(600) + 1.2 * y
    after = before + 0.3 * rng.standard_normal(600) - 0.1 * y   # the same stamps, slightly worse
    drop, paired = auc_drop_with_ci(y, before, after, 200, 1)
    drop_u, unpaired = auc_drop_with_ci(y, before, after, 200, 1, paired=False)
    assert drop == drop_u and 0 < drop < 0.1
    assert paired[0] <= drop <= paired[1] and unpaired[0] <= drop <= unpaired[1]
    # pairing removes the variation the two scorings share: over twice as narrow here
    assert paired[1] - paired[0] <= (unpaired[1] - unpaired[0]) / 2
    # uncorrelated scorings: pairing has nothing to remove, the widths are alike
    other = rng.standard_normal(600) + 1.0 * y
    _, p2 = auc_drop_with_ci(y, before, other, 200, 1)
    _, u2 = auc_drop_with_ci(y, before, other, 200, 1, paired=False)
    assert 0.7 < (p2[1] - p2[0]) / (u2[1] - u2[0]) < 1.3


# --- the decision rule itself, and the other gates' intervals ----------------------------------

def test_decide_fails_only_when_the_whole_interval_is_beyond_the_limit():
    upper = Limit("core_auc_max", 0.65)                 # AUC < 0.65
    assert decide(0.60, [0.55, 0.64], upper)[:2] == ("PASS", INSIDE)
    assert decide(0.60, [0.55, 0.70], upper)[:2] == ("PASS", STRADDLES)
    assert decide(0.68, [0.60, 0.75], upper)[:2] == ("PASS", CONSISTENT)
    assert decide(0.70, [0.65, 0.75], upper)[:2] == ("FAIL", BEYOND)   # strict: a lower bound at the limit is beyond
    assert decide(0.70, None, upper)[:2] == ("FAIL", VALUE_ONLY)
    lower = Limit("shuffle_min_auc", 0.75, upper=False, strict=False)   # AUC >= 0.75
    assert decide(0.70, [0.60, 0.80], lower)[:2] == ("PASS", CONSISTENT)
    assert decide(0.70, [0.60, 0.74], lower)[:2] == ("FAIL", BEYOND)
    assert decide(0.80, [0.75, 0.85], lower)[:2] == ("PASS", INSIDE)    # not strict: a bound at the limit is within
    sentence = decide(0.68, [0.60, 0.75], upper, more_rows="gates.n_probe")[2]
    assert "0.680 lies beyond the limit < 0.650 (core_auc_max)" in sentence and "[0.600, 0.750]" in sentence
    assert "raise gates.n_probe" in sentence


def test_the_fpr_ratio_interval_narrows_with_the_number_of_controls():
    def flags(n, k0, k1):
        before, after = np.zeros(n, bool), np.zeros(n, bool)
        before[:k0], after[:k1] = True, True       # the shifted stamps flag the same controls and more
        return after, before
    small, ci_small = count_ratio_with_ci(*flags(150, 10, 17), 200, 1)
    large, ci_large = count_ratio_with_ci(*flags(3000, 200, 340), 200, 1)
    assert small == pytest.approx(1.7) and large == pytest.approx(1.7)
    assert ci_small[0] < 1.5 < ci_small[1] and decide(small, ci_small, Limit("shift_max_fpr_ratio", 1.5, strict=False))[0] == "PASS"
    assert ci_large[0] > 1.5 and decide(large, ci_large, Limit("shift_max_fpr_ratio", 1.5, strict=False))[0] == "FAIL"
    # no controls above the threshold before, some after: an infinite ratio, and an interval that holds it
    r, ci = count_ratio_with_ci(*flags(100, 0, 5), 100, 1)
    assert r == float("inf") and ci[1] == float("inf")


def test_metadata_gate_decides_on_the_baseline_interval_and_skips_on_few_test_rows(tmp_path):
    p = tmp_path / "baseline.json"
    leak = {"auc_test": 0.62, "auc_test_ci95": [0.55, 0.69], "auc_test_bootstrap": {"n": 200}, "n_test": 400,
            "n_test_positive": 80}
    p.write_text(json.dumps({"leak": leak}))
    r = metadata_gate(p, CFG)
    assert r["status"] == "PASS" and r["decision"] == CONSISTENT and r["value_ci95"] == [0.55, 0.69]
    assert r["n"] == 400 and r["n_bootstrap"] == 200 and "not shown to differ" in r["detail"]
    p.write_text(json.dumps({"leak": {**leak, "auc_test_ci95": [0.61, 0.66]}}))
    assert metadata_gate(p, CFG)["status"] == "FAIL"
    p.write_text(json.dumps({"leak": {**leak, "auc_test_ci95": None}}))
    r = metadata_gate(p, CFG)
    assert r["status"] == "FAIL" and "no leak.auc_test_ci95" in r["detail"] and r["decision"] == VALUE_ONLY
    p.write_text(json.dumps({"leak": {**leak, "n_test": 100, "n_test_positive": 12}}))
    r = metadata_gate(p, CFG)
    assert r["status"] == "SKIP" and "12 injections and 88 controls" in r["detail"] and "gates.min_rows_per_class" in r["detail"]
