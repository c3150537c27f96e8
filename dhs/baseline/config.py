"""The ``baseline`` params section (checked by dhs.params.schema). Which columns each baseline may
see is ruled in ``dhs.params.rules``: the leak detector observing-condition and quality columns
only, the scalar baseline no column that defines the proxy label it predicts."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from dhs.params.views import view


@dataclass(frozen=True)
class BaselineConfig:
    """A view of the ``baseline`` section of params.yaml (each key, its default and its check in
    dhs.params.schema)."""
    SECTION: ClassVar[str] = "baseline"
    conditions_features: tuple[str, ...]
    proxy_features: tuple[str, ...]
    model: str
    seed: int
    n_bootstrap: int
    bootstrap_unit: str
    leak_auc_warn: float
    proxy_snr_min: float
    proxy_theta_psf_min: float
    n_threads: int

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml") -> "BaselineConfig":
        """From the ``baseline`` params section, checked by the schema (dhs.params.schema)."""
        return view(cls, p, source)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conditions_features"] = list(self.conditions_features)
        d["proxy_features"] = list(self.proxy_features)
        return d
