"""Prior distributions declared in params.yaml (``simulate.priors``), sampled with numpy. The
forms a prior takes and their check are in dhs.params.priors (the schema applies it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import stats

from dhs.params.priors import PriorError


def sample_prior(spec: Mapping[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    dist = spec["dist"]
    if dist == "const":
        return np.full(size, float(spec["value"]))
    if dist == "uniform":
        return rng.uniform(spec["low"], spec["high"], size)
    if dist == "loguniform":
        return np.exp(rng.uniform(np.log(spec["low"]), np.log(spec["high"]), size))
    if dist == "sqrt_uniform":
        return np.sqrt(rng.uniform(spec["low"] ** 2, spec["high"] ** 2, size))
    if dist == "normal":
        return rng.normal(spec["mean"], spec["sd"], size)
    if dist == "truncnormal":
        m, s = spec["mean"], spec["sd"]
        if s == 0:
            return np.full(size, float(np.clip(m, spec["low"], spec["high"])))
        a, b = (spec["low"] - m) / s, (spec["high"] - m) / s
        return stats.truncnorm.ppf(rng.uniform(0, 1, size), a, b, loc=m, scale=s)
    if dist == "grid":
        values = np.asarray(spec["values"], float)
        return values[rng.integers(0, len(values), size)]
    if dist == "quantiles":
        return np.interp(rng.uniform(0, 1, size), spec["probs"], spec["values"])
    if dist == "zero_inflated":
        inner = sample_prior(spec["of"], size, rng)
        return np.where(rng.uniform(0, 1, size) < spec["p_zero"], 0.0, inner)
    raise PriorError(f"unknown dist {dist!r}")
