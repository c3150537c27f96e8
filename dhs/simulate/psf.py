"""Point-spread functions sampled on the pixel grid, and centred, flux-preserving convolution.

Kernels are odd-sized, centred on the middle pixel, sampled with sub-pixel oversampling
(pixel-integrated) and normalised to sum exactly 1. Convolution is a full linear convolution
by FFT cropped back to the input grid, so an impulse at pixel (i, j) comes out centred at
(i, j) for every kernel size (the earlier pipeline's FFT convolution shifted arcs by
``kernel_half_width - 32`` pixels, differently per band).

Moffat: I(r) ~ (1 + (r/alpha)^2)^(-beta), alpha = FWHM / (2 sqrt(2^(1/beta) - 1)), beta 3.5.
Gaussian: sigma = FWHM / 2.3548.
"""

from __future__ import annotations

import math

import torch

MOFFAT_BETA = 3.5
GAUSS_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
PSF_MODELS = ("moffat", "gaussian")


def kernel_size_px(fwhm_max_arcsec: float, pixel_scale_arcsec: float, fwhm_extent: float = 3.0, max_size: int | None = None) -> int:
    """Odd kernel width covering +-``fwhm_extent`` FWHM.

    A Moffat beta 3.5 puts 0.5% of its flux beyond 3 FWHM; the kernel is renormalised to 1, so
    that flux is kept, only redistributed within the kernel.
    """
    half = int(math.ceil(fwhm_extent * fwhm_max_arcsec / pixel_scale_arcsec - 1e-9))
    size = 2 * half + 1
    if max_size is not None and size > max_size:
        size = max_size if max_size % 2 == 1 else max_size - 1
    return size


def psf_kernels(
    fwhm_arcsec: torch.Tensor,
    size_px: int,
    pixel_scale_arcsec: float,
    model: str = "moffat",
    beta: float = MOFFAT_BETA,
    oversample: int = 2,
    fwhm_extent: float | None = None,
) -> torch.Tensor:
    """Kernels of shape fwhm.shape + (size_px, size_px), each summing to 1.

    ``fwhm_arcsec`` may have any shape (e.g. (B, 3) for per-stamp, per-band FWHM). With
    ``fwhm_extent`` each kernel is cut to its own +-``fwhm_extent`` FWHM box before
    normalising, so a stamp's PSF does not depend on which other stamps share its batch.
    """
    if model not in PSF_MODELS:
        raise ValueError(f"psf model must be one of {PSF_MODELS}, got {model!r}")
    if size_px % 2 != 1:
        raise ValueError(f"PSF kernel size must be odd to have a centre pixel, got {size_px}")
    dev, dt = fwhm_arcsec.device, fwhm_arcsec.dtype
    half = size_px // 2
    # sub-pixel sample offsets, symmetric about each pixel centre
    sub = (torch.arange(oversample, device=dev, dtype=dt) + 0.5) / oversample - 0.5
    pix = torch.arange(-half, half + 1, device=dev, dtype=dt)
    coords = (pix[:, None] + sub[None, :]).reshape(-1) * pixel_scale_arcsec
    r2 = coords[:, None] ** 2 + coords[None, :] ** 2  # (S*o, S*o)
    f = fwhm_arcsec[..., None, None]
    if model == "moffat":
        alpha = f / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
        img = (1.0 + r2 / (alpha * alpha)) ** (-beta)
    else:
        sigma = f / GAUSS_FWHM_PER_SIGMA
        img = torch.exp(-0.5 * r2 / (sigma * sigma))
    lead = img.shape[:-2]
    img = img.reshape(*lead, size_px, oversample, size_px, oversample).sum(dim=(-1, -3))
    if fwhm_extent is not None:
        # in float64 with a tolerance, so float32 and float64 runs cut the same box as kernel_size_px
        own_half = torch.ceil(fwhm_extent * fwhm_arcsec.double() / pixel_scale_arcsec - 1e-9).to(fwhm_arcsec.dtype)[..., None, None]
        inside = (pix.abs()[:, None] <= own_half) & (pix.abs()[None, :] <= own_half)
        img = img * inside
    return img / img.sum(dim=(-1, -2), keepdim=True)


def convolve_centered(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each image (..., H, W) with its own odd kernel (..., K, K); same-size output.

    Full linear convolution via real FFTs (no wrap-around), cropped at K//2 so the kernel
    centre maps a pixel onto itself. Flux that the kernel spreads beyond the stamp edge is lost,
    as it is for a real cutout.
    """
    h, w = images.shape[-2:]
    k = kernels.shape[-1]
    if kernels.shape[-2] != k or k % 2 != 1:
        raise ValueError(f"kernels must be square and odd-sized, got {tuple(kernels.shape[-2:])}")
    fh, fw = h + k - 1, w + k - 1
    # sizes with small prime factors keep the FFT fast
    fh, fw = _good_fft_size(fh), _good_fft_size(fw)
    spec = torch.fft.rfft2(images, s=(fh, fw)) * torch.fft.rfft2(kernels, s=(fh, fw))
    full = torch.fft.irfft2(spec, s=(fh, fw))
    c = k // 2
    return full[..., c : c + h, c : c + w]


class KernelSpectra:
    """FFTs of a (B, C, K, K) kernel stack, padded for centred linear convolution of N x N images.

    Computing them once lets several components (host, arc) share the kernel transform.
    """

    def __init__(self, kernels: torch.Tensor, n_pix: int):
        k = kernels.shape[-1]
        if kernels.shape[-2] != k or k % 2 != 1:
            raise ValueError(f"kernels must be square and odd-sized, got {tuple(kernels.shape[-2:])}")
        self.n_pix, self.k = n_pix, k
        self.fft_size = _good_fft_size(n_pix + k - 1)
        self.spectra = torch.fft.rfft2(kernels, s=(self.fft_size, self.fft_size))

    def __getitem__(self, idx) -> "KernelSpectra":
        out = object.__new__(KernelSpectra)
        out.n_pix, out.k, out.fft_size, out.spectra = self.n_pix, self.k, self.fft_size, self.spectra[idx]
        return out

    def convolve(self, unit_images: torch.Tensor, flux_per_band: torch.Tensor) -> torch.Tensor:
        """(B, N, N) images times (B, C) scalars, each band convolved: (B, C, N, N)."""
        s = (self.fft_size, self.fft_size)
        spec = torch.fft.rfft2(unit_images, s=s)[:, None] * self.spectra
        spec = spec * flux_per_band[:, :, None, None].to(spec.real.dtype)
        full = torch.fft.irfft2(spec, s=s)
        c, n = self.k // 2, self.n_pix
        return full[..., c : c + n, c : c + n]


def _good_fft_size(n: int) -> int:
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1
