"""Point-spread functions on the stamp's periodic pixel grid, and circular convolution by FFT.

Kernel: the PSF *sampled* at the pixel offsets of the N x N stamp grid, offsets taken
periodically (index i lies min(i, N - i) pixels from the kernel centre at index 0), normalised
to sum exactly 1. Sampled, not pixel-integrated: the rendered image already holds the
pixel-integrated surface brightness, so convolving it with the sampled PSF gives the observed
pixel values, and a point source comes out as the PSF with the requested FWHM. Integrating the
kernel over the pixel as well would blur by the pixel twice (a star ~1% wider than its FWHM).

Convolution is circular on the stamp: one real FFT of the image, a product per band, one
inverse FFT per band (the kernel is symmetric, so its transform is real).
- Centred: an impulse at pixel (i, j) comes out centred exactly on (i, j) for every FWHM,
  band and stamp size (the earlier pipeline's padded FFT shifted arcs by
  ``kernel_half_width - 32`` pixels, differently per band; tests/simulate/test_psf_noise.py).
- Flux-preserving: the output sums to the input's sum, exactly.
- What circularity costs: light that the PSF carries across a stamp edge re-enters at the
  opposite edge instead of leaving. Arcs lie well inside the stamp: over the default population
  the wrapped light is ~4e-5 of an arc's flux (median), below 1e-3 of the flux and of the peak
  pixel for 99 % of the arcs, and below 1e-2 for the largest Einstein radii (~3.5 arcsec).
  Hosts fill the stamp, so the simulator renders them ``host_pad_px`` (16) beyond each edge,
  convolves on that grid and crops: the light scattered in from beyond the edge is then present
  and the wrap lands in the cropped margin. Against a host rendered on a 256 px grid, the edge
  pixels are within 0.1 sky sigma even for the brightest hosts (several times worse without the
  margin, and for the zero-padded linear convolution of a stamp-sized render that the earlier
  version used). Tests in tests/simulate/test_psf_noise.py hold these numbers. In exchange the arc's
  FFTs are N x N (a power of two at 64 px), not padded to N + kernel width: ~4x cheaper.

Moffat: I(r) ~ (1 + (r/alpha)^2)^(-beta), alpha = FWHM / (2 sqrt(2^(1/beta) - 1)), beta 3.5.
Gaussian: sigma = FWHM / 2.3548.
"""

from __future__ import annotations

import math

import torch

from dhs.params.schema import PSF_MODELS
from dhs.simulate.fused import fused

