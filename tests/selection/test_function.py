"""The selection-function file: its evaluation against the fit's own numbers, refusal outside the
calibrated range, integrity checks, numpy-only loading, and the implied S/N kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dhs.selection import function as sf
from dhs.selection.closure import AnalyticFinder
from dhs.selection.inputs import selection_inputs
from dhs.selection.fit import Design, eta_sd
from tests.conftest import REPO


def _inputs(pop):
    inj = pop[pop["label"] == 1]
    x = selection_inputs(inj)
    ok = np.all([np.isfinite(v) for v in x.values()], axis=0)
    return {k: v[ok] for k, v in x.items()}


def test_file_evaluates_as_the_fit(analytic_file, small_population):
    """p, lo, hi from the file equal the fit's hat-basis numbers (values and band components)."""
    path, doc = analytic_file
    f = sf.SelectionFunction.load(path)
    x = _inputs(small_population)
    p, lo, hi = f(**x)
    op = doc["operating_points"][0]
    d = Design({t: np.array(op["terms"][t]["knots"]) for t in op["terms"]})
    B = d.basis(sf.terms(x))
    vals = np.concatenate([[op["intercept"]], *(op["terms"][t]["values"] for t in d.names)])
    comps = np.hstack([np.array(op["band"]["intercept"])[:, None], *(np.array(op["band"]["terms"][t]) for t in d.names)])

    class Fit:
        values, components, scale = vals, comps, np.array(op["band"]["scale"])
    eta, sd = eta_sd(B, Fit)
    inside = f.inside(**x)
    assert inside.mean() > 0.95            # the fit's own injections are in range (knots span them)
    np.testing.assert_allclose(p[inside], 1 / (1 + np.exp(-eta[inside])), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lo[inside], 1 / (1 + np.exp(-(eta - op["band"]["z"] * sd)[inside])), rtol=1e-9, atol=1e-12)
    assert np.all(lo[inside] <= p[inside]) and np.all(p[inside] <= hi[inside])
    assert np.all(hi[inside] - lo[inside] > 0)
    # the model is close to the analytic finder's truth it was fitted to
    truth = AnalyticFinder().p_pass(x, doc["finder"]["logit_threshold"])
    assert np.mean(np.abs(p[inside] - truth[inside])) < 0.05


def test_outside_the_range_is_refused_never_extrapolated(analytic_file):
    path, _ = analytic_file
    f = sf.SelectionFunction.load(path)
    mid = {k: np.full(4, 0.5 * (lo + hi)) for k, (lo, hi) in f.input_range.items()}
    lo_th, hi_th = f.input_range["theta_e_arcsec"]
    mid["theta_e_arcsec"] = np.array([lo_th, 0.5 * (lo_th + hi_th), hi_th * 1.5, np.nan])
    p, lo, hi = f(**mid)
    ok = f.inside(**mid)
    assert not ok[2] and not ok[3]
    assert np.isnan(p[2]) and np.isnan(lo[2]) and np.isnan(hi[2]) and np.isnan(p[3])
    with pytest.raises(sf.SelectionFunctionError, match="theta_e_arcsec: 2 outside"):
        f(outside="raise", **mid)
    with pytest.raises(KeyError, match="lens_r_mag"):
        f(**{k: v for k, v in mid.items() if k != "lens_r_mag"})


def test_broadcasting_and_shapes(analytic_file, small_population):
    path, _ = analytic_file
    f = sf.SelectionFunction.load(path)
    x = _inputs(small_population)
    one = {k: float(v[0]) for k, v in x.items()}
    p0, _, _ = f(**one)
    assert np.shape(p0) == ()
    grid = dict(one, theta_e_arcsec=np.linspace(*np.quantile(x["theta_e_arcsec"], [0.2, 0.8]), 6).reshape(2, 3))
    p, lo, hi = f(**grid)
    assert p.shape == (2, 3) and lo.shape == (2, 3)
    assert p.reshape(-1)[0] == pytest.approx(f(**dict(one, theta_e_arcsec=grid["theta_e_arcsec"].reshape(-1)[0]))[0])


def test_integrity_and_version_checks(analytic_file, tmp_path):
    path, _ = analytic_file
    doc = json.loads(path.read_text())
    assert doc["sha256"] == sf.digest(doc)
    bad = dict(doc, primary=doc["primary"])
    bad["operating_points"] = json.loads(json.dumps(doc["operating_points"]))
    bad["operating_points"][0]["intercept"] += 1.0
    (tmp_path / "edited.json").write_text(json.dumps(bad))
    with pytest.raises(sf.SelectionFunctionError, match="does not match its sha256"):
        sf.SelectionFunction.load(tmp_path / "edited.json")
    (tmp_path / "v2.json").write_text(json.dumps(dict(doc, format_version=2)))
    with pytest.raises(sf.SelectionFunctionError, match="format_version 2"):
        sf.SelectionFunction.load(tmp_path / "v2.json")
    with pytest.raises(sf.SelectionFunctionError, match=r"no operating point 'fpr_0.5'; the file has \['fixed'\]"):
        sf.SelectionFunction.load(path, "fpr_0.5")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(sf.SelectionFunctionError, match="not a selection-function file"):
        sf.SelectionFunction.load(tmp_path / "other.json")


