"""Where the host is in a stamp, measured from the pixels, and radial profiles about that point.

A cutout centred on a catalogue position puts the galaxy at an arbitrary sub-pixel offset from
the stamp centre, plus the catalogue's centroid error (~0.05-0.2 arcsec). A radial profile taken
about the *stamp* centre then leaves a dipole in the host's core, which a finder reads as a lens
(a one-pixel shift sent 71 % of controls over the FPR-0.01 threshold). So the preprocessing
measures the centre and takes the profile about it:

1. detection image: the sum of the normalised bands, smoothed by a 5-tap binomial filter
   (~ a Gaussian of sigma 1 px) so that single noise pixels do not win;
2. the brightest pixel within ``search_radius_px`` of the stamp centre;
3. sub-pixel refinement by a parabola through that pixel and its neighbours in each axis,
   iterated: the parabola's vertex is biased towards the sampled pixel, so the detection image
   is interpolated (band-limited, as a Fourier shift would) at the estimate and one pixel either
   side and the vertex measured again, twice; for PSF-convolved galaxy cores that leaves
   ~0.01-0.03 px (tests/stamps/test_centring.py).

Radial profile about a centre c: the stamp is shifted by -c in Fourier space (band-limited,
circular: the wrap moves at most a few edge pixels, which the medians ignore), the azimuthal
median per integer-radius annulus is taken with the fixed tables of ``dhs.imaging.geometry``, and the
profile is evaluated at every pixel's radius from c (linear between the annuli's node radii).
A round host at any sub-pixel position then vanishes, and an arc stays.

Everything is batched torch on the device that holds the stamps; no per-stamp Python.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from dhs.imaging.geometry import annulus_table

SEARCH_RADIUS_PX = 5.0
MAD_TO_SIGMA = 1.4826  # robust sigma of a Gaussian from its median absolute deviation
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _smooth(img: torch.Tensor) -> torch.Tensor:
    """(B, H, W) separable 5-tap binomial smoothing with reflected edges."""
    k = torch.tensor(_BINOMIAL, dtype=img.dtype, device=img.device) / 16.0
    x = torch.nn.functional.pad(img[:, None], (2, 2, 2, 2), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, 5))
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 5, 1))
    return x[:, 0]


@lru_cache(maxsize=8)
def _search_mask(size: int, radius_px: float, device: str) -> torch.Tensor:
    c = (size - 1) / 2.0
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")
    return (torch.hypot(yy - c, xx - c) <= radius_px).to(device)


def _peak_and_vertex(det: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brightest pixel (i, j) of each (B, H, W) image inside ``mask``, and the sub-pixel offset of
    the parabola through it and its neighbours in each axis (clamped to +-0.5)."""
    B, H, W = det.shape
    idx = det.masked_fill(~mask, float("-inf")).reshape(B, -1).argmax(dim=1)
    i, j = idx // W, idx % W
    b = torch.arange(B, device=det.device)
    f0 = det[b, i, j]

    def vertex(fm, fp):
        denom = fm - 2.0 * f0 + fp
        off = torch.where(denom < 0, 0.5 * (fm - fp) / denom.clamp(max=-1e-12), torch.zeros_like(f0))
        return off.clamp(-0.5, 0.5)

    return i, j, vertex(det[b, i - 1, j], det[b, i + 1, j]), vertex(det[b, i, j - 1], det[b, i, j + 1])


