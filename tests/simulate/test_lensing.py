"""Lensing and light profiles against lenstronomy, the reference implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

from dhs.simulate.psf import PSFSpectra, centred_kernel, psf_kernels
from dhs.simulate.render import colour_and_blur, lensed_sersic, pixel_centres, render_profile
from dhs.simulate.sersic import sersic_amp_from_total_flux, sersic_bn, sersic_surface_brightness
from dhs.simulate.shear import shear_deflection
from dhs.simulate.sie import q_phi_to_e1e2, sie_convergence, sie_deflection, sis_deflection

lenstronomy = pytest.importorskip("lenstronomy")
from lenstronomy.Data.imaging_data import ImageData  # noqa: E402
from lenstronomy.Data.psf import PSF  # noqa: E402
from lenstronomy.ImSim.image_model import ImageModel  # noqa: E402
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402
from lenstronomy.LightModel.light_model import LightModel  # noqa: E402

PIX = 0.262
f64 = torch.float64


def t(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def random_lens(rng):
    return dict(
        theta_e=rng.uniform(0.3, 3.0),
        q=rng.uniform(0.3, 0.999),
        phi=rng.uniform(0, np.pi),
        g1=rng.normal(0, 0.05),
        g2=rng.normal(0, 0.05),
    )


@pytest.mark.parametrize("seed", range(20))
def test_sie_plus_shear_deflection_matches_lenstronomy(seed):
    rng = np.random.default_rng(seed)
    p = random_lens(rng)
    x, y = rng.uniform(-5, 5, 500), rng.uniform(-5, 5, 500)
    e1, e2 = (v.item() for v in q_phi_to_e1e2(t(p["q"]), t(p["phi"])))
    lm = LensModel(["SIE", "SHEAR"])
    kw = [dict(theta_E=p["theta_e"], e1=e1, e2=e2, center_x=0.0, center_y=0.0), dict(gamma1=p["g1"], gamma2=p["g2"], ra_0=0, dec_0=0)]
    ref_x, ref_y = lm.alpha(x, y, kw)
    ax, ay = sie_deflection(t(x), t(y), t(p["theta_e"]), t(p["q"]), t(p["phi"]))
    sx, sy = shear_deflection(t(x), t(y), t(p["g1"]), t(p["g2"]))
    ours_x, ours_y = (ax + sx).numpy(), (ay + sy).numpy()
    scale = np.hypot(ref_x, ref_y)
    assert np.max(np.hypot(ours_x - ref_x, ours_y - ref_y) / scale) < 1e-6


def test_sie_near_round_is_continuous_and_sis_is_the_q1_limit():
    rng = np.random.default_rng(1)
    x, y = t(rng.uniform(-3, 3, 200)), t(rng.uniform(-3, 3, 200))
    sis = torch.stack(sis_deflection(x, y, t(1.3)))
    for q in (1.0, 1 - 1e-9, 1 - 1e-6, 1 - 1e-4):
        sie = torch.stack(sie_deflection(x, y, t(1.3), t(q), t(0.7)))
        assert torch.all(torch.isfinite(sie))
        assert torch.max(torch.abs(sie - sis)) < 5 * (1 - q) + 1e-12
    # across the switch between series and closed form the deflection is smooth
    lm = LensModel(["SIE"])
    for q in (0.9994, 0.9996):
        e1, e2 = (v.item() for v in q_phi_to_e1e2(t(q), t(0.3)))
        ref = np.array(lm.alpha(x.numpy(), y.numpy(), [dict(theta_E=1.3, e1=e1, e2=e2)]))
        ours = torch.stack(sie_deflection(x, y, t(1.3), t(q), t(0.3))).numpy()
        assert np.max(np.abs(ours - ref)) < 1e-6


def test_circularised_theta_e_encloses_mean_convergence_one():
    """The circularised convention: the isodensity contour through theta_E (kappa = 1/2)
    encloses area pi theta_E^2 and mean convergence 1, whatever q is (a major-axis theta_E
    would enclose pi theta_E^2 q instead)."""
    theta_e = 1.2
    for q in (0.5, 0.7, 0.95):
        n = 1600  # even: no sample on the singular centre
        g = np.linspace(-4, 4, n)
        X, Y = np.meshgrid(g, g)
        kappa = sie_convergence(t(X), t(Y), t(theta_e), t(q), t(0.4)).numpy()
        inside = kappa >= 0.5
        area = inside.sum() * (g[1] - g[0]) ** 2
        assert area == pytest.approx(np.pi * theta_e**2, rel=5e-3)
        assert kappa[inside].mean() == pytest.approx(1.0, rel=1e-2)


@pytest.mark.parametrize("seed", range(10))
def test_sersic_surface_brightness_matches_lenstronomy(seed):
    rng = np.random.default_rng(100 + seed)
    n, reff, q, phi = rng.uniform(0.5, 4), rng.uniform(0.1, 2), rng.uniform(0.3, 1), rng.uniform(0, np.pi)
    cx, cy, flux = rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), rng.uniform(0.1, 10)
    e1, e2 = (v.item() for v in q_phi_to_e1e2(t(q), t(phi)))
    x, y = rng.uniform(-4, 4, 400), rng.uniform(-4, 4, 400)
    amp = sersic_amp_from_total_flux(t(flux), t(reff), t(n)).item()
    ref = LightModel(["SERSIC_ELLIPSE"]).surface_brightness(
        x, y, [dict(amp=amp, R_sersic=reff, n_sersic=n, e1=e1, e2=e2, center_x=cx, center_y=cy)]
    )
    ours = sersic_surface_brightness(t(x), t(y), t(flux), t(reff), t(n), t(q), t(phi), t(cx), t(cy)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


@pytest.mark.parametrize("n", [0.5, 1.0, 2.0, 4.0])
def test_sersic_total_flux_is_analytic(n):
    """The profile integrates to the requested flux (radial integral, elliptical area pi R^2)."""
    reff, flux = 0.4, 3.7
    amp = sersic_amp_from_total_flux(t(flux), t(reff), t(n)).item()
    bn = sersic_bn(t(n)).item()
    integrand = lambda r: amp * np.exp(-bn * ((r / reff) ** (1 / n) - 1)) * 2 * np.pi * r  # noqa: E731
    total = integrate.quad(integrand, 0, 50 * reff, limit=400)[0] + integrate.quad(integrand, 50 * reff, np.inf, limit=400)[0]
    assert total == pytest.approx(flux, rel=1e-6)


def _lenstronomy_band_image(n_pix, lens, src, kernel, oversample):
    half = (n_pix - 1) / 2 * PIX
    data = ImageData(image_data=np.zeros((n_pix, n_pix)), ra_at_xy_0=-half, dec_at_xy_0=-half,
                     transform_pix2angle=np.array([[PIX, 0], [0, PIX]]))
    psf = PSF(psf_type="PIXEL", kernel_point_source=kernel)
    model = ImageModel(data, psf, lens_model_class=LensModel(["SIE", "SHEAR"]), source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                       kwargs_numerics=dict(supersampling_factor=oversample, supersampling_convolution=False))
    le1, le2 = (v.item() for v in q_phi_to_e1e2(t(lens["q"]), t(lens["phi"])))
    se1, se2 = (v.item() for v in q_phi_to_e1e2(t(src["q"]), t(src["phi"])))
    amp = sersic_amp_from_total_flux(t(src["flux"]), t(src["reff"]), t(src["n"])).item()
    kw_lens = [dict(theta_E=lens["theta_e"], e1=le1, e2=le2), dict(gamma1=lens["g1"], gamma2=lens["g2"], ra_0=0, dec_0=0)]
    kw_src = [dict(amp=amp, R_sersic=src["reff"], n_sersic=src["n"], e1=se1, e2=se2, center_x=src["x"], center_y=src["y"])]
    # lenstronomy's image model returns surface brightness x pixel area per pixel, i.e. flux
    return model.image(kw_lens, kw_src)


def random_arc(rng: np.random.Generator, flux: float):
    """(lens, src, our params) for a lensed source drawn like the default priors."""
    lens = random_lens(rng)
    lens["theta_e"] = rng.uniform(0.5, 2.5)
    beta = np.sqrt(rng.uniform(0.1**2, 0.4**2)) * lens["theta_e"]
    ang = rng.uniform(0, 2 * np.pi)
    src = dict(x=beta * np.cos(ang), y=beta * np.sin(ang), reff=rng.uniform(0.15, 0.5), n=rng.uniform(0.5, 2),
               q=rng.uniform(0.5, 1), phi=rng.uniform(0, np.pi), flux=flux)
    params = {k: t([v]) for k, v in dict(theta_e_arcsec=lens["theta_e"], lens_q=lens["q"], lens_phi_rad=lens["phi"],
              shear_g1=lens["g1"], shear_g2=lens["g2"], src_x_arcsec=src["x"], src_y_arcsec=src["y"],
              src_reff_arcsec=src["reff"], src_n=src["n"], src_q=src["q"], src_phi_rad=src["phi"]).items()}
    return lens, src, params


@pytest.mark.parametrize("seed", range(6))
def test_rendered_arc_matches_lenstronomy_per_band(seed):
    """With the PSF: the only difference left is our circular convolution against lenstronomy's
    zero-padded one (light near the stamp edges), well below these bounds."""
    rng = np.random.default_rng(200 + seed)
    n_pix, os_ = 64, 4
    lens, src, params = random_arc(rng, 1.0)
    fwhm_r = rng.uniform(0.8, 1.6)
    fwhm = np.array([[1.16 * fwhm_r, fwhm_r, 0.96 * fwhm_r]])
    band_flux = np.array([[0.3, 0.9, 1.8]])
    kernels = psf_kernels(t(fwhm), n_pix, PIX, model="moffat")
    unit = render_profile(lensed_sersic, params, n_pix=n_pix, pixel_scale_arcsec=PIX, oversample=os_, threshold=0.0)
    ours = colour_and_blur(unit, t(band_flux), PSFSpectra.from_kernels(kernels))[0].numpy()
    for b in range(3):
        ref = _lenstronomy_band_image(n_pix, lens, {**src, "flux": band_flux[0, b]}, centred_kernel(kernels[0, b]).numpy(), os_)
        assert ours[b].sum() == pytest.approx(ref.sum(), rel=2e-3)
        core = ref > 0.05 * ref.max()
        np.testing.assert_allclose(ours[b][core], ref[core], rtol=2e-3)
        assert np.abs(ours[b] - ref).max() < 2e-3 * ref.max()


@pytest.mark.parametrize("seed", range(4))
def test_rendered_arc_before_the_psf_matches_lenstronomy_to_rounding(seed):
    """The ray shooting and sub-pixel sampling alone (no PSF), float64: equal to lenstronomy's
    supersampled image to 1e-8 of the peak, pixel by pixel."""
    lens, src, params = random_arc(np.random.default_rng(300 + seed), 2.5)
    ours = src["flux"] * render_profile(lensed_sersic, params, n_pix=64, pixel_scale_arcsec=PIX, oversample=4)[0].numpy()
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    ref = _lenstronomy_band_image(64, lens, src, delta, 4)
    assert np.abs(ours - ref).max() < 1e-8 * ref.max()


def test_adaptive_supersampling_keeps_flux():
    rng = np.random.default_rng(7)
    B = 64
    params = {
        "theta_e_arcsec": t(rng.uniform(0.5, 2.5, B)), "lens_q": t(rng.uniform(0.5, 1, B)), "lens_phi_rad": t(rng.uniform(0, 3, B)),
        "shear_g1": t(rng.normal(0, 0.05, B)), "shear_g2": t(rng.normal(0, 0.05, B)), "src_x_arcsec": t(rng.uniform(-0.3, 0.3, B)),
        "src_y_arcsec": t(rng.uniform(-0.3, 0.3, B)), "src_reff_arcsec": t(rng.uniform(0.15, 0.5, B)), "src_n": t(rng.uniform(0.5, 2, B)),
        "src_q": t(rng.uniform(0.5, 1, B)), "src_phi_rad": t(rng.uniform(0, 3, B)),
    }
    full = render_profile(lensed_sersic, params, n_pix=64, pixel_scale_arcsec=PIX, oversample=4, threshold=0.0)
    fast = render_profile(lensed_sersic, params, n_pix=64, pixel_scale_arcsec=PIX, oversample=4, threshold=1e-3)
    rel = (fast.sum(dim=(1, 2)) - full.sum(dim=(1, 2))).abs() / full.sum(dim=(1, 2))
    assert rel.max() < 1e-3
    assert (fast - full).abs().max() / full.max() < 5e-3


def _sis_magnification_1d(theta_e, reff, n):
    """Exact total magnification of a round Sersic source at beta = 0 behind an SIS.

    The SIS maps image radius r to source radius |r - theta_E|, so the lensed flux is
    int I(u) 2 pi (theta_E + u) du (outer image) + int_0^theta_E I(u) 2 pi (theta_E - u) du.
    """
    bn = sersic_bn(t(n)).item()
    prof = lambda u: np.exp(-bn * ((u / reff) ** (1 / n) - 1))  # noqa: E731
    outer = integrate.quad(lambda u: prof(u) * (theta_e + u), 0, 60 * reff, limit=400)[0]
    inner = integrate.quad(lambda u: prof(u) * (theta_e - u), 0, theta_e, limit=400)[0]
    src = integrate.quad(lambda u: prof(u) * u, 0, 60 * reff, limit=400)[0]
    return (outer + inner) / src


@pytest.mark.parametrize("theta_e", [0.8, 1.5, 2.2])
def test_point_like_source_behind_sis_forms_ring_with_magnified_flux(theta_e):
    n_pix, reff, n = 96, 0.05, 1.0
    one = lambda v: t([v])  # noqa: E731
    params = dict(theta_e_arcsec=one(theta_e), lens_q=one(1.0), lens_phi_rad=one(0.0), shear_g1=one(0.0), shear_g2=one(0.0),
                  src_x_arcsec=one(0.0), src_y_arcsec=one(0.0), src_reff_arcsec=one(reff), src_n=one(n), src_q=one(1.0), src_phi_rad=one(0.0))
    img = render_profile(lensed_sersic, params, n_pix=n_pix, pixel_scale_arcsec=PIX, oversample=8, threshold=0.0)[0].numpy()
    # total lensed flux = magnification x source flux (source flux is 1): nothing renormalised
    assert img.sum() == pytest.approx(_sis_magnification_1d(theta_e, reff, n), rel=0.02)
    # the light sits on a ring of radius theta_E
    c = pixel_centres(n_pix, PIX, dtype=f64).numpy()
    X, Y = np.meshgrid(c, c)
    r = np.hypot(X, Y)
    mean_r = (img * r).sum() / img.sum()
    assert mean_r == pytest.approx(theta_e, abs=0.5 * PIX)
    ring = np.abs(r - theta_e) < 1.5 * PIX
    assert img[ring].sum() / img.sum() > 0.9
    # azimuthally uniform: four quadrants carry equal flux
    quads = [img[(X > 0) & (Y > 0)].sum(), img[(X < 0) & (Y > 0)].sum(), img[(X < 0) & (Y < 0)].sum(), img[(X > 0) & (Y < 0)].sum()]
    assert max(quads) / min(quads) < 1.02


def test_magnification_of_offset_point_source_matches_sis_formula():
    """Two images of a compact source at beta < theta_E: mu = 2 theta_E / |beta| for a point
    (SIS); for the finite source it is that averaged over the source light."""
    theta_e, beta, reff = 1.5, 0.5, 0.08
    one = lambda v: t([v])  # noqa: E731
    params = dict(theta_e_arcsec=one(theta_e), lens_q=one(1.0), lens_phi_rad=one(0.0), shear_g1=one(0.0), shear_g2=one(0.0),
                  src_x_arcsec=one(beta), src_y_arcsec=one(0.0), src_reff_arcsec=one(reff), src_n=one(1.0), src_q=one(1.0), src_phi_rad=one(0.0))
    img = render_profile(lensed_sersic, params, n_pix=64, pixel_scale_arcsec=PIX, oversample=8, threshold=0.0)[0].numpy()
    g = np.linspace(-0.45, 0.45, 901)
    bx, by = np.meshgrid(beta + g, g)
    sb = sersic_surface_brightness(t(bx), t(by), t(1.0), t(reff), t(1.0), t(1.0), t(0.0), t(beta), t(0.0)).numpy()
    expected = (sb * 2 * theta_e / np.hypot(bx, by)).sum() / sb.sum()
    assert expected == pytest.approx(2 * theta_e / beta, rel=0.05)
    assert img.sum() == pytest.approx(expected, rel=0.01)