MOFFAT_BETA = 3.5
GAUSS_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def periodic_offsets_px(n_pix: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """(N,) distance in pixels of index i from index 0 on a periodic axis: min(i, N - i)."""
    i = torch.arange(n_pix, device=device)
    return torch.minimum(i, n_pix - i).to(dtype)


@fused
def _moffat_unnormalised(r2: torch.Tensor, alpha2: torch.Tensor, beta: float) -> torch.Tensor:
    # (1 + r^2/alpha^2)^(-beta) as exp(-beta log1p(.)): pow costs twice as much when fused
    return torch.exp(-beta * torch.log1p(r2 / alpha2))


@fused
def _gaussian_unnormalised(r2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * r2 / sigma2)


def _check(fwhm_arcsec: torch.Tensor, n_pix: int, model: str, beta: float) -> None:
    if model not in PSF_MODELS:
        raise ValueError(f"psf model must be one of {PSF_MODELS}, got {model!r}")
    if int(n_pix) < 3:
        raise ValueError(f"PSF grid must be at least 3 x 3 pixels, got {n_pix}")
    if not (beta > 1.0):
        raise ValueError(f"Moffat beta must be > 1 for a finite flux, got {beta}")
    bad = ~(torch.isfinite(fwhm_arcsec) & (fwhm_arcsec > 0))
    if bool(bad.any()):
        raise ValueError(f"PSF FWHM must be finite and > 0 arcsec; got {fwhm_arcsec[bad][:5].tolist()}")


def _quadrant(fwhm_arcsec: torch.Tensor, n_pix: int, pixel_scale_arcsec: float, model: str, beta: float) -> torch.Tensor:
    """The kernel at the distinct offsets (0..N//2) x (0..N//2), normalised so that the full
    periodic kernel sums to 1. The kernel is symmetric in both axes, so this quarter of the
    grid holds all of it: offset k occurs ``multiplicity(k)`` times along an axis."""
    _check(fwhm_arcsec, n_pix, model, beta)
    dev, dt = fwhm_arcsec.device, fwhm_arcsec.dtype
    d = torch.arange(n_pix // 2 + 1, device=dev, dtype=dt) * pixel_scale_arcsec
    r2 = d[:, None] ** 2 + d[None, :] ** 2
    f = fwhm_arcsec[..., None, None]
    if model == "moffat":
        alpha = f / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        quad = _moffat_unnormalised(r2, alpha * alpha, float(beta))
    else:
        sigma = f / GAUSS_FWHM_PER_SIGMA
        quad = _gaussian_unnormalised(r2, sigma * sigma)
    w = _multiplicity(n_pix, dev, dt)
    return quad / (quad * w[:, None] * w[None, :]).sum(dim=(-1, -2), keepdim=True)


def _multiplicity(n_pix: int, device, dtype) -> torch.Tensor:
    """(N//2 + 1,) how many indices of a periodic N-axis lie at distance k = 0..N//2."""
    return torch.bincount(periodic_offsets_px(n_pix, device, torch.long), minlength=n_pix // 2 + 1).to(dtype)


def _unfold(quad: torch.Tensor, n_pix: int, dim: int) -> torch.Tensor:
    """Offsets 0..N//2 along ``dim`` to the periodic axis 0..N-1 (index i holds offset min(i, N-i))."""
    h = quad.shape[dim]
    tail = quad.narrow(dim, 1, n_pix - h).flip(dim)
    return torch.cat([quad, tail], dim=dim)


def psf_kernels(
    fwhm_arcsec: torch.Tensor,
    n_pix: int,
    pixel_scale_arcsec: float,
    model: str = "moffat",
    beta: float = MOFFAT_BETA,
) -> torch.Tensor:
    """Periodic kernels of shape fwhm.shape + (N, N), centre at [0, 0], each summing to 1.

    ``fwhm_arcsec`` may have any shape (e.g. (B, 3) for per-stamp, per-band FWHM).
    """
    quad = _quadrant(fwhm_arcsec, n_pix, pixel_scale_arcsec, model, beta)
    return _unfold(_unfold(quad, n_pix, -2), n_pix, -1)


def psf_spectra(
    fwhm_arcsec: torch.Tensor,
    n_pix: int,
    pixel_scale_arcsec: float,
    model: str = "moffat",
    beta: float = MOFFAT_BETA,
) -> torch.Tensor:
    """rfft2 of ``psf_kernels`` (real: fwhm.shape + (N, N//2 + 1)), computed from the quadrant.

    For a kernel symmetric in both axes the DFT is a cosine transform of the quadrant,
    F[k, l] = sum_ij w_i w_j K[i, j] cos(2 pi k i / N) cos(2 pi l j / N), i.e. two small
    matrix products: ~10x cheaper than sampling the whole grid and running an FFT.
    """
    quad = _quadrant(fwhm_arcsec, n_pix, pixel_scale_arcsec, model, beta)
    dev, dt = quad.device, quad.dtype
    h = n_pix // 2 + 1
    k = torch.arange(h, device=dev, dtype=torch.float64)
    basis = (torch.cos(2.0 * math.pi * k[:, None] * k[None, :] / n_pix) * _multiplicity(n_pix, dev, torch.float64)).to(dt)
    spec = basis @ quad @ basis.T  # (..., h, h): rows k = 0..N//2, columns l = 0..N//2
    return _unfold(spec, n_pix, -2)


def centred_kernel(kernels: torch.Tensor) -> torch.Tensor:
    """The periodic kernels (..., N, N) as odd-sized kernels with the centre in the middle pixel
    (N - 1 wide for even N: the row and column at distance N/2 are dropped), for display and
    for codes that take a conventional kernel (lenstronomy's 'PIXEL' PSF)."""
    n = kernels.shape[-1]
    out = torch.roll(kernels, shifts=(n // 2, n // 2), dims=(-2, -1))
    return out[..., 1:, 1:] if n % 2 == 0 else out


def convolve_periodic(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Circular convolution of images (..., N, N) with periodic kernels (..., N, N)."""
    if images.shape[-2:] != kernels.shape[-2:]:
        raise ValueError(f"image {tuple(images.shape[-2:])} and kernel {tuple(kernels.shape[-2:])} grids differ")
    n = images.shape[-1]
    spec = torch.fft.rfft2(images) * torch.fft.rfft2(kernels).real.to(images.dtype)
    return torch.fft.irfft2(spec, s=(n, n))


class PSFSpectra:
    """Real transforms (B, C, N, N//2 + 1) of a stack of periodic kernels: computed once, they
    serve every component (host, arc) convolved with the same PSFs."""

    def __init__(self, spectra: torch.Tensor, n_pix: int):
        if spectra.shape[-1] != n_pix // 2 + 1 or spectra.shape[-2] != n_pix:
            raise ValueError(f"spectra of shape {tuple(spectra.shape)} do not belong to an {n_pix} x {n_pix} grid")
        self.spectra, self.n_pix = spectra, n_pix

    @classmethod
    def from_kernels(cls, kernels: torch.Tensor) -> "PSFSpectra":
        return cls(torch.fft.rfft2(kernels).real.contiguous(), kernels.shape[-1])

    @classmethod
    def from_fwhm(cls, fwhm_arcsec: torch.Tensor, n_pix: int, pixel_scale_arcsec: float, model: str = "moffat",
                  beta: float = MOFFAT_BETA) -> "PSFSpectra":
        return cls(psf_spectra(fwhm_arcsec, n_pix, pixel_scale_arcsec, model=model, beta=beta), n_pix)

    def __getitem__(self, idx) -> "PSFSpectra":
        return PSFSpectra(self.spectra[idx], self.n_pix)

    def convolve(self, unit_images: torch.Tensor, flux_per_band: torch.Tensor) -> torch.Tensor:
        """(B, N, N) images times (B, C) scalars, each band convolved: (B, C, N, N)."""
        if unit_images.shape[-1] != self.n_pix:
            raise ValueError(f"images are {unit_images.shape[-1]} px wide but the PSF grid is {self.n_pix}")
        weights = self.spectra * flux_per_band[:, :, None, None].to(self.spectra.dtype)
        spec = torch.fft.rfft2(unit_images)[:, None] * weights
        return torch.fft.irfft2(spec, s=(self.n_pix, self.n_pix))
