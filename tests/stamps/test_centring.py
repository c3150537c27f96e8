"""The host centre measured on the stamp, and radial profiles about it: a host anywhere near the
stamp centre is removed without the dipole a stamp-centred profile leaves, and the result moves
with the stamp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dhs.models.loader import augment_shift, subtract_radial_profile
from dhs.simulate.psf import PSFSpectra
from dhs.simulate.render import render_profile, unlensed_sersic
from dhs.imaging.centring import (SHAPE_PHI_SIGMA_PX, _smooth, elliptical_profile_about, fourier_shift, host_shape_profile, host_shapes,
                                 measure_centres, radial_profile_about, shape_node_radii_px, subtract_radial_profile_about_host)

PIX, N = 0.262, 64


def hosts(offsets_px: np.ndarray, reff=1.2, n=4.0, q=1.0, flux=20.0, fwhm=1.3, noise=0.0, seed=0, phi=0.3) -> torch.Tensor:
    """(B, 3, N, N) round (or elliptical) de Vaucouleurs hosts at sub-pixel offsets (dy, dx) px,
    PSF-convolved, optionally with Gaussian noise."""
    B = len(offsets_px)
    t = lambda v: torch.full((B,), float(v), dtype=torch.float64)  # noqa: E731
    p = {"reff_arcsec": t(reff), "n": t(n), "q": t(q), "phi_rad": t(phi),
         "x_arcsec": torch.tensor(offsets_px[:, 1] * PIX), "y_arcsec": torch.tensor(offsets_px[:, 0] * PIX)}
    unit = render_profile(unlensed_sersic, p, n_pix=N, pixel_scale_arcsec=PIX, oversample=4, threshold=0.05)
    img = PSFSpectra.from_fwhm(torch.full((B, 3), fwhm, dtype=torch.float64), N, PIX).convolve(unit, torch.full((B, 3), flux, dtype=torch.float64))
    if noise:
        img = img + noise * torch.from_numpy(np.random.default_rng(seed).standard_normal(img.shape))
    return img.float()


def test_measured_centres_recover_sub_pixel_offsets():
    rng = np.random.default_rng(1)
    off = rng.uniform(-1.5, 1.5, (64, 2))
    c = measure_centres(hosts(off, noise=0.005)).numpy()
    err = np.hypot(*(c - off).T)
    assert np.median(err) < 0.05 and err.max() < 0.2


def test_profile_about_the_host_removes_an_off_centre_host_without_a_dipole():
    off = np.array([[0.5, 0.5], [0.0, 1.0], [-0.3, 0.8]])
    x = hosts(off)
    peak = float(x.max())
    about_host = subtract_radial_profile_about_host(x)
    about_stamp = subtract_radial_profile(x)
    # what is left is the linear interpolation of a cuspy profile between annuli, < 5 % of the peak
    assert float(about_host.abs().max()) < 0.05 * peak
    # about the stamp centre, half a pixel off leaves a dipole: 5x the peak residual, 10x the rms
    assert float(about_stamp.abs().max()) > 5 * float(about_host.abs().max())
    assert float(about_stamp.pow(2).mean().sqrt()) > 10 * float(about_host.pow(2).mean().sqrt())


def test_subtraction_moves_with_the_stamp():
    """Shifting a stamp and then subtracting equals subtracting and then shifting (to the
    interpolation and centroid error), which is what makes the finder's input shift invariant."""
    off = np.random.default_rng(2).uniform(-0.5, 0.5, (16, 2))
    x = hosts(off, q=0.7, noise=0.01, seed=3)
    d = torch.tensor([[1.0, -1.0]]).expand(16, 2)
    a = subtract_radial_profile_about_host(fourier_shift(x, d))
    b = fourier_shift(subtract_radial_profile_about_host(x), d)
    inner = slice(8, -8)
    diff = (a - b)[..., inner, inner].abs().max()
    assert float(diff) < 0.1 * float(x.max()) * 0.2
    # the profile itself is centred where the host is
    prof = radial_profile_about(x, measure_centres(x))
    assert prof.shape == x.shape


