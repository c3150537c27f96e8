"""Broad-band photometry of the lens population through approximate DECam g, r, z passbands:
K-corrections and colours of the early-type hosts, and colours of star-forming sources at any
redshift (UV power law, Balmer/4000 A break, redder optical slope, Madau 1995 IGM absorption).
Sources and derivations: docs/population.md."""

from __future__ import annotations

import math

import numpy as np

from dhs.simulate.interp import uinterp


# Photometry. Approximate DECam total-throughput passbands: 100 A nodes, a coarse resampling of
# the NOIRLab DECam curves (scidoc0434); photon-weighted effective wavelengths 4830/6430/9180 A.
PASSBAND_NODES: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "g": (np.arange(3900.0, 5601.0, 100.0),
          np.array([0.0, 0.21, 0.30, 0.35, 0.39, 0.44, 0.47, 0.51, 0.53, 0.56, 0.57, 0.59, 0.61,
                    0.63, 0.65, 0.66, 0.19, 0.0])),
    "r": (np.arange(5500.0, 7301.0, 100.0),
          np.array([0.01, 0.04, 0.56, 0.71, 0.72, 0.74, 0.75, 0.77, 0.78, 0.80, 0.81, 0.83, 0.84,
                    0.84, 0.78, 0.84, 0.76, 0.12, 0.0])),
    "z": (np.arange(8300.0, 10301.0, 100.0),
          np.array([0.01, 0.04, 0.55, 0.93, 0.95, 0.97, 0.97, 0.91, 0.91, 0.92, 0.76, 0.61, 0.63,
                    0.69, 0.75, 0.72, 0.67, 0.26, 0.01, 0.0, 0.0])),
}