def _values_at(spec: torch.Tensor, n: int, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Band-limited values at (B, P) fractional pixel positions (y, x) of images whose rfft2 is
    ``spec`` (B, N, N//2 + 1): the trigonometric interpolant, i.e. what a Fourier shift gives, at
    those points only."""
    ky = torch.fft.fftfreq(n, device=spec.device, dtype=torch.float64) * n
    kx = torch.fft.rfftfreq(n, device=spec.device, dtype=torch.float64) * n
    w = torch.full_like(kx, 2.0)  # rfft keeps half the spectrum: the other half is the conjugate
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    ex = torch.exp(2j * math.pi * x.to(torch.float64)[..., None] * kx / n) * w      # (B, P, N//2+1)
    ey = torch.exp(2j * math.pi * y.to(torch.float64)[..., None] * ky / n)          # (B, P, N)
    g = torch.einsum("byk,bpk->bpy", spec.to(torch.complex128), ex)
    return (g * ey).sum(dim=-1).real / (n * n)


def measure_centres(x: torch.Tensor, search_radius_px: float = SEARCH_RADIUS_PX, refine: int = 2) -> torch.Tensor:
    """(B, 2) host centres (dy, dx) in pixels from the stamp centre (N-1)/2, measured on the
    band sum of ``x`` (B, C, N, N) (normalised or nMgy: only the shape of the light matters).

    The parabola's vertex is biased towards the sampled peak by a fraction of the offset, so the
    estimate is refined ``refine`` times: the detection image is interpolated (band-limited) at
    the estimate and one pixel either side of it, and the vertex of those values is added."""
    B, C, H, W = x.shape
    det = _smooth(x.float().sum(dim=1))
    mask = _search_mask(H, float(search_radius_px), str(x.device))
    i, j, dy, dx = _peak_and_vertex(det, mask)
    if refine:
        spec = torch.fft.rfft2(det)
        step = torch.tensor([0.0, -1.0, 1.0], device=x.device, dtype=torch.float64)
        for _ in range(refine):
            cy, cx = i.to(torch.float64) + dy.to(torch.float64), j.to(torch.float64) + dx.to(torch.float64)
            ys = torch.cat([cy[:, None] + step, cy[:, None].expand(B, 2)], dim=1)   # centre, -y, +y, then -x, +x
            xs = torch.cat([cx[:, None].expand(B, 3), cx[:, None] + step[1:]], dim=1)
            v = _values_at(spec, H, ys, xs)
            f0 = v[:, 0]

            def vertex(fm, fp):
                denom = fm - 2.0 * f0 + fp
                return torch.where(denom < 0, 0.5 * (fm - fp) / denom.clamp(max=-1e-12), torch.zeros_like(f0)).clamp(-0.5, 0.5)

            dy = dy + vertex(v[:, 1], v[:, 2]).to(dy.dtype)
            dx = dx + vertex(v[:, 3], v[:, 4]).to(dx.dtype)
    c = (H - 1) / 2.0
    return torch.stack([i.to(det.dtype) + dy - c, j.to(det.dtype) + dx - c], dim=1)


def fourier_shift(x: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """(B, C, N, N) images moved by (dy, dx) pixels per stamp (``shift_px`` (B, 2)), circularly,
    by a phase ramp (band-limited interpolation)."""
    B, C, H, W = x.shape
    fy = torch.fft.fftfreq(H, device=x.device, dtype=torch.float64)
    fx = torch.fft.rfftfreq(W, device=x.device, dtype=torch.float64)
    s = shift_px.to(torch.float64)
    ramp = torch.exp(-2j * math.pi * (s[:, 0, None, None] * fy[None, :, None] + s[:, 1, None, None] * fx[None, None, :]))
    work = torch.float64 if x.dtype == torch.float64 else torch.float32  # float32 noise needs no more
    spec = torch.fft.rfft2(x.to(work)) * ramp[:, None].to(torch.complex128 if work == torch.float64 else torch.complex64)
    return torch.fft.irfft2(spec, s=(H, W)).to(x.dtype)


@lru_cache(maxsize=16)
def _tables(size: int, device: str):
    t = annulus_table(size)
    return (torch.tensor(t.index, device=device), torch.tensor(t.valid, device=device),
            torch.tensor(t.node_radius_px, device=device, dtype=torch.float32))


def radial_profile_about(x: torch.Tensor, centres_px: torch.Tensor) -> torch.Tensor:
    """(B, C, N, N) each band's azimuthal median profile about ``centres_px`` (B, 2) (dy, dx from
    the stamp centre), evaluated at every pixel."""
    B, C, H, W = x.shape
    if H != W:
        raise ValueError(f"radial profiles need square stamps, got {H}x{W}")
    idx, valid, node_r = _tables(H, str(x.device))
    centred = fourier_shift(x, -centres_px)
    vals = centred.reshape(B, C, H * W)[..., idx].masked_fill(~valid, float("nan"))  # (B, C, K, M)
    prof = vals.nanmedian(dim=-1).values  # (B, C, K)
    c = (H - 1) / 2.0
    yy = torch.arange(H, device=x.device, dtype=torch.float32)[None, :, None] - c - centres_px[:, 0, None, None].float()
    xx = torch.arange(W, device=x.device, dtype=torch.float32)[None, None, :] - c - centres_px[:, 1, None, None].float()
    r = torch.sqrt(yy * yy + xx * xx).reshape(B, H * W)
    K = node_r.shape[0]
    lo = (torch.searchsorted(node_r, r.contiguous(), right=True) - 1).clamp(0, K - 2)
    w = ((r - node_r[lo]) / (node_r[lo + 1] - node_r[lo])).clamp(0.0, 1.0).to(x.dtype)
    lo_b = lo[:, None, :].expand(B, C, H * W)
    p_lo = prof.gather(-1, lo_b)
    p_hi = prof.gather(-1, lo_b + 1)
    return (p_lo * (1 - w[:, None]) + p_hi * w[:, None]).reshape(B, C, H, W)


# The axis ratio is measured at several radii: the PSF rounds a host's inner isophotes (on a bright
# compact host q runs from ~0.9 in the core to its own ~0.7 at 3 arcsec), and one axis ratio, or a
# blend of two, left a misfit of several noise units at the radii of arcs (docs/results.md).
SHAPE_SIGMAS_PX = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)   # sizes of the weights of the shape moments
SHAPE_RADIUS_PER_SIGMA = math.sqrt(2.0)   # r^2 exp(-r^2 / 2 sigma^2) peaks at sqrt(2) sigma: the isophote a weight measures
SHAPE_PHI_SIGMA_PX = 8.0      # the major axis from one weight, ~2 arcsec out: a twist is rare, noise in it is not
SHAPE_Q_MIN = 0.3      # flatter estimates are clamped: an LRG is rarely flatter, an arc can pull the moments
PROFILE_SOFTENING = 1.0   # asinh softening of the profile's interpolation, in the units of x (normalised: ~the sky sigma)


def host_shapes(det: torch.Tensor, weight_sigma_px: float = SHAPE_PHI_SIGMA_PX, iterations: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, phi) of the host at the centre of each (B, N, N) detection image: axis ratio b/a and
    major-axis angle (radians, from the +x (column) axis towards +y (row)).

    Second moments under an elliptical Gaussian weight of the current shape and a fixed size
    (``weight_sigma_px``, the geometric mean of its axes), with the weight divided out
    (S_object = (m^-1 - S_weight^-1)^-1, exact for Gaussians), iterated. The weight's size sets
    the isophotes measured: ~1 arcsec out, beyond the PSF-rounded core, inside the radius of most
    arcs. Negative pixels (noise) are dropped from the moments; a stamp without a measurable
    host keeps q = 1."""
    B, H, W = det.shape
    c = (H - 1) / 2.0
    yy = (torch.arange(H, device=det.device, dtype=torch.float32) - c)[None, :, None]
    xx = (torch.arange(W, device=det.device, dtype=torch.float32) - c)[None, None, :]
    img = det.float().clamp_min(0.0)
    s2 = weight_sigma_px ** 2
    q = torch.ones(B, device=det.device)
    phi = torch.zeros(B, device=det.device)
    for _ in range(iterations):
        cs, sn = torch.cos(phi)[:, None, None], torch.sin(phi)[:, None, None]
        xp, yp = xx * cs + yy * sn, -xx * sn + yy * cs
        qq = q[:, None, None]
        # the full-size passes in place and w * xx shared: the same operations in the same order
        # as exp(-0.5 * (qq xp^2 + yp^2 / qq) / s2) * img and (w xx xx, w yy yy, w xx yy), so the
        # same bits, ~15 % sooner (it is most of the removal's time)
        w = (qq * xp).mul_(xp).add_((yp * yp).div_(qq)).mul_(-0.5).div_(s2).exp_().mul_(img)
        tot = w.sum(dim=(1, 2)).clamp_min(1e-12)
        wx = w * xx
        mxx = (wx * xx).sum(dim=(1, 2)) / tot
        myy = (w * yy).mul_(yy).sum(dim=(1, 2)) / tot
        mxy = wx.mul_(yy).sum(dim=(1, 2)) / tot
        # the weight's covariance: s2 / q along the major axis, s2 q along the minor one
        a2, b2 = s2 / q, s2 * q
        c2, sn2, csn = torch.cos(phi) ** 2, torch.sin(phi) ** 2, torch.cos(phi) * torch.sin(phi)
        wxx, wyy, wxy = a2 * c2 + b2 * sn2, a2 * sn2 + b2 * c2, (a2 - b2) * csn
        # S = (m^-1 - Wc^-1)^-1, as 2x2 inverses
        dm = (mxx * myy - mxy * mxy).clamp_min(1e-9)
        dw = (wxx * wyy - wxy * wxy).clamp_min(1e-9)
        ixx, iyy, ixy = myy / dm - wyy / dw, mxx / dm - wxx / dw, -mxy / dm + wxy / dw
        di = ixx * iyy - ixy * ixy
        ok = torch.isfinite(di) & (di > 1e-9) & (ixx > 0) & (iyy > 0) & (tot > 1e-9)
        sxx, syy, sxy = iyy / di, ixx / di, -ixy / di
        tr, dif = sxx + syy, torch.sqrt((sxx - syy) ** 2 + 4 * sxy * sxy)
        q_new = torch.sqrt(((tr - dif) / (tr + dif)).clamp(0.0, 1.0)).clamp(SHAPE_Q_MIN, 1.0)
        phi_new = 0.5 * torch.atan2(2 * sxy, sxx - syy)
        q = torch.where(ok, q_new, q)
        phi = torch.where(ok, phi_new, phi)
    return q, phi


def shape_detection_image(x: torch.Tensor, centres_px: torch.Tensor) -> torch.Tensor:
    """(B, N, N) what the host's shape is measured on: the bands' sum about the host centre, smoothed,
    and its point-symmetric part only: an arc, a companion or a neighbour has no counterpart on the
    far side of the host and would otherwise pull the ellipse onto itself."""
    det = _smooth(fourier_shift(x, -centres_px).sum(dim=1))
    return torch.minimum(det, det.flip(-1, -2))


def host_shape_profile(det: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, phi) of the host at the centre of each (B, N, N) detection image: q (B, S) at the radii
    ``shape_node_radii_px()`` (one per weight of ``SHAPE_SIGMAS_PX``), phi (B,) from the weight of
    ``SHAPE_PHI_SIGMA_PX``. Between the nodes ``elliptical_profile_about`` takes q linear in the
    circular radius, constant beyond them."""
    shapes = [host_shapes(det, s) for s in SHAPE_SIGMAS_PX]
    return torch.stack([q for q, _ in shapes], dim=1), shapes[SHAPE_SIGMAS_PX.index(SHAPE_PHI_SIGMA_PX)][1]


def shape_node_radii_px() -> tuple[float, ...]:
    return tuple(s * SHAPE_RADIUS_PER_SIGMA for s in SHAPE_SIGMAS_PX)


def _axis_ratio_map(q: torch.Tensor, r_circ: torch.Tensor) -> torch.Tensor:
    """q (B,) or (B, S) at ``shape_node_radii_px()`` -> (B, H, W) at each pixel's circular radius."""
    if q.dim() == 1:
        return q.float()[:, None, None].expand_as(r_circ)
    B, H, W = r_circ.shape
    nodes = torch.tensor(shape_node_radii_px(), device=q.device, dtype=torch.float32)
    t = r_circ.reshape(B, H * W).contiguous()
    lo = (torch.searchsorted(nodes, t, right=True) - 1).clamp(0, nodes.numel() - 2)
    w = ((t - nodes[lo]) / (nodes[lo + 1] - nodes[lo])).clamp(0.0, 1.0)
    qf = q.float()
    return (qf.gather(1, lo) * (1 - w) + qf.gather(1, lo + 1) * w).reshape(B, H, W)


def _binned_lower_median(values: torch.Tensor, bins: torch.Tensor, n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower median of ``values`` per bin, count per bin): (R, P) values, (R, P) int64 bin ids."""
    (med,), counts = _binned_quantiles(values, bins, n_bins, (None,))
    return med, counts


def _binned_quantiles(values: torch.Tensor, bins: torch.Tensor, n_bins: int,
                      qs: tuple[float | None, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """([order statistic at each q of ``qs`` per bin], count per bin): (R, P) values, (R, P) int64
    bin ids; q None is the lower median (index (count - 1) // 2), a number the index
    floor(q x (count - 1))."""
    order = values.argsort(dim=1, stable=True)
    b = bins.gather(1, order)
    v = values.gather(1, order)
    order2 = b.argsort(dim=1, stable=True)  # by bin, ascending values inside each bin
    v = v.gather(1, order2)
    counts = torch.zeros(values.shape[0], n_bins, dtype=torch.int64, device=values.device).scatter_add_(1, bins, torch.ones_like(bins))
    start = counts.cumsum(1) - counts
    out = []
    for q in qs:
        off = (counts - 1).clamp_min(0) // 2 if q is None else ((counts - 1).clamp_min(0).double() * q).floor().long()
        out.append(v.gather(1, (start + off).clamp(0, values.shape[1] - 1)))
    return out, counts


# The host level of an annulus from its lower tail: an arc raises the pixels it covers, so the
# 10th and 30th percentiles stay the host's (plus noise) while the arc covers less than ~70 % of the
# annulus, where the median holds only below 50 %. For Gaussian scatter about a level h,
# q30 = h - 0.5244 s and q10 = h - 1.2816 s, so h = q30 + 0.5244 (q30 - q10) / 0.7572.
LOW_QUANTILES = (0.10, 0.30)
_Z10, _Z30 = 1.2816, 0.5244


def low_quantile_level(q10: torch.Tensor, q30: torch.Tensor) -> torch.Tensor:
    """The level of Gaussian scatter from its 10th and 30th percentiles (see LOW_QUANTILES)."""
    return q30 + _Z30 * (q30 - q10) / (_Z10 - _Z30)


def elliptical_profile_about(x: torch.Tensor, centres_px: torch.Tensor, q: torch.Tensor, phi: torch.Tensor,
                             softening: float = PROFILE_SOFTENING, statistic: str = "median") -> torch.Tensor:
    """(B, C, N, N) each band's median profile in elliptical annuli about ``centres_px`` (B, 2),
    evaluated at every pixel: major axis at ``phi`` (B,), axis ratio ``q`` either (B,) or (B, S) at
    the radii ``shape_node_radii_px()`` (``host_shape_profile``; linear in the circular radius
    between them).

    The elliptical radius is r_e = sqrt(q x'^2 + y'^2 / q) (x' along the major axis), so an
    annulus of unit width in r_e keeps the area of a circular one. As for circular annuli: the
    lower median per annulus, placed at the radius of the pixel it picks from a radially
    decreasing profile, so that interpolating between annuli reproduces the profile. Between those
    nodes the profile is interpolated linearly in asinh(profile / softening): a galaxy's profile
    falls roughly exponentially, and a straight line between two nodes of a convex profile lies
    above it (a negative ring of ~1 noise unit at 1-2 arcsec on bright hosts, where arcs are);
    near and below the softening (the sky) asinh is linear. An elliptical host then vanishes,
    where a circular profile leaves a four-lobed residual of the amplitude of an arc."""
    B, C, H, W = x.shape
    if H != W:
        raise ValueError(f"radial profiles need square stamps, got {H}x{W}")
    c = (H - 1) / 2.0
    yy = torch.arange(H, device=x.device, dtype=torch.float32)[None, :, None] - c - centres_px[:, 0, None, None].float()
    xx = torch.arange(W, device=x.device, dtype=torch.float32)[None, None, :] - c - centres_px[:, 1, None, None].float()
    cs, sn = torch.cos(phi.float())[:, None, None], torch.sin(phi.float())[:, None, None]
    xp, yp = xx * cs + yy * sn, -xx * sn + yy * cs
    qq = _axis_ratio_map(q, torch.sqrt(xx * xx + yy * yy))
    r = torch.sqrt(qq * xp * xp + yp * yp / qq).reshape(B, H * W)
    # a bound, not r.max(): no device-to-host sync per batch (empty outer annuli cost nothing)
    n_bins = int(math.ceil((math.hypot(H, W) / 2 + float(SEARCH_RADIUS_PX) + 1) / math.sqrt(SHAPE_Q_MIN))) + 2
    k = r.floor().long().clamp_max(n_bins - 1)
    # node radius of each annulus: the ((count - 1) // 2)-th largest radius in it
    node, counts = _binned_lower_median(-r, k, n_bins)
    node = -node
    empty = counts == 0
    node = torch.where(empty, torch.arange(n_bins, device=x.device, dtype=torch.float32)[None] + 0.5, node)
    if statistic == "median":
        prof, _ = _binned_lower_median(x.reshape(B * C, H * W).float(), k.repeat_interleave(C, dim=0), n_bins)
    elif statistic == "low_quantile":
        (q10, q30), _ = _binned_quantiles(x.reshape(B * C, H * W).float(), k.repeat_interleave(C, dim=0), n_bins, LOW_QUANTILES)
        prof = low_quantile_level(q10, q30)
    else:
        raise ValueError(f"profile statistic must be median or low_quantile, got {statistic!r}")
    prof = prof.reshape(B, C, n_bins)
    # an empty annulus takes the profile of the nearest filled one inside it
    ar = torch.arange(n_bins, device=x.device)[None].expand(B, n_bins)
    idx = torch.where(empty, torch.full_like(ar, -1), ar).cummax(dim=1).values
    idx = torch.where(idx < 0, (~empty).long().argmax(dim=1, keepdim=True).expand(B, n_bins), idx)  # leading empties: the first filled
    prof = prof.gather(-1, idx[:, None, :].expand(B, C, n_bins))
    lo = (torch.searchsorted(node.contiguous(), r.contiguous(), right=True) - 1).clamp(0, n_bins - 2)
    n_lo, n_hi = node.gather(1, lo), node.gather(1, lo + 1)
    w = ((r - n_lo) / (n_hi - n_lo).clamp_min(1e-6)).clamp(0.0, 1.0).to(x.dtype)
    lo_b = lo[:, None, :].expand(B, C, H * W)
    nodes_asinh = torch.asinh(prof.to(x.dtype) / softening)   # on the K nodes, not on every pixel
    a_lo, a_hi = nodes_asinh.gather(-1, lo_b), nodes_asinh.gather(-1, lo_b + 1)
    return (torch.sinh(a_lo * (1 - w[:, None]) + a_hi * w[:, None]) * softening).reshape(B, C, H, W)


def subtract_radial_profile_about_host(x: torch.Tensor, search_radius_px: float = SEARCH_RADIUS_PX, shape: str = "circle",
                                       with_noise: bool = False, statistic: str = "median") -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x minus its median profile about the measured host centre: in circular annuli
    (``shape="circle"``) or in elliptical annuli of the host's measured shape (``"ellipse"``).

    ``with_noise``: also the residual's robust scatter in the same annuli, (B, 1, N, N) at every
    pixel: 1.4826 x the median |residual| of each annulus (the residual has zero median there),
    the bands' profiles averaged so that one scale keeps the colour. Inside a bright host the
    photon noise of its light, not the sky, sets the scatter; dividing by it puts an arc in units
    of the noise it sits on, the way its SNR is defined."""
    centres = measure_centres(x, search_radius_px)
    if statistic != "median" and shape != "ellipse":
        raise ValueError(f"the {statistic} profile statistic is for elliptical annuli (shape ellipse), got shape {shape!r}")
    if shape == "circle":
        def profile(v, stat="median"):
            return radial_profile_about(v, centres)
    elif shape == "ellipse":
        q, phi = host_shape_profile(shape_detection_image(x, centres))

        def profile(v, stat="median"):
            return elliptical_profile_about(v, centres, q, phi, statistic=stat)
    else:
        raise ValueError(f"profile shape must be circle or ellipse, got {shape!r}")
    res = x - profile(x, statistic)
    if not with_noise:
        return res
    return res, profile(res.abs()).mean(dim=1, keepdim=True) * MAD_TO_SIGMA