def test_fourier_shift_by_whole_pixels_is_a_roll():
    x = torch.randn(2, 3, N, N)
    np.testing.assert_allclose(fourier_shift(x, torch.tensor([[2.0, -3.0], [2.0, -3.0]])).numpy(),
                               torch.roll(x, (2, -3), dims=(-2, -1)).numpy(), atol=1e-5)


def test_shift_augmentation_rolls_each_stamp_by_whole_pixels_within_the_bound():
    x = torch.arange(4 * 1 * 8 * 8, dtype=torch.float32).reshape(4, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    y = augment_shift(x, 2, g)
    for i in range(4):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(torch.roll(x[i], (dy, dx), dims=(-2, -1)), y[i])]
        assert len(found) == 1
    assert torch.equal(augment_shift(x, 0, g), x)
    assert math.isclose(float(y.sum()), float(x.sum()))


def test_elliptical_annuli_remove_an_elliptical_host_that_circular_ones_leave_as_four_lobes():
    off = np.random.default_rng(4).uniform(-0.5, 0.5, (4, 2))
    for q, phi in ((0.7, 0.3), (0.5, -1.0), (0.35, 2.0)):
        x = hosts(off, q=q, phi=phi, reff=1.5)
        peak = float(x.max())
        circ = subtract_radial_profile_about_host(x, shape="circle")
        ell = subtract_radial_profile_about_host(x, shape="ellipse")
        # outside the core, where arcs are: the four-lobed residual of circular annuli is gone
        r = torch.hypot(*torch.meshgrid(torch.arange(N) - 31.5, torch.arange(N) - 31.5, indexing="ij"))
        ring = (r > 3) & (r < 16)
        assert float(ell[..., ring].abs().mean()) < 0.4 * float(circ[..., ring].abs().mean()), q
        assert float(ell.abs().max()) < 0.07 * peak
        # the shape moments find the major axis (the PSF rounds the measured axis ratio towards 1)
        c = measure_centres(x)
        det = fourier_shift(x, -c).sum(dim=1)
        qm, pm = host_shapes(det, SHAPE_PHI_SIGMA_PX)
        d = (pm - phi + math.pi / 2) % math.pi - math.pi / 2
        assert float(d.abs().max()) < 0.05 and bool((qm > q - 0.02).all() and (qm < 1.0).all())
    # a round host stays round, and noise alone keeps q = 1 from the round start
    assert float(host_shapes(fourier_shift(hosts(off), -measure_centres(hosts(off))).sum(dim=1))[0].min()) > 0.97
    assert host_shapes(torch.zeros(2, N, N))[0].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="circle or ellipse"):
        subtract_radial_profile_about_host(hosts(off), shape="square")


def test_axis_ratio_by_radius_and_asinh_interpolation_remove_a_psf_rounded_compact_host():
    """A compact, flattened early type seen through a broad PSF has round inner isophotes and its
    own axis ratio outside: one axis ratio for all radii (the outer weight's) leaves a misfit at the
    radii of arcs, and a straight line between the annuli's nodes of its steep profile a negative
    ring; the axis ratio measured at several radii and the asinh interpolation take both out."""
    off = np.random.default_rng(5).uniform(-0.5, 0.5, (6, 2))
    x = hosts(off, q=0.55, phi=0.7, reff=0.8, fwhm=1.4, flux=400.0, noise=0.02, seed=6) / 0.02   # in noise units
    c = measure_centres(x)
    det = _smooth(fourier_shift(x, -c).sum(dim=1))
    q_r, phi = host_shape_profile(det)
    # the PSF rounds the core: the measured axis ratio falls outwards towards the host's own
    assert bool((q_r[:, 0] > q_r[:, -2] + 0.1).all()) and bool((q_r[:, -1] < 0.8).all())
    assert len(shape_node_radii_px()) == q_r.shape[1]
    r = torch.hypot(*torch.meshgrid(torch.arange(N) - 31.5, torch.arange(N) - 31.5, indexing="ij"))
    arcs = (r >= 4) & (r < 8)   # 1-2 arcsec
    by_radius = x - elliptical_profile_about(x, c, q_r, phi)
    one_q = x - elliptical_profile_about(x, c, q_r[:, -2], phi)
    linear = x - elliptical_profile_about(x, c, q_r, phi, softening=1e9)   # asinh(p / s) ~ p / s: linear
    rms = lambda v: float(v[..., arcs].pow(2).mean().sqrt())   # noqa: E731
    assert rms(by_radius) < 0.5 * rms(one_q), (rms(by_radius), rms(one_q))
    assert float(linear[..., arcs].median()) < -0.3 and abs(float(by_radius[..., arcs].median())) < 0.5 * abs(float(linear[..., arcs].median()))
    assert rms(by_radius) < 2.0   # the noise is 1


