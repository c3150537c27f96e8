"""The host centre measured on the stamp, and radial profiles about it: a host anywhere near the
stamp centre is removed without the dipole a stamp-centred profile leaves, and the result moves
with the stamp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dhs.finder.loader import augment_shift, subtract_radial_profile
from dhs.simulate.psf import PSFSpectra
from dhs.simulate.render import render_profile, unlensed_sersic
from dhs.stamps.centring import fourier_shift, measure_centres, radial_profile_about, subtract_radial_profile_about_host

PIX, N = 0.262, 64


def hosts(offsets_px: np.ndarray, reff=1.2, n=4.0, q=1.0, flux=20.0, fwhm=1.3, noise=0.0, seed=0) -> torch.Tensor:
    """(B, 3, N, N) round (or elliptical) de Vaucouleurs hosts at sub-pixel offsets (dy, dx) px,
    PSF-convolved, optionally with Gaussian noise."""
    B = len(offsets_px)
    t = lambda v: torch.full((B,), float(v), dtype=torch.float64)  # noqa: E731
    p = {"reff_arcsec": t(reff), "n": t(n), "q": t(q), "phi_rad": t(0.3),
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


@pytest.mark.parametrize("kind", ["lensed arc"])
def test_an_arc_survives_the_host_centred_subtraction(kind):
    from dhs.simulate.render import lensed_sersic

    off = np.array([[0.4, -0.6]])
    host = hosts(off, flux=5.0)
    one = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    p = {"theta_e_arcsec": one(1.5), "lens_q": one(0.8), "lens_phi_rad": one(0.2), "shear_g1": one(0.0), "shear_g2": one(0.0),
         "src_x_arcsec": one(0.9), "src_y_arcsec": one(0.3), "src_reff_arcsec": one(0.2), "src_n": one(1.0), "src_q": one(0.8),
         "src_phi_rad": one(0.0), "lens_x_arcsec": one(off[0, 1] * PIX), "lens_y_arcsec": one(off[0, 0] * PIX)}
    unit = render_profile(lensed_sersic, p, n_pix=N, pixel_scale_arcsec=PIX, oversample=4)
    arc = PSFSpectra.from_fwhm(torch.full((1, 3), 1.3, dtype=torch.float64), N, PIX).convolve(unit, torch.full((1, 3), 2.0, dtype=torch.float64)).float()
    res = subtract_radial_profile_about_host(host + arc)
    on_arc = arc[0, 1] > 0.3 * arc[0, 1].max()
    assert float(res[0, 1][on_arc].sum() / arc[0, 1][on_arc].sum()) > 0.8
