"""The prior distributions params.yaml declares (``simulate.priors``), and their check.

A prior is a mapping with a ``dist`` key:

- ``{dist: const, value: v}``
- ``{dist: uniform, low: a, high: b}``
- ``{dist: loguniform, low: a, high: b}``                (a > 0)
- ``{dist: sqrt_uniform, low: a, high: b}``              sqrt(U(a^2, b^2)): uniform in area
- ``{dist: normal, mean: m, sd: s}``
- ``{dist: truncnormal, mean: m, sd: s, low: a, high: b}``
- ``{dist: grid, values: [v1, v2, ...]}``                uniform choice (``grid_small`` style)
- ``{dist: quantiles, probs: [0, .., 1], values: [...]}`` piecewise-linear inverse CDF
- ``{dist: zero_inflated, p_zero: p, of: <prior>}``      0 with probability p, else ``of``

The schema (``dhs.params.schema``) checks every prior with ``validate_prior``; the simulator
samples them (``dhs.simulate.priors.sample_prior``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from dhs.params.fields import ParamsError

# the keys each dist takes besides ``dist``
PRIOR_KEYS: dict[str, set[str]] = {
    "const": {"value"},
    "uniform": {"low", "high"},
    "loguniform": {"low", "high"},
    "sqrt_uniform": {"low", "high"},
    "normal": {"mean", "sd"},
    "truncnormal": {"mean", "sd", "low", "high"},
    "grid": {"values"},
    "quantiles": {"probs", "values"},
    "zero_inflated": {"p_zero", "of"},
}


class PriorError(ParamsError):
    """A malformed prior (the schema names its key when it checks params.yaml)."""


def validate_prior(name: str, spec: Any) -> None:
    """Raise PriorError naming the prior and the fix when ``spec`` is malformed."""
    if not isinstance(spec, Mapping) or "dist" not in spec:
        raise PriorError(f"prior {name!r} must be a mapping with a 'dist' key, got {spec!r}")
    dist = spec["dist"]
    if dist not in PRIOR_KEYS:
        raise PriorError(f"prior {name!r}: unknown dist {dist!r}; expected one of {sorted(PRIOR_KEYS)}")
    given = set(spec) - {"dist"}
    missing, extra = PRIOR_KEYS[dist] - given, given - PRIOR_KEYS[dist]
    if missing or extra:
        raise PriorError(
            f"prior {name!r} ({dist}) needs keys {sorted(PRIOR_KEYS[dist])}; "
            f"missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    if dist in ("uniform", "loguniform", "sqrt_uniform", "truncnormal") and not spec["low"] <= spec["high"]:
        raise PriorError(f"prior {name!r}: low ({spec['low']}) must not exceed high ({spec['high']})")
    if dist == "loguniform" and spec["low"] <= 0:
        raise PriorError(f"prior {name!r}: loguniform needs low > 0")
    if dist in ("normal", "truncnormal") and spec["sd"] < 0:
        raise PriorError(f"prior {name!r}: sd must be >= 0")
    if dist == "grid" and len(spec["values"]) == 0:
        raise PriorError(f"prior {name!r}: grid needs at least one value")
    if dist == "quantiles":
        p, v = np.asarray(spec["probs"], float), np.asarray(spec["values"], float)
        if p.shape != v.shape or p.size < 2 or p[0] != 0 or p[-1] != 1 or np.any(np.diff(p) <= 0) or np.any(np.diff(v) < 0):
            raise PriorError(
                f"prior {name!r}: quantiles need equal-length probs (0..1, increasing) and non-decreasing values"
            )
    if dist == "zero_inflated":
        if not 0.0 <= spec["p_zero"] <= 1.0:
            raise PriorError(f"prior {name!r}: p_zero must be in [0, 1]")
        validate_prior(f"{name}.of", spec["of"])
