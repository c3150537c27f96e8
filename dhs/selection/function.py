"""A finder's selection function as a file: load it and evaluate P(found | lens, source, conditions).

This module is self-contained: it needs the standard library and numpy only (no torch, Spark,
DVC, pandas or the rest of dhs), so a colleague can copy this one file beside a selection-function
file and use it. ``python -m dhs.selection`` wraps it in a command line that annotates a
catalogue.

    from dhs.selection.function import SelectionFunction
    sf = SelectionFunction.load("data/selection/small_cnn.json")          # the primary operating point
    p, lo, hi = sf(theta_e_arcsec=1.2, psf_fwhm_r_arcsec=1.3, psfdepth_r_mag=24.4,
                   src_r_mag=23.5, src_reff_arcsec=0.3, magnification=8.0, lens_r_mag=19.5)

Inputs (the columns a population study supplies; arrays broadcast together):

  theta_e_arcsec      Einstein radius, arcsec (SIE/SIS convention of the simulation: the radius of
                      the critical curve of the circularised lens)
  psf_fwhm_r_arcsec   r-band PSF FWHM at the lens position, arcsec
  psfdepth_r_mag      r-band 5-sigma point-source depth, AB mag
  src_r_mag           unlensed source r-band magnitude, AB mag
  src_reff_arcsec     source half-light radius (circularised), arcsec
  magnification       total magnification of the source (sum over images, flux ratio), >= 1
  lens_r_mag          lens (deflector) galaxy r-band magnitude, AB mag

The model is additive in the logit of P over a few derived terms (``TERMS``), each a piecewise-
linear function on knots, some constrained monotone (the implied S/N of the arc):

    logit P(x) = b + sum_t f_t(term_t(x)),      f_t piecewise linear on the term's knots.

Its band: the coefficients' covariance over region-bootstrap refits, kept as its leading
principal components (``scale_k``, ``u_k``), gives the standard deviation of the logit,

    sd(x)^2 = sum_k scale_k^2 (u_k0 + sum_t g_kt(term_t(x)))^2,

and ``(p, lo, hi) = sigmoid(eta, eta - z sd, eta + z sd)``. A point outside the calibrated range
(any input or term outside what the fit saw) is refused: NaN in p, lo and hi and False in
``sf.inside(...)`` (``outside='raise'`` raises instead). Nothing is extrapolated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "dhs-selection-function"
FORMAT_VERSION = 1

# name -> (unit, description)
INPUTS: dict[str, tuple[str, str]] = {
    "theta_e_arcsec": ("arcsec", "Einstein radius"),
    "psf_fwhm_r_arcsec": ("arcsec", "r-band PSF FWHM"),
    "psfdepth_r_mag": ("AB mag", "r-band 5-sigma point-source depth"),
    "src_r_mag": ("AB mag", "unlensed source r magnitude"),
    "src_reff_arcsec": ("arcsec", "source half-light radius"),
    "magnification": ("1", "total magnification of the source"),
    "lens_r_mag": ("AB mag", "lens galaxy r magnitude"),
}

GAUSS_HALF_LIGHT = 1.1774100225154747     # half-light radius / sigma of a circular Gaussian: sqrt(2 ln 2)
FWHM_PER_SIGMA = 2.3548200450309493       # FWHM / sigma of a Gaussian: 2 sqrt(2 ln 2)
RING_SIGMA_PER_THETA_E = 2.0 * math.pi / math.sqrt(12.0)   # rms length of a full ring of radius theta_E, per theta_E


def arc_mag_r(src_r_mag, magnification) -> np.ndarray:
    """Lensed (total, all images) r magnitude of the source: m_src - 2.5 log10(mu)."""
    return np.asarray(src_r_mag, float) - 2.5 * np.log10(np.asarray(magnification, float))


def implied_arc_snr(theta_e_arcsec, psf_fwhm_r_arcsec, psfdepth_r_mag, src_r_mag, src_reff_arcsec, magnification) -> np.ndarray:
    """Integrated r-band S/N a lensed source of these catalogue quantities implies, for an optimal
    (matched) filter against sky noise:

        S/N_point = 5 x 10^(-0.4 (m_arc - m_depth))      (m_depth: the 5-sigma point-source depth)
        S/N       = S/N_point x sigma_psf / sqrt(sigma_t sigma_r),

    the image taken as an elliptical Gaussian of the source (sigma_s = r_eff / 1.1774) stretched
    tangentially by the magnification, sigma_t = sqrt(sigma_psf^2 + min(mu sigma_s, 1.81 theta_E)^2)
    (never longer than the full Einstein ring), sigma_r = sqrt(sigma_psf^2 + sigma_s^2): a point-
    source S/N diluted by the noise-equivalent area of the arc. A catalogue-level proxy of the
    stamps' matched-filter S/N (which also counts the lens's photon noise and takes the best of
    g, r, z), used as a term of the model, not a replacement for it."""
    th = np.asarray(theta_e_arcsec, float)
    s_psf = np.asarray(psf_fwhm_r_arcsec, float) / FWHM_PER_SIGMA
    s_src = np.asarray(src_reff_arcsec, float) / GAUSS_HALF_LIGHT
    mu = np.asarray(magnification, float)
    snr_point = 5.0 * 10.0 ** (-0.4 * (arc_mag_r(src_r_mag, mu) - np.asarray(psfdepth_r_mag, float)))
    tangential = np.minimum(mu * s_src, RING_SIGMA_PER_THETA_E * th)
    s_t = np.sqrt(s_psf**2 + tangential**2)
    s_r = np.sqrt(s_psf**2 + s_src**2)
    return snr_point * s_psf / np.sqrt(s_t * s_r)


def _log10(x) -> np.ndarray:
    x = np.asarray(x, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), np.nan)


# term -> (definition in words, monotone direction: +1 increasing, -1 decreasing, 0 free)
TERMS: dict[str, tuple[str, int]] = {
    "log10_snr_implied": ("log10 implied_arc_snr(...): the arc's integrated S/N from brightness, size, magnification, PSF, depth", +1),
    "theta_e_over_psf": ("theta_e_arcsec / psf_fwhm_r_arcsec: how resolved the Einstein ring is", 0),
    "theta_e_arcsec": ("theta_e_arcsec", 0),
    "log10_mu_reff_over_psf": ("log10(magnification x src_reff_arcsec / psf_fwhm_r_arcsec): the tangential extent of the arc in PSFs", 0),
    "lens_minus_arc_mag_r": ("lens_r_mag - (src_r_mag - 2.5 log10 magnification): the arc's brightness against the lens light, mag", 0),
    "psf_fwhm_r_arcsec": ("psf_fwhm_r_arcsec", 0),
}


def terms(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The model's terms from its inputs (arrays broadcast together; NaN where undefined)."""
    missing = [k for k in INPUTS if k not in inputs]
    if missing:
        raise KeyError(f"selection function: missing input(s) {missing}; it needs {list(INPUTS)}")
    x = dict(zip(INPUTS, np.broadcast_arrays(*(np.asarray(inputs[k], float) for k in INPUTS))))
    psf = np.where(x["psf_fwhm_r_arcsec"] > 0, x["psf_fwhm_r_arcsec"], np.nan)
    mu = np.where(x["magnification"] > 0, x["magnification"], np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        snr = implied_arc_snr(x["theta_e_arcsec"], psf, x["psfdepth_r_mag"], x["src_r_mag"], x["src_reff_arcsec"], mu)
        return {
            "log10_snr_implied": _log10(snr),
            "theta_e_over_psf": x["theta_e_arcsec"] / psf,
            "theta_e_arcsec": x["theta_e_arcsec"],
            "log10_mu_reff_over_psf": _log10(mu * x["src_reff_arcsec"] / psf),
            "lens_minus_arc_mag_r": x["lens_r_mag"] - arc_mag_r(x["src_r_mag"], mu),
            "psf_fwhm_r_arcsec": x["psf_fwhm_r_arcsec"],
        }


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-eta))


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in doc.items() if k != "sha256"}, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()


