"""The closure test on one seed: the analytic finder's known selection function through the
completeness measurement (real Spark) and the selection stage; the binned curves and the model
recover the truth within their intervals. benchmarks/closure.py runs the 20-seed version."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from dhs.params import Params
from dhs.selection.closure import AnalyticFinder, population_metadata, run_closure
from tests.conftest import REPO


def test_analytic_finder_passes_at_the_rate_its_formula_says():
    """Controls pass at the nominal FPR at the closed-form threshold; injections at sigmoid((eta - t)/s)."""
    f = AnalyticFinder()
    rng_n = 200_000
    x = {"theta_e_arcsec": np.full(rng_n, 1.3), "psf_fwhm_r_arcsec": np.full(rng_n, 1.3), "psfdepth_r_mag": np.full(rng_n, 24.5),
         "src_r_mag": np.full(rng_n, 24.0), "src_reff_arcsec": np.full(rng_n, 0.3), "magnification": np.full(rng_n, 6.0),
         "lens_r_mag": np.full(rng_n, 19.0)}
    t = f.threshold_at_fpr(0.01)
    ctl = f.logits(x, np.zeros(rng_n, int), seed=1)
    assert (ctl > t).mean() == pytest.approx(0.01, abs=0.0015)
    inj = f.logits(x, np.ones(rng_n, int), seed=2)
    assert (inj > t).mean() == pytest.approx(f.p_pass(x, t)[0], abs=0.004)


@pytest.mark.slow
def test_one_seed_recovers_the_truth_within_its_intervals(tmp_path, spark):
    raw = yaml.safe_load(open(REPO / "params.yaml"))
    raw["completeness"].update(n_bootstrap=300, spark={"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g"})
    raw["selection"].update(n_replicates=30, n_draws=200)
    params = Params(raw, "test params")
    sim = raw["simulate"]
    meta = population_metadata(sim, n_stamps=16000, n_regions=120, seed=sim["seed"] + 1)
    reference = population_metadata(sim, n_stamps=32000, n_regions=240, seed=sim["seed"] + 99, extra_controls={})
    r = run_closure({1: meta}, params, tmp_path, spark, reference=reference)
    bins = r["bins"]
    for est in ("wilson", "bootstrap", "model"):
        b = bins[bins["estimator"] == est]
        assert len(b) >= 30, est
        assert b["covered"].mean() >= 0.8, (est, b["covered"].mean())
        assert (b["estimate"] - b["truth"]).abs().mean() < 0.05, est
    for name, frac in r["validation"][1].items():
        assert frac >= 0.75, (name, frac)