def test_loads_and_evaluates_with_numpy_alone(analytic_file):
    """A fresh interpreter that cannot import torch, pandas, scipy, pyspark or dvc loads the file
    with the module copied on its own and gets the same numbers."""
    path, _ = analytic_file
    f = sf.SelectionFunction.load(path)
    pt = {k: 0.5 * (lo + hi) for k, (lo, hi) in f.input_range.items()}
    code = f"""
import sys, importlib.abc, importlib.util, json
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'pandas', 'scipy', 'pyspark', 'dvc', 'dhs'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location('function', {str(REPO / 'dhs/selection/function.py')!r})
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
f = m.SelectionFunction.load({str(path)!r})
print(json.dumps([float(v) for v in f(**{pt!r})]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(json.loads(out.stdout), [float(v) for v in f(**pt)], rtol=1e-12)


def test_implied_snr_is_the_matched_filter_snr_of_a_gaussian_image():
    """For an elliptical Gaussian image on pixels with the sky noise a 5-sigma depth implies, the
    matched-filter S/N sqrt(sum s^2 / sigma^2) equals implied_arc_snr's noise-equivalent-area form."""
    pix = 0.262
    fwhm, depth, m_src, reff, mu, theta = 1.2, 24.5, 24.0, 0.25, 4.0, 1.5
    s_psf = fwhm / 2.3548200450309493 / pix
    s_src = reff / 1.1774100225154747 / pix
    sx, sy = np.hypot(s_psf, mu * s_src), np.hypot(s_psf, s_src)
    n = 257
    yy, xx = np.mgrid[:n, :n] - n // 2
    flux = 10 ** (-0.4 * (m_src - 2.5 * np.log10(mu) - 22.5))
    img = flux * np.exp(-0.5 * (xx**2 / sx**2 + yy**2 / sy**2)) / (2 * np.pi * sx * sy)
    f5 = 10 ** (-0.4 * (depth - 22.5))
    sigma_pix = f5 / (5 * np.sqrt(4 * np.pi * s_psf**2))
    snr_pixels = np.sqrt((img**2).sum()) / sigma_pix
    assert sf.implied_arc_snr(theta, fwhm, depth, m_src, reff, mu) == pytest.approx(snr_pixels, rel=1e-3)
    # a point source at the depth is a 5-sigma detection; the arc is capped at the full ring
    assert sf.implied_arc_snr(1.0, fwhm, depth, depth, 1e-6, 1.0) == pytest.approx(5.0, rel=1e-6)
    ring_small, ring_large = (sf.implied_arc_snr(th, fwhm, depth, m_src, reff, 1e4) for th in (0.1, 10.0))
    assert ring_small > 3 * ring_large   # the same flux on a short ring is more concentrated


def test_terms_are_nan_where_undefined():
    t = sf.terms({"theta_e_arcsec": [1.0, 1.0], "psf_fwhm_r_arcsec": [1.2, 0.0], "psfdepth_r_mag": [24.0, 24.0],
                  "src_r_mag": [24.0, 24.0], "src_reff_arcsec": [0.3, 0.3], "magnification": [0.0, 5.0], "lens_r_mag": [19.0, 19.0]})
    assert np.isnan(t["log10_snr_implied"][0]) and np.isnan(t["log10_mu_reff_over_psf"][0])   # mu = 0
    assert np.isnan(t["theta_e_over_psf"][1])                                                    # PSF = 0


def test_population_mean_and_its_band(analytic_file, small_population):
    path, _ = analytic_file
    f = sf.SelectionFunction.load(path)
    x = _inputs(small_population)
    x["theta_e_arcsec"] = x["theta_e_arcsec"].copy()
    x["theta_e_arcsec"][:10] = 99.0                               # outside: counted, not zero
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(x["theta_e_arcsec"]))
    m = f.mean(weights=w, **x)
    p, lo, hi = f(**x)
    ok = np.isfinite(p)
    assert m["mean"] == pytest.approx(float((w[ok] * p[ok]).sum() / w[ok].sum()), rel=1e-12)
    assert m["lo"] < m["mean"] < m["hi"]
    assert m["n_outside"] == int((~ok).sum()) >= 10
    assert m["weight_outside_fraction"] == pytest.approx(w[~ok].sum() / w.sum())
    # the band of a mean over many points is narrower than the mean pointwise band
    assert m["hi"] - m["lo"] < float((w[ok] * (hi[ok] - lo[ok])).sum() / w[ok].sum())


def test_worked_example_runs_on_a_catalogue(analytic_file, small_population, tmp_path):
    path, _ = analytic_file
    pd = pytest.importorskip("pandas")
    cat = pd.DataFrame(_inputs(small_population))
    cat["w"] = 1.0
    cat.to_parquet(tmp_path / "pop.parquet")
    out = subprocess.run([sys.executable, str(REPO / "examples/expected_lenses.py"), "--model", str(path), "--catalogue",
                          str(tmp_path / "pop.parquet"), "--weight", "w", "--density", "0.1", "--area", "1000"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    m = sf.SelectionFunction.load(path).mean(weights=cat["w"].to_numpy(), **{k: cat[k].to_numpy() for k in sf.INPUTS})
    assert f"N_found = {100 * m['mean']:.0f}" in out.stdout