def digest(doc: Mapping[str, Any]) -> str:
    """sha256 of the file's content (every key but ``sha256`` itself, canonical JSON)."""
    return hashlib.sha256(_canonical(doc)).hexdigest()


def write(doc: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a selection-function document atomically, with its ``sha256``."""
    doc = dict(doc)
    doc["sha256"] = digest(doc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SelectionFunctionError(ValueError):
    pass


class SelectionFunction:
    """One operating point of a finder's selection function (see the module docstring)."""

    def __init__(self, doc: Mapping[str, Any], operating_point: str | None = None, source: str = "<document>"):
        if doc.get("format") != FORMAT:
            raise SelectionFunctionError(f"{source}: not a selection-function file (format {doc.get('format')!r}, want {FORMAT!r})")
        if doc.get("format_version") != FORMAT_VERSION:
            raise SelectionFunctionError(f"{source}: format_version {doc.get('format_version')!r}; this reader reads {FORMAT_VERSION}")
        if "sha256" in doc and doc["sha256"] != digest(doc):
            raise SelectionFunctionError(f"{source}: content does not match its sha256 (the file was edited or truncated)")
        names = [op["name"] for op in doc["operating_points"]]
        name = doc["primary"] if operating_point is None else operating_point
        if name not in names:
            raise SelectionFunctionError(f"{source}: no operating point {name!r}; the file has {names}")
        self.doc, self.source = doc, source
        op = next(o for o in doc["operating_points"] if o["name"] == name)
        self.name, self.fpr, self.threshold = op["name"], op.get("fpr"), op["threshold"]
        self.input_range = {k: tuple(doc["inputs"][k]["range"]) for k in INPUTS}
        self.term_range = {k: tuple(doc["terms"][k]["range"]) for k in doc["terms"]}
        self.intercept = float(op["intercept"])
        self.knots = {t: np.asarray(op["terms"][t]["knots"], float) for t in op["terms"]}
        self.values = {t: np.asarray(op["terms"][t]["values"], float) for t in op["terms"]}
        band = op["band"]
        self.z = float(band["z"])
        self.confidence = float(band["confidence"])
        self.scale = np.asarray(band["scale"], float)                          # (k,)
        self.band_intercept = np.asarray(band["intercept"], float)             # (k,)
        self.band_values = {t: np.asarray(band["terms"][t], float).reshape(len(self.scale), -1).T for t in self.knots}  # (K_t, k)
        # the values form stacked: [intercept, term 1's knot values, term 2's, ...] and the band's components scaled
        self._offsets, o = {}, 1
        for t in self.knots:
            self._offsets[t] = o
            o += self.knots[t].size
        self._n_values = o
        self._values = np.concatenate([[self.intercept], *(self.values[t] for t in self.knots)])
        self._components = np.vstack([self.band_intercept[None, :], *(self.band_values[t] for t in self.knots)]) * self.scale  # (V, k)

    @classmethod
    def load(cls, path: str | os.PathLike, operating_point: str | None = None) -> "SelectionFunction":
        """The operating point ``operating_point`` (e.g. 'fpr_0.01'; default: the file's primary)."""
        with open(path) as f:
            doc = json.load(f)
        return cls(doc, operating_point, str(path))

    @property
    def operating_points(self) -> list[str]:
        return [op["name"] for op in self.doc["operating_points"]]

    def inside(self, **inputs) -> np.ndarray:
        """True where every input and term lies in the calibrated range (finite and within it)."""
        return self._inside(inputs, terms(inputs))

    def _inside(self, inputs: Mapping[str, Any], t: Mapping[str, np.ndarray]) -> np.ndarray:
        ok = np.ones(np.shape(next(iter(t.values()))), bool)
        for k, (lo, hi) in self.input_range.items():
            v = np.broadcast_to(np.asarray(inputs[k], float), ok.shape)
            ok &= (v >= lo) & (v <= hi)    # NaN fails both
        for k, (lo, hi) in self.term_range.items():
            ok &= (t[k] >= lo) & (t[k] <= hi)
        return ok

    def __call__(self, outside: str = "nan", chunk: int = 65_536, **inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(p, lo, hi) arrays: P(score > threshold) and its band at the file's confidence. Rows
        outside the calibrated range: NaN (``outside='nan'``) or a SelectionFunctionError
        (``outside='raise'``) naming the inputs out of range."""
        if outside not in ("nan", "raise"):
            raise ValueError(f"outside must be 'nan' or 'raise', got {outside!r}")
        t = terms(inputs)
        shape = np.shape(next(iter(t.values())))
        ok = self._inside(inputs, t)
        if outside == "raise" and not ok.all():
            raise SelectionFunctionError(f"{int((~ok).sum())} of {ok.size} point(s) outside the calibrated range: "
                                         + "; ".join(self.describe_outside(inputs, t)))
        flat = {k: v.reshape(-1) for k, v in t.items()}
        n = ok.size
        p, lo, hi = (np.full(n, np.nan) for _ in range(3))
        idx = np.flatnonzero(ok.reshape(-1))
        for s in range(0, idx.size, chunk):
            rows = idx[s:s + chunk]
            eta, sd = self._eta_sd({k: v[rows] for k, v in flat.items()})
            p[rows], lo[rows], hi[rows] = _sigmoid(eta), _sigmoid(eta - self.z * sd), _sigmoid(eta + self.z * sd)
        return p.reshape(shape), lo.reshape(shape), hi.reshape(shape)

    def mean(self, weights=None, n_draws: int = 400, seed: int = 0, chunk: int = 65_536, **inputs) -> dict[str, Any]:
        """The (weighted) mean of P over a population's in-range points with its band: the mean
        under ``n_draws`` Gaussian draws of the model's coefficients (the band's own description),
        so the band is that of the mean (its points share one set of coefficients), not an average
        of pointwise bands. Returns mean, lo, hi (the file's confidence), the number of points in
        range and outside, and the weight outside (a population study reports it: those points are
        unmeasured, not zero)."""
        t = terms(inputs)
        ok = self._inside(inputs, t).reshape(-1)
        w = np.ones(ok.size) if weights is None else np.broadcast_to(np.asarray(weights, float), ok.shape).reshape(-1)
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise SelectionFunctionError("weights must be finite and >= 0")
        flat = {k: v.reshape(-1) for k, v in t.items()}
        z = np.random.default_rng(seed).standard_normal((self.scale.size, n_draws))
        idx = np.flatnonzero(ok)
        num, num_d = 0.0, np.zeros(n_draws)
        for s in range(0, idx.size, chunk):
            rows = idx[s:s + chunk]
            H = self._basis({k: v[rows] for k, v in flat.items()})
            eta = H @ self._values
            num += float(w[rows] @ _sigmoid(eta))
            num_d += w[rows] @ _sigmoid(eta[:, None] + (H @ self._components) @ z)
        w_in = float(w[ok].sum())
        a = (1 - self.confidence) / 2
        m = num / w_in if w_in > 0 else float("nan")
        md = num_d / w_in if w_in > 0 else np.full(n_draws, np.nan)
        return {"mean": m, "lo": float(np.quantile(md, a)), "hi": float(np.quantile(md, 1 - a)), "n_in_range": int(ok.sum()),
                "n_outside": int((~ok).sum()), "weight_outside_fraction": float(w[~ok].sum() / w.sum()) if w.sum() > 0 else float("nan")}

    def _basis(self, t: Mapping[str, np.ndarray]) -> np.ndarray:
        """Hat-basis rows H (n, 1 + sum K): each term's piecewise-linear function puts weights
        1 - w and w on the two knots around the point (clamped to the knot range)."""
        n = len(next(iter(t.values())))
        H = np.zeros((n, self._n_values))
        H[:, 0] = 1.0
        flat, base = H.reshape(-1), np.arange(n) * self._n_values     # flat indices: ~10x faster than H[rows, cols]
        for name, kn in self.knots.items():
            x = np.clip(t[name], kn[0], kn[-1])
            j = np.clip(np.searchsorted(kn, x, side="right") - 1, 0, kn.size - 2)
            w = (x - kn[j]) / np.diff(kn)[j]
            o = self._offsets[name]
            flat[base + o + j] = 1.0 - w
            flat[base + o + j + 1] = w                                  # j + 1 > j: never the same cell
        return H

    def _eta_sd(self, t: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The logit H @ values and its sd |H @ components| at points inside the range: two matrix
        products on the hat basis."""
        H = self._basis(t)
        dev = H @ self._components
        return H @ self._values, np.sqrt(np.einsum("ij,ij->i", dev, dev))

    def describe_outside(self, inputs: Mapping[str, Any], t: Mapping[str, np.ndarray] | None = None) -> list[str]:
        """One line per input or term with points outside its range: name, count, range."""
        t = terms(inputs) if t is None else t
        out = []
        for k, (lo, hi) in self.input_range.items():
            v = np.asarray(inputs[k], float)
            bad = ~((v >= lo) & (v <= hi))
            if bad.any():
                out.append(f"{k}: {int(bad.sum())} outside [{lo:.4g}, {hi:.4g}] {INPUTS[k][0]} (or not finite)")
        for k, (lo, hi) in self.term_range.items():
            bad = ~((t[k] >= lo) & (t[k] <= hi))
            if bad.any():
                out.append(f"term {k}: {int(bad.sum())} outside [{lo:.4g}, {hi:.4g}]")
        return out

    def __repr__(self) -> str:
        f = self.doc.get("finder", {})
        return (f"SelectionFunction({f.get('arch', '?')}, {self.name}: score > {self.threshold:.6g}, "
                f"FPR {self.fpr}, band {self.confidence:.0%}, from {self.source})")