def passband_grid(band: str, step: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """(lambda_obs [A], w) with sum(w) = 1, for band averages <f_nu> = sum w f_nu(lambda),
    w ~ T(lambda) dlambda / lambda (AB, photon counting)."""
    lam_n, t_n = PASSBAND_NODES[band]
    lam = np.arange(lam_n[0], lam_n[-1] + 0.5 * step, step)
    w = np.interp(lam, lam_n, t_n) / lam
    return lam, w / w.sum()


# Elliptical host K-corrections: m_X = M_r + DM(z) + K_X(z), with M_r the absolute AB magnitude in
# rest-frame r. CWW-E template extended by Benitez (2004) ('El_B2004a') through the passbands
# above; derived by derive_host_kcorr.py (kept beside this module; the template is not shipped).
HOST_KCORR_DZ = 0.05
HOST_KCORR = {
    "g": np.array([0.7614, 0.8986, 1.0340, 1.2236, 1.4466, 1.6769, 1.8775, 2.0932, 2.2789, 2.3793, 2.5288, 2.6811, 2.8473, 3.0338, 3.2543, 3.4951, 3.7073, 3.9308, 4.1564, 4.3660, 4.5523, 4.7124, 4.8363, 4.9275, 4.9987, 5.0577, 5.1099, 5.1625, 5.2188, 5.2790, 5.3422, 5.4040, 5.4613, 5.5129, 5.5575, 5.5948, 5.6241, 5.6455, 5.6598, 5.6692, 5.6747]),
    "r": np.array([-0.0000, 0.0513, 0.1141, 0.1736, 0.2374, 0.2936, 0.3691, 0.4624, 0.5471, 0.6609, 0.8245, 0.9973, 1.1839, 1.3586, 1.5120, 1.6644, 1.8255, 1.9150, 1.9854, 2.0943, 2.2075, 2.3219, 2.4521, 2.5961, 2.7610, 2.9504, 3.1360, 3.3035, 3.4831, 3.6672, 3.8445, 4.0077, 4.1538, 4.2835, 4.3934, 4.4788, 4.5450, 4.6000, 4.6470, 4.6903, 4.7313]),
    "z": np.array([-0.5473, -0.5433, -0.5264, -0.5204, -0.5104, -0.4914, -0.4813, -0.4365, -0.4120, -0.3778, -0.3389, -0.2963, -0.2650, -0.2053, -0.1492, -0.1110, -0.0779, -0.0413, 0.0086, 0.0596, 0.1341, 0.2292, 0.3301, 0.4435, 0.5956, 0.7581, 0.8983, 1.0123, 1.1149, 1.2301, 1.3590, 1.4375, 1.4685, 1.4992, 1.5602, 1.6406, 1.7166, 1.7947, 1.8819, 1.9744, 2.0716]),
}
HOST_KCORR_Z = np.arange(HOST_KCORR["r"].size) * HOST_KCORR_DZ


def host_kcorr(band: str, z) -> np.ndarray:
    return uinterp(z, 0.0, HOST_KCORR_DZ, HOST_KCORR[band])


# Star-forming source SED (rest frame), f_nu up to a constant; Madau (1995) Lyman series
_LYMAN_SERIES = ((1215.67, 3.6e-3), (1025.72, 1.7e-3), (972.54, 1.2e-3), (949.74, 9.3e-4))


def sf_sed_fnu(lam_rest, uv_slope, balmer_break, opt_slope_offset: float = 0.0) -> np.ndarray:
    """Rest-frame f_nu (= 1 at 1500 A) of the star-forming continuum: f_lambda ~ lambda^beta,
    redder by opt_slope_offset in the slope above 4000 A (older stars, dust), times a break
    rising log-linearly from 1 at 3646 A to B at 4000 A; zero below 912 A."""
    lam = np.asarray(lam_rest, float)
    ramp = np.clip(np.log(lam / 3646.0) / math.log(4000.0 / 3646.0), 0.0, 1.0)
    ln_f = (np.asarray(uv_slope) + 2.0) * np.log(lam / 1500.0) + ramp * np.log(balmer_break)
    ln_f = ln_f + opt_slope_offset * np.clip(np.log(lam / 4000.0), 0.0, None)
    return np.where(lam > 912.0, np.exp(ln_f), 0.0)


def _igm_tau_madau(lam_obs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Lyman-series line-blanketing optical depth (Madau 1995, eq. 15 and Table 2)."""
    tau = np.zeros(np.broadcast(lam_obs, z).shape)
    for lam_j, a_j in _LYMAN_SERIES:
        tau = tau + np.where(lam_obs < lam_j * (1.0 + z), a_j * (lam_obs / lam_j) ** 3.46, 0.0)
    return tau


def sf_band_fnu_direct(z, uv_slope, balmer_break, band: str, igm: str = "madau1995", opt_slope_offset: float = 0.0) -> np.ndarray:
    """Band-averaged observed-frame f_nu of sf_sed_fnu at redshift z, in rest-frame units (no
    1/(4 pi D_L^2), no (1+z)), integrated per source (reference for the tabulated version)."""
    z, uv_slope, balmer_break = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, float)) for a in (z, uv_slope, balmer_break)))
    lam, w = passband_grid(band)
    out = np.empty(z.shape)
    for s in range(0, z.size, 20_000):
        zz = z[s : s + 20_000, None]
        f = sf_sed_fnu(lam[None, :] / (1 + zz), uv_slope[s : s + 20_000, None], balmer_break[s : s + 20_000, None],
                       opt_slope_offset)
        if igm == "madau1995":
            f = f * np.exp(-_igm_tau_madau(lam[None, :], zz))
        elif igm != "none":
            raise ValueError(f"src_igm must be 'madau1995' or 'none', got {igm!r}")
        out[s : s + 20_000] = f @ w
    return out


_SED_AXES = (np.arange(0.0, 7.0 + 1e-9, 0.01), np.arange(-3.6, 0.0 + 1e-9, 0.1), np.linspace(0.0, math.log(2.0), 15))
_SED_TABLES: dict[tuple[str, str], np.ndarray] = {}


def _sed_table(band: str, igm: str, opt_slope_offset: float = 0.0) -> np.ndarray:
    """<f_nu>_band on the grid (z, beta, ln B). ln f is linear in (beta, ln B) at each
    wavelength, so each redshift row is one matrix of exponentials: ~0.5 s per band, once."""
    key = (band, igm, float(opt_slope_offset))
    if key not in _SED_TABLES:
        zg, bg, lbg = _SED_AXES
        lam, w = passband_grid(band)
        x = np.log(lam)[None, :] - np.log1p(zg)[:, None]                      # ln lambda_rest (nz, nl)
        a = x - math.log(1500.0)
        ramp = np.clip((x - math.log(3646.0)) / math.log(4000.0 / 3646.0), 0.0, 1.0)
        wt = w[None, :] * (x > math.log(912.0)) * np.exp(opt_slope_offset * np.clip(x - math.log(4000.0), 0.0, None))
        if igm == "madau1995":
            wt = wt * np.exp(-_igm_tau_madau(lam[None, :], zg[:, None]))
        coef = np.stack(np.meshgrid(bg + 2.0, lbg, indexing="ij"), -1).reshape(-1, 2)   # (nb*nB, 2)
        tab = np.empty((zg.size, coef.shape[0]))
        for i in range(zg.size):
            e = np.exp(coef[:, :1] * a[i][None, :] + coef[:, 1:] * ramp[i][None, :])
            tab[i] = e @ wt[i]
        _SED_TABLES[key] = tab.reshape(zg.size, bg.size, lbg.size)
    return _SED_TABLES[key]


def sf_band_fnu_grz(z, uv_slope, balmer_break, igm: str = "madau1995", opt_slope_offset: float = 0.0) -> np.ndarray:
    """(n, 3) g, r, z band-averaged f_nu of the star-forming SED (as sf_band_fnu_direct), from
    the tables, trilinear in <f_nu> (linear, not log: the flux vanishes where the Lyman limit
    crosses a band). Colour errors: median 5e-4 mag, 99th percentile 0.03 mag for g-r < 3."""
    key = ("grz", igm, float(opt_slope_offset))
    if key not in _SED_TABLES:
        _SED_TABLES[key] = np.ascontiguousarray(np.stack([_sed_table(b, igm, opt_slope_offset) for b in "grz"], axis=-1))
    tab = _SED_TABLES[key]                                   # (nz, nb, nB, 3)
    nz, nb, nB, _ = tab.shape
    flat = tab.reshape(-1, 3)
    zg, bg, lbg = _SED_AXES
    z, b, lb = np.broadcast_arrays(np.asarray(z, float), np.asarray(uv_slope, float), np.log(np.asarray(balmer_break, float)))
    idx, frac = [], []
    for v, g in ((z.ravel(), zg), (b.ravel(), bg), (lb.ravel(), lbg)):
        t = (np.clip(v, g[0], g[-1]) - g[0]) / (g[1] - g[0])
        i = np.minimum(t.astype(np.intp), g.size - 2)
        idx.append(i)
        frac.append((t - i)[:, None])
    base = (idx[0] * nb + idx[1]) * nB + idx[2]
    out = np.zeros((base.size, 3))
    for dz in (0, 1):
        wz = frac[0] if dz else 1.0 - frac[0]
        for db in (0, 1):
            wzb = wz * (frac[1] if db else 1.0 - frac[1])
            off = (dz * nb + db) * nB
            out += wzb * ((1.0 - frac[2]) * flat[base + off] + frac[2] * flat[base + off + 1])
    return out.reshape(z.shape + (3,))


def sf_band_fnu(z, uv_slope, balmer_break, band: str, igm: str = "madau1995", opt_slope_offset: float = 0.0) -> np.ndarray:
    return sf_band_fnu_grz(z, uv_slope, balmer_break, igm, opt_slope_offset)[..., "grz".index(band)]


def sf_colours(z, uv_slope, balmer_break, igm: str = "madau1995", opt_slope_offset: float = 0.0) -> dict[str, np.ndarray]:
    """g-r, r-z (AB) of the star-forming SED at z, and k_uv = m_r - M_1500 - DM(z)."""
    f = sf_band_fnu_grz(z, uv_slope, balmer_break, igm, opt_slope_offset)
    tiny = 1e-300
    fg, fr, fz = np.maximum(f[..., 0], tiny), np.maximum(f[..., 1], tiny), np.maximum(f[..., 2], tiny)
    lg, lr, lz = np.log10(fg), np.log10(fr), np.log10(fz)
    return {
        "g_minus_r": np.minimum(-2.5 * (lg - lr), 10.0),
        "r_minus_z": np.clip(-2.5 * (lr - lz), -5.0, 10.0),
        # m_r = M_1500 + DM - 2.5 log10(1+z) - 2.5 log10(<f_nu>_r / f_nu(1500)), f_nu(1500) = 1
        "k_uv": -2.5 * np.log10(1.0 + np.asarray(z, float)) - 2.5 * lr,
        "f_r": fr,
    }

