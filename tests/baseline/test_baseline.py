"""The metadata-only baselines: the leak detector (conditions -> injection label, about 0.5 when
injections and controls share conditions) and the seed's scalar baseline on the Phase 4d proxy
label; row accounting, refused features and params, and the stage end to end on a real cache."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, small_sim_params
from dhs.baseline.config import BaselineConfig
from dhs.baseline.models import (BaselineError, leak_detector, proxy_baseline, proxy_recovered, resolve_psf_r, run_baseline,
                                 summary_lines)
from dhs.params import ParamsError
from dhs.params.rules import DEFAULT_CONDITIONS
from dhs.params.schema import SECTIONS
from stages import baseline as baseline_stage

FAST = BaselineConfig.from_params({"n_bootstrap": 50})


@pytest.fixture(scope="module")
def population() -> dict[str, pd.DataFrame]:
    """6000 simulated stamp rows (the simulator's uniform population, without pixels, so that the
    proxy's cut falls inside it), by split, with a stand-in arc_snr for injections (controls carry
    0, as in Phase 4c)."""
    from dhs.simulate.config import SimConfig
    from dhs.simulate.population import sample_population

    df = sample_population(SimConfig.from_params(small_sim_params(n_stamps=6000, n_regions=80, population="uniform")))
    rng = np.random.default_rng(3)
    inj = df.is_control.to_numpy() == 0
    # brighter, larger sources give higher SNR, so the proxy is learnable from the parameters
    snr = np.exp(rng.normal(0, 0.5, len(df))) * 10 ** (-0.4 * (df.src_r_mag - 22.0)) * 8 * df.src_reff_arcsec.clip(0.15) / 0.3
    df["arc_snr"] = np.where(inj, snr, 0.0)
    return {s: g.reset_index(drop=True) for s, g in df.groupby("region_split")}


@pytest.fixture(scope="module")
def sim_cache(tmp_path_factory) -> Path:
    """A decoded cache of 700 rendered stamps (155 in test, from 5 regions), made by the real stamps path."""
    from dhs.imaging.cache import build_cache
    from dhs.contract import validate
    from dhs.simulate.config import SimConfig
    from dhs.simulate.dataset import write_synthetic_dataset

    root = tmp_path_factory.mktemp("baseline")
    write_synthetic_dataset(SimConfig.from_params(small_sim_params(n_stamps=700, n_regions=24)), root / "stamps",
                            rows_per_shard=250, progress=False)
    build_cache(validate(root / "stamps", progress=False), root / "cache", progress=False)
    return root / "cache"


def write_params(tmp_path: Path, **baseline) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"baseline": {"n_bootstrap": 50, **baseline}}))
    return p


# --------------------------------------------------------------------------- AUC and its interval


# --------------------------------------------------------------------------- leak detector

@pytest.mark.parametrize("model", ["hist_gb", "logistic"])
def test_leak_auc_is_chance_when_injections_and_controls_share_conditions(population, model):
    m = leak_detector(population, BaselineConfig.from_params({"model": model, "n_bootstrap": 50}))
    assert m["n_test"] == len(population["test"]) > 1000
    assert abs(m["auc_test"] - 0.5) < 0.05, m["auc_test"]
    lo, hi = m["auc_test_ci95"]
    assert lo < m["auc_test"] < hi and hi - lo < 0.2
    assert m["auc_test_bootstrap"]["unit"] == "row" and m["auc_test_bootstrap"]["n_valid"] == 50
    # the region bootstrap on the same scores: the population has enough test regions
    r = leak_detector(population, BaselineConfig.from_params({"model": model, "n_bootstrap": 50, "bootstrap_unit": "region"}))
    assert r["auc_test"] == m["auc_test"] and r["auc_test_bootstrap"]["unit"] == "region"
    assert r["auc_test_bootstrap"]["n_regions"] == population["test"].region_id.nunique() >= 10
    assert not m["leak_suspected"]
    assert m["features"] == list(DEFAULT_CONDITIONS)


@pytest.mark.parametrize("model", ["hist_gb", "logistic"])
def test_leak_detector_flags_conditions_that_differ_for_injections(population, model):
    # injections got psfsize_r from a different source than psf_fwhm_used_r (+0.3 arcsec)
    leaky = {s: g.assign(psfsize_r=g.psfsize_r + 0.3 * (g.is_control == 0)) for s, g in population.items()}
    m = leak_detector(leaky, BaselineConfig.from_params({"model": model, "n_bootstrap": 50}))
    assert m["auc_test"] > 0.8 and m["leak_suspected"] and m["auc_ci95_excludes_chance"]
    assert m["auc_test_ci95"][0] > 0.6
    drops = m["importance"]["permutation_auc_drop"]
    assert max(drops, key=lambda f: drops[f]["mean"]) == "psfsize_r"
    if model == "logistic":
        assert set(m["importance"]["coefficients_standardised"]) == set(DEFAULT_CONDITIONS)


def test_a_subtle_leak_in_one_quality_column_is_found(population):
    # controls were cut to clean stamps upstream, injections were not: only bad_pixel_frac differs
    rng = np.random.default_rng(0)
    leaky = {}
    for s, g in population.items():
        g = g.copy()
        inj = g.is_control.to_numpy() == 0
        g.loc[inj, "bad_pixel_frac"] = rng.uniform(0.05, 0.5, inj.sum())
        g.loc[~inj, "bad_pixel_frac"] = 0.0
        leaky[s] = g
    m = leak_detector(leaky, FAST)
    assert m["leak_suspected"] and m["auc_test"] > 0.95
    drops = m["importance"]["permutation_auc_drop"]
    assert max(drops, key=lambda f: drops[f]["mean"]) == "bad_pixel_frac"


@pytest.mark.parametrize("name", ["theta_e_arcsec", "src_dmag", "src_r_mag", "arc_snr", "magnification",
                                  "total_injected_flux_r", "lens_e", "lens_model", "shear", "shear_g1", "is_control",
                                  "Theta_E_arcsec"])
def test_injection_columns_are_refused_as_conditions(population, name):
    with pytest.raises(ParamsError, match=r"injection columns.*give the label away"):
        BaselineConfig.from_params({"conditions_features": ["psfsize_r", name]})
    # also when a config is built directly, bypassing the params check
    cfg = dataclasses.replace(BaselineConfig.from_params({}), conditions_features=("psfsize_r", name))
    with pytest.raises(ParamsError, match=rf"\['{name}'\] are injection columns"):
        leak_detector(population, cfg)


def test_the_proxy_baseline_refuses_its_own_label_inputs():
    for name in ("arc_snr", "total_injected_flux_r"):
        with pytest.raises(ParamsError, match="define \\(or restate\\) the proxy label"):
            BaselineConfig.from_params({"proxy_features": ["theta_e_arcsec", name]})


def test_non_finite_rows_are_rejected_and_counted_per_column(population):
    splits = {s: g.copy() for s, g in population.items()}
    tr, te = splits["train"], splits["test"]
    tr["psfdepth_r"] = tr["psfdepth_r"].astype("Float64")  # a nullable column, as parquet gives
    tr.loc[[0, 1, 2], "psfdepth_r"] = pd.NA
    tr.loc[[2, 3], "ebv"] = np.nan  # row 2 is bad in two columns
    te.loc[[5], "bad_pixel_frac"] = np.inf
    inj_rows = np.flatnonzero(te.is_control.to_numpy() == 0)[:4]
    ctrl_row = np.flatnonzero(te.is_control.to_numpy() == 1)[0]
    te.loc[inj_rows[:2], "arc_snr"] = np.nan
    te.loc[[ctrl_row], "arc_snr"] = np.nan  # a control: excluded from the proxy task anyway
    te.loc[inj_rows[2:3], "src_dmag"] = np.nan
    m = run_baseline(splits, FAST)

    rows = m["leak"]["rows"]
    assert rows["train"] == {"read": len(tr), "used": len(tr) - 4, "rejected": 4,
                             "rejected_nonfinite_by_column": {"psfdepth_r": 3, "ebv": 2},
                             "used_injections": rows["train"]["used_injections"],
                             "used_controls": rows["train"]["used_controls"]}
    assert rows["train"]["used_injections"] + rows["train"]["used_controls"] == len(tr) - 4
    assert rows["test"]["rejected_nonfinite_by_column"] == {"bad_pixel_frac": 1} and rows["test"]["rejected"] == 1
    assert rows["val"]["rejected"] == 0
    assert m["leak"]["n_train"] == len(tr) - 4 and m["leak"]["n_test"] == len(te) - 1

    prows = m["proxy"]["rows"]["test"]
    n_inj = int((te.is_control == 0).sum())
    assert prows["controls_excluded"] == len(te) - n_inj
    assert prows["rejected_nonfinite_by_column"] == {"arc_snr": 2, "src_dmag": 1}
    assert prows["rejected"] == 3 and prows["used"] == n_inj - 3
    assert prows["read"] == prows["controls_excluded"] + prows["used"] + prows["rejected"]
    assert m["proxy"]["n_test"] == n_inj - 3


def test_a_missing_feature_column_is_a_clear_error(population):
    with pytest.raises(BaselineError, match="column 'psfsize_x' is not in the cache metadata"):
        leak_detector(population, BaselineConfig.from_params({"conditions_features": ["psfsize_x"]}))


def test_a_train_split_with_one_class_is_refused(population):
    splits = dict(population)
    splits["train"] = population["train"][population["train"].is_control == 1]
    with pytest.raises(BaselineError, match="train split has 0 positive"):
        leak_detector(splits, FAST)


def test_a_proxy_target_with_one_class_in_train_keeps_the_rates_and_fits_nothing(population):
    """A faint survey can put every train injection below the proxy's SNR cut: the recovery rates
    are still the measurement, and the model is reported as not fitted rather than failing the stage."""
    splits = {s: g.copy() for s, g in population.items()}
    splits["train"]["arc_snr"] = np.where(splits["train"].is_control == 0, 1.0, 0.0)
    m = proxy_baseline(splits, FAST)
    n_inj = int((splits["train"].is_control == 0).sum())
    assert m["recovery"]["train"] == {"recovered": 0, "n": n_inj, "rate": 0.0}
    assert m["recovery"]["test"]["recovered"] > 0
    assert m["auc_test"] is None and "all not recovered" in m["not_fitted"]
    assert any("not fitted" in line for line in summary_lines({"leak": leak_detector(splits, FAST), "proxy": m}))


# --------------------------------------------------------------------------- the proxy label

def hand_table() -> pd.DataFrame:
    nan = np.nan
    rows = [  # arc_snr, theta_e, psf_fwhm_used_r, psfsize_r, expected recovered, expected psf, fallback
        (5.0, 0.8, 1.0, 1.3, True, 1.0, False),      # both cuts inclusive at the boundary
        (4.99, 2.0, 1.0, 1.0, False, 1.0, False),    # SNR just below
        (10.0, 0.79, 1.0, 0.5, False, 1.0, False),   # theta/PSF 0.79; psfsize_r would pass but is not used
        (10.0, 1.0, nan, 1.25, True, 1.25, True),    # null used PSF: fall back to psfsize_r, 1.0/1.25 = 0.8
        (10.0, 1.0, 0.0, 2.0, False, 2.0, True),     # 0 used PSF: fall back, 0.5 fails
        (10.0, 1.0, 1.25, 5.0, True, 1.25, False),   # used PSF preferred over psfsize_r
        (30.0, 2.0, -1.0, 1.0, True, 1.0, True),     # negative used PSF: fall back
    ]
    return pd.DataFrame(rows, columns=["arc_snr", "theta_e_arcsec", "psf_fwhm_used_r", "psfsize_r", "want", "want_psf",
                                       "want_fallback"])


def test_proxy_label_arithmetic_on_a_hand_made_table():
    t = hand_table()
    psf, fallback = resolve_psf_r(t)
    np.testing.assert_array_equal(psf, t.want_psf.to_numpy())
    np.testing.assert_array_equal(fallback, t.want_fallback.to_numpy())
    got = proxy_recovered(t.arc_snr, t.theta_e_arcsec, psf, 5.0, 0.8)
    np.testing.assert_array_equal(got, t.want.to_numpy())
    # thresholds are parameters: SNR 4.99 passes at 4.5, theta/PSF 0.79 passes at 0.75
    got2 = proxy_recovered(t.arc_snr, t.theta_e_arcsec, psf, 4.5, 0.75)
    np.testing.assert_array_equal(got2, [True, True, True, True, False, True, True])
    # no usable PSF at all: undefined, so the baseline rejects the row under psf_r_arcsec
    psf_none, fb_none = resolve_psf_r(pd.DataFrame({"psf_fwhm_used_r": [np.nan], "psfsize_r": [pd.NA]}, dtype="Float64"))
    assert np.isnan(psf_none[0]) and not fb_none[0]
    with pytest.raises(BaselineError, match="neither psf_fwhm_used_r nor psfsize_r"):
        resolve_psf_r(pd.DataFrame({"theta_e_arcsec": [1.0]}))


def test_proxy_baseline_recovery_counts_match_the_definition(population):
    splits = {s: g.copy() for s, g in population.items()}
    # a quarter of the rows lose their used PSF and must fall back to psfsize_r (set apart from it)
    for g in splits.values():
        k = np.arange(len(g)) % 4 == 0
        g.loc[k, "psf_fwhm_used_r"] = np.nan
        g.loc[k, "psfsize_r"] = g.loc[k, "psfsize_r"] * 1.2
    m = proxy_baseline(splits, FAST)
    for s, g in splits.items():
        inj = g[g.is_control == 0]
        psf = inj.psf_fwhm_used_r.fillna(inj.psfsize_r)
        want = int(((inj.arc_snr >= 5.0) & (inj.theta_e_arcsec / psf >= 0.8)).sum())
        assert m["recovery"][s] == {"recovered": want, "n": len(inj), "rate": want / len(inj)}
        assert m["rows"][s]["psf_fallback_to_psfsize_r"] == int(inj.psf_fwhm_used_r.isna().sum()) > 0
        assert m["rows"][s]["rejected"] == 0
    assert 0.2 < m["recovery"]["test"]["rate"] < 0.9
    # the proxy depends on theta_E, PSF and source brightness: the scalar model learns it
    assert m["auc_test"] > 0.8
    assert m["auc_test_ci95"][0] > 0.7
    drops = m["importance"]["permutation_auc_drop"]
    assert drops["theta_e_arcsec"]["mean"] > 0.05


# --------------------------------------------------------------------------- params

@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_boot": 5}, "unknown keys ['n_boot'] in 'baseline'"),
        ({"model": "xgboost"}, "baseline.model must be one of ['hist_gb', 'logistic']"),
        ({"leak_auc_warn": 0.4}, "leak_auc_warn must lie in (0.5, 1)"),
        ({"n_bootstrap": -1}, "n_bootstrap must be an integer >= 0"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
        ({"conditions_features": "psfsize_r"}, "conditions_features must be a non-empty list"),
        ({"conditions_features": ["ebv", "ebv"]}, "lists ['ebv'] more than once"),
        ({"proxy_theta_psf_min": 0}, "proxy_theta_psf_min must be > 0"),
        ({"bootstrap_unit": "brick"}, "bootstrap_unit must be one of ['region', 'row']"),
    ],
)
def test_bad_params_are_refused_with_a_clear_message(params, message):
    with pytest.raises(ParamsError) as exc:
        BaselineConfig.from_params(params)
    assert message in str(exc.value)


def test_defaults_round_trip():
    cfg = BaselineConfig.from_params({})
    assert cfg.to_dict() == {k: f.default for k, f in SECTIONS["baseline"].fields.items()}
    assert BaselineConfig.from_params(cfg.to_dict()) == cfg


# --------------------------------------------------------------------------- the stage

def test_stage_end_to_end_on_a_simulated_cache(sim_cache, tmp_path):
    """The CLI as DVC runs it: leak AUC about 0.5 on rendered simulated stamps, every row accounted."""
    from dhs.imaging.cache import open_split

    params = write_params(tmp_path)
    out = tmp_path / "metrics" / "baseline.json"
    res = subprocess.run([sys.executable, str(REPO / "stages" / "baseline.py"), "--params", str(params), "--cache",
                          str(sim_cache), "--metrics", str(out)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "WARNING" not in res.stdout and "leak detector (hist_gb): test AUC" in res.stdout
    m = json.loads(out.read_text())
    leak = m["leak"]
    assert abs(leak["auc_test"] - 0.5) < 0.1, leak["auc_test"]
    assert not leak["leak_suspected"]
    metas = {s: open_split(sim_cache, s).meta for s in ("train", "val", "test")}
    for s, meta in metas.items():
        assert leak["rows"][s] == {"read": len(meta), "used": len(meta), "rejected": 0, "rejected_nonfinite_by_column": {},
                                   "used_injections": int((meta.is_control == 0).sum()),
                                   "used_controls": int((meta.is_control == 1).sum())}
        inj = meta[meta.is_control == 0]
        want = int(((inj.arc_snr >= 5) & (inj.theta_e_arcsec / inj.psf_fwhm_used_r >= 0.8)).sum())
        assert m["proxy"]["recovery"][s]["recovered"] == want and m["proxy"]["recovery"][s]["n"] == len(inj)
    assert leak["n_test"] == len(metas["test"]) > 150 and leak["auc_test_bootstrap"]["unit"] == "row"
    assert leak["auc_test_ci95"][0] < 0.5 < leak["auc_test_ci95"][1] and not leak["auc_ci95_excludes_chance"]
    assert m["proxy"]["auc_test"] > 0.7  # rendered arc SNR follows theta_E, PSF and source brightness
    assert m["params"]["model"] == "hist_gb" and m["params"]["n_bootstrap"] == 50
    assert not list(out.parent.glob(".*.tmp"))
    # deterministic: a second run (in process) writes the same bytes
    first = out.read_bytes()
    assert baseline_stage.main(["--params", str(params), "--cache", str(sim_cache), "--metrics", str(out)]) == 0
    assert out.read_bytes() == first


def test_stage_warns_loudly_on_a_leaky_cache(sim_cache, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(sim_cache, cache, ignore=shutil.ignore_patterns("images.npy"))
    for s in ("train", "val", "test"):
        (cache / s / "images.npy").symlink_to(sim_cache / s / "images.npy")
        meta = pd.read_parquet(cache / s / "meta.parquet")
        # injections carry a psfsize_r that disagrees with the PSF their stamp was made with
        meta["psfsize_r"] += 0.2 * (meta.is_control == 0)
        meta.to_parquet(cache / s / "meta.parquet", index=False)
    out = tmp_path / "b.json"
    assert baseline_stage.main(["--params", str(write_params(tmp_path)), "--cache", str(cache), "--metrics", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "baseline: WARNING: LEAK SUSPECTED" in printed and "docs/conventions.md, shortcuts" in printed
    m = json.loads(out.read_text())
    assert m["leak"]["leak_suspected"] and m["leak"]["auc_test"] > 0.8


@pytest.mark.parametrize(
    "baseline, cache, message",
    [
        ({"modle": "logistic"}, None, "unknown keys ['modle'] in 'baseline'"),
        ({"conditions_features": ["psfsize_r", "theta_e_arcsec"]}, None, "['theta_e_arcsec'] are injection columns"),
        ({"conditions_features": ["psfsize_x"]}, None, "column 'psfsize_x' is not in the cache metadata"),
        ({}, "missing", "no cached split 'train'"),
    ],
)
def test_stage_fails_with_exit_2_and_a_clear_message(sim_cache, tmp_path, capsys, baseline, cache, message):
    out = tmp_path / "m.json"
    cache_dir = tmp_path / "nothing" if cache == "missing" else sim_cache
    rc = baseline_stage.main(["--params", str(write_params(tmp_path, **baseline)), "--cache", str(cache_dir),
                              "--metrics", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("baseline: FAILED: ") and message in err
    assert not out.exists()


def test_stage_needs_a_baseline_section(tmp_path, capsys):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"stamps": {}}))
    assert baseline_stage.main(["--params", str(p), "--metrics", str(tmp_path / "m.json")]) == 2
    assert "has no 'baseline' section" in capsys.readouterr().err
