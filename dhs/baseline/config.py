"""The ``baseline`` params section (checked by dhs.params.schema). Which columns each baseline may
see is ruled in ``dhs.params.rules``: the leak detector observing-condition and quality columns
only, the scalar baseline no column that defines the proxy label it predicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dhs.params import checked
from dhs.params.rules import DEFAULT_CONDITIONS, DEFAULT_PROXY_FEATURES


@dataclass(frozen=True)
class BaselineConfig:
    conditions_features: tuple[str, ...] = DEFAULT_CONDITIONS
    proxy_features: tuple[str, ...] = DEFAULT_PROXY_FEATURES
    model: str = "hist_gb"
    seed: int = 1
    n_bootstrap: int = 200
    bootstrap_unit: str = "row"
    leak_auc_warn: float = 0.6
    proxy_snr_min: float = 5.0
    proxy_theta_psf_min: float = 0.8
    n_threads: int = 1

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml") -> "BaselineConfig":
        """From the ``baseline`` params section, checked by the schema (dhs.params.schema)."""
        v = checked("baseline", p, source)
        return cls(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conditions_features"] = list(self.conditions_features)
        d["proxy_features"] = list(self.proxy_features)
        return d
