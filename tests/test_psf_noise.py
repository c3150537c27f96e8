"""PSF kernels, centred convolution and the depth-to-noise conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dhs.simulate.noise import sky_sigma_nmgy
from dhs.simulate.psf import convolve_centered, kernel_size_px, psf_kernels

PIX = 0.262


def centroid(img: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(img.shape)
    return float((img * rows).sum() / img.sum()), float((img * cols).sum() / img.sum())


@pytest.mark.parametrize("model", ["moffat", "gaussian"])
@pytest.mark.parametrize("n_pix", [64, 96])
def test_impulse_response_is_centred_and_flux_preserving(model, n_pix):
    """The earlier pipeline's FFT convolution moved arcs by (kernel_half_width - 32) px and broke
    for FWHM >= 1.37 arcsec; every FWHM in 0.6-3.0 arcsec must map a pixel onto itself."""
    fwhms = np.arange(0.6, 3.0001, 0.1)
    k = kernel_size_px(float(fwhms.max()), PIX, max_size=2 * n_pix - 1)
    kernels = psf_kernels(torch.tensor(fwhms, dtype=torch.float64), k, PIX, model=model)
    np.testing.assert_allclose(kernels.sum(dim=(-1, -2)).numpy(), 1.0, atol=1e-12)
    for (r0, c0) in [(n_pix // 2, n_pix // 2), (n_pix // 2 - 1, n_pix // 2 - 1), (27, 38)]:
        imp = torch.zeros(len(fwhms), n_pix, n_pix, dtype=torch.float64)
        imp[:, r0, c0] = 1.0
        out = convolve_centered(imp, kernels).numpy()
        # the stamp edge truncates the kernel wings unevenly off-centre; measure the centroid in
        # the largest box symmetric about the impulse so only the convolution is tested
        h = min(r0, c0, n_pix - 1 - r0, n_pix - 1 - c0)
        for i, f in enumerate(fwhms):
            r, c = centroid(out[i][r0 - h : r0 + h + 1, c0 - h : c0 + h + 1])
            r, c = r + r0 - h, c + c0 - h
            assert abs(r - r0) < 0.01 and abs(c - c0) < 0.01, f"FWHM {f:.1f}: centroid ({r:.3f}, {c:.3f}) for impulse at ({r0}, {c0})"
            assert out[i].argmax() == r0 * n_pix + c0
        # away from the edges nothing is lost
        if 20 < r0 < n_pix - 20:
            np.testing.assert_allclose(out.sum(axis=(1, 2))[fwhms < 1.6], 1.0, atol=5e-3)


@pytest.mark.parametrize("model", ["moffat", "gaussian"])
@pytest.mark.parametrize("fwhm", [0.9, 1.31, 2.0])
def test_kernel_has_the_requested_fwhm(model, fwhm):
    """Half maximum crossing of a finely sampled kernel sits at FWHM/2 (checks alpha(beta) and sigma)."""
    fine = 0.262 / 8
    ker = psf_kernels(torch.tensor([fwhm], dtype=torch.float64), 401, fine, model=model, oversample=1)[0].numpy()
    profile = ker[200, 200:]
    half = profile[0] / 2
    i = np.flatnonzero(profile < half)[0]
    # linear interpolation of the crossing
    x = (i - 1) + (profile[i - 1] - half) / (profile[i - 1] - profile[i])
    assert 2 * x * fine == pytest.approx(fwhm, rel=0.01)


def test_kernel_rejects_even_size_and_unknown_model():
    with pytest.raises(ValueError, match="odd"):
        psf_kernels(torch.tensor([1.0]), 10, PIX)
    with pytest.raises(ValueError, match="moffat"):
        psf_kernels(torch.tensor([1.0]), 11, PIX, model="airy")


def test_sky_sigma_formula_values():
    """sigma = F5 / (5 sqrt(4 pi s^2)); DR10 South r-band depths (psfdepth_r quartiles 24.21 /
    24.46 / 25.07 at the median seeing) give 0.002-0.008 nMgy per pixel."""
    m5, f = 24.46, 1.31
    s = f / 2.3548 / PIX
    expected = 10 ** (-0.4 * (m5 - 22.5)) / (5 * math.sqrt(4 * math.pi * s * s))
    assert sky_sigma_nmgy(m5, f) == pytest.approx(expected, rel=1e-3)
    quartiles = sky_sigma_nmgy(np.array([24.21, 24.46, 25.07]), 1.31)
    assert np.all((quartiles > 0.002) & (quartiles < 0.008))
    # shallower depth: more noise; for a fixed point-source depth, a wider PSF spreads the same
    # S/N over more pixels, so each pixel is less noisy
    assert sky_sigma_nmgy(23.0, 1.31) > sky_sigma_nmgy(24.0, 1.31)
    assert sky_sigma_nmgy(24.0, 1.0) > sky_sigma_nmgy(24.0, 1.5)
