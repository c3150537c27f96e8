"""The three populations of the simulated survey, drawn from the physical one (``dhs.simulate.physical``).

- **Sky**: the physical population as it is (``physical.sample``): what the selection function is
  finally about. Every sky-weighted number refers to it.
- **Lessons** (the train split): lens-like systems only, the physical population conditioned on
  a total magnification mu >= ``mu_min`` (the analytic extended-source SIS value, ``mu_ext_sis``)
  and theta_E inside ``theta_e_arcsec``, optionally made flat in theta_E. A finder learns what a
  lens looks like from lenses a person would call lenses: with no lower limit on mu a network
  trained on simulations found none of the real lenses of HOLISMOKES XI (Canameras et al. 2024,
  A&A 692, A72, Table 1), and most physical systems are low-magnification blobs beside the host.
  Nothing is weighted: the lessons are not a measurement.
- **Measurement** (the val and test injections): the physical population tilted towards the
  systems that are rare on the sky but where completeness changes (large theta_E, bright
  sources), so that every bin holds enough injections, with each row's exact importance weight
  back to the sky. The tilt is a fixed function g of the system,

      g(x) = prod_v  p_v(bin_v(x)) ** (-strength),

  p_v the sky's marginal histogram of variable v (from a pilot draw with a fixed seed, floored at
  ``floor`` x its largest bin), and rows are accepted from sky draws with probability
  g(x) / max g. The accepted rows follow q(x) = p(x) g(x) / Z exactly, so the weight of a row
  is p / q = Z / g(x): known in closed form up to the constant Z, which self-normalised
  estimates (sum w k / sum w) do not need. ``sky_weight`` is 1 / g scaled to mean 1 over the rows drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dhs.params import ParamsError
from dhs.simulate import physical

# bin edges of the tilt's marginal histograms (values outside go to the end bins)
TILT_EDGES = {
    "theta_e_arcsec": np.arange(0.0, 3.01, 0.2),
    "src_r_mag": np.arange(20.0, 27.01, 0.25),
    "mu_ext_sis": np.array([1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 25.0, 50.0]),
    "src_reff_arcsec": np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2]),
}
PILOT_N = 200_000
_MAX_PASSES = 400


@dataclass(frozen=True)
class LessonsConfig:
    """``simulate.lessons`` as the schema checked it (dhs.params.schema holds each default)."""

    mu_min: float
    theta_e_arcsec: tuple[float, float]
    flat_theta_e: bool
    theta_e_bins: int

    @classmethod
    def from_params(cls, v: Mapping[str, Any] | None) -> "LessonsConfig | None":
        return _config(cls, v, "theta_e_arcsec")


@dataclass(frozen=True)
class MeasurementConfig:
    """``simulate.measurement`` as the schema checked it (dhs.params.schema holds each default)."""

    flatten: tuple[str, ...]
    strength: float
    floor: float

    @classmethod
    def from_params(cls, v: Mapping[str, Any] | None) -> "MeasurementConfig | None":
        return _config(cls, v, "flatten")


def _config(cls, v: Mapping[str, Any] | None, list_key: str):
    """``cls`` from the checked values of its params section (None stays None), its list-valued
    key as a tuple."""
    if v is None:
        return None
    v = dict(v)
    if list_key in v:
        v[list_key] = tuple(v[list_key])
    return cls(**v)


def _bin(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def lessons(n: int, rng: np.random.Generator, params: Mapping[str, Any], cfg: LessonsConfig) -> pd.DataFrame:
    """n lens-like systems: sky draws (``params``: the physical population's knobs) with
    ``mu_ext_sis >= cfg.mu_min`` and theta_E in ``cfg.theta_e_arcsec``; with ``flat_theta_e`` an
    equal share from each of ``theta_e_bins`` equal-width theta_E bins (a bin short of
    candidates after the passes gives what it has, and the rest is filled from the others)."""
    lo, hi = cfg.theta_e_arcsec
    k = cfg.theta_e_bins if cfg.flat_theta_e else 1
    edges = np.linspace(lo, hi, k + 1)
    want = np.full(k, n // k) + (np.arange(k) < n % k)
    got: list[list[pd.DataFrame]] = [[] for _ in range(k)]
    have = np.zeros(k, dtype=np.int64)
    for _ in range(_MAX_PASSES):
        if (have >= want).all():
            break
        s = physical.sample(max(8 * n, 100_000), rng, params)
        th = s["theta_e_arcsec"].to_numpy()
        ok = (s["mu_ext_sis"].to_numpy() >= cfg.mu_min) & (th >= lo) & (th <= hi)
        s, b = s[ok], _bin(th[ok], edges)
        for j in range(k):
            need = int(want[j] - have[j])
            if need > 0:
                part = s[b == j].iloc[:need]
                got[j].append(part)
                have[j] += len(part)
    short = int((want - np.minimum(have, want)).sum())
    if have.sum() == 0:
        raise ParamsError(f"simulate.lessons: no system of the physical population has mu >= {cfg.mu_min:g} and theta_E in "
                         f"[{lo:g}, {hi:g}] arcsec; widen the range or lower mu_min")
    out = pd.concat([p for parts in got for p in parts], ignore_index=True)
    if short:   # the large-theta_E end may be too rare: repeat what is there (systems, not stamps: each host differs)
        out = pd.concat([out, out.sample(short, replace=True, random_state=rng.integers(2**32))], ignore_index=True)
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def tilt_tables(params: Mapping[str, Any], cfg: MeasurementConfig, seed: int) -> dict[str, np.ndarray]:
    """Per tilted variable, g's factor in each bin: p_v(bin) ** -strength, p_v the sky's marginal
    histogram from a pilot draw of ``PILOT_N`` systems (seeded by ``seed``), floored at
    ``cfg.floor`` x its largest bin, then scaled to a largest factor of 1."""
    pilot = physical.sample(PILOT_N, np.random.default_rng([seed, 7]), params)
    out = {}
    for v in cfg.flatten:
        edges = TILT_EDGES[v]
        h = np.bincount(_bin(pilot[v].to_numpy(), edges), minlength=len(edges) - 1).astype(float)
        p = np.maximum(h / h.sum(), cfg.floor * h.max() / h.sum())
        f = p ** -cfg.strength
        out[v] = f / f.max()
    return out


def tilt(s: pd.DataFrame, tables: Mapping[str, np.ndarray]) -> np.ndarray:
    """g(x) of each system (at most 1): the product of its bins' factors."""
    g = np.ones(len(s))
    for v, f in tables.items():
        g *= f[_bin(s[v].to_numpy(), TILT_EDGES[v])]
    return g


def measurement(n: int, rng: np.random.Generator, params: Mapping[str, Any], cfg: MeasurementConfig,
                seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """(n systems from q = p g / Z, their sky weights 1/g scaled to mean 1): sky draws accepted
    with probability g (see the module docstring)."""
    tables = tilt_tables(params, cfg, seed)
    parts, have = [], 0
    for _ in range(_MAX_PASSES):
        if have >= n:
            break
        s = physical.sample(max(8 * n, 50_000), rng, params)
        keep = rng.uniform(0.0, 1.0, len(s)) < tilt(s, tables)
        parts.append(s[keep])
        have += int(keep.sum())
    if have < n:
        raise ParamsError(f"simulate.measurement: only {have} of {n} systems accepted; lower strength or raise floor")
    out = pd.concat(parts, ignore_index=True).iloc[:n].reset_index(drop=True)
    w = 1.0 / tilt(out, tables)
    return out, w / w.mean()


def effective_sample_size(weights: Sequence[float] | np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 of a weighted sample."""
    w = np.asarray(weights, float)
    s2 = float((w * w).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0