@pytest.mark.parametrize("shape", ["circle", "ellipse"])
def test_an_arc_survives_the_host_centred_subtraction(shape):
    from dhs.simulate.render import lensed_sersic

    off = np.array([[0.4, -0.6]])
    host = hosts(off, flux=5.0)
    one = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    p = {"theta_e_arcsec": one(1.5), "lens_q": one(0.8), "lens_phi_rad": one(0.2), "shear_g1": one(0.0), "shear_g2": one(0.0),
         "src_x_arcsec": one(0.9), "src_y_arcsec": one(0.3), "src_reff_arcsec": one(0.2), "src_n": one(1.0), "src_q": one(0.8),
         "src_phi_rad": one(0.0), "lens_x_arcsec": one(off[0, 1] * PIX), "lens_y_arcsec": one(off[0, 0] * PIX)}
    unit = render_profile(lensed_sersic, p, n_pix=N, pixel_scale_arcsec=PIX, oversample=4)
    arc = PSFSpectra.from_fwhm(torch.full((1, 3), 1.3, dtype=torch.float64), N, PIX).convolve(unit, torch.full((1, 3), 2.0, dtype=torch.float64)).float()
    res = subtract_radial_profile_about_host(host + arc, shape=shape)
    on_arc = arc[0, 1] > 0.3 * arc[0, 1].max()
    assert float(res[0, 1][on_arc].sum() / arc[0, 1][on_arc].sum()) > 0.8


def test_residual_noise_scale_puts_an_arc_at_its_snr_on_faint_and_bright_hosts():
    """The raw annulus MAD of a large bright host is mostly the host's own gradient: without the
    residual rescaling its stamp comes out scaled down and its noise far below 1."""
    from dhs.models.loader import NormConfig, normalize

    off = np.zeros((2, 2))
    sigma = 0.01
    faint = hosts(off[:1], flux=2.0, reff=0.8, noise=sigma, seed=5)
    bright = hosts(off[:1], flux=4000.0, reff=6.0, noise=sigma, seed=5)
    x = torch.cat([faint, bright])
    base = dict(radial_profile_subtract=True, radial_profile_shape="ellipse")
    plain = normalize(x, NormConfig.from_params(dict(**base)))
    scaled = normalize(x, NormConfig.from_params(dict(**base, residual_noise_scale=True)))
    r = torch.hypot(*torch.meshgrid(torch.arange(N) - 31.5, torch.arange(N) - 31.5, indexing="ij"))
    outer = r > 22
    noise = lambda im: float((im[..., outer] - im[..., outer].median()).abs().median() * 1.4826)  # noqa: E731
    assert noise(plain[0]) == pytest.approx(1.0, rel=0.15)
    assert noise(plain[1]) < 0.5             # the bright host's gradient inflated the scale
    assert noise(scaled[0]) == pytest.approx(1.0, rel=0.1) and noise(scaled[1]) == pytest.approx(1.0, rel=0.1)
