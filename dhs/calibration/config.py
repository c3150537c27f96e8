"""The ``calibration`` params section, with the operating FPRs of ``evaluation``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dhs.params.schema import RELIABILITY_STRATEGIES
from dhs.params import checked


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``calibration`` section of params.yaml (each key in dhs.params.schema); ``fprs`` and
    ``min_expected_controls`` are the shared operating points of ``evaluation``."""
    method: str = "temperature"
    n_bins: int = 15
    strategies: tuple[str, ...] = RELIABILITY_STRATEGIES
    fit_split: str = "val"
    eval_split: str = "test"
    survey_prevalence: float = 1e-3
    fprs: tuple[float, ...] = (0.1, 0.01, 0.001)
    min_expected_controls: float = 10.0

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml",
                    evaluation: Mapping[str, Any] | None = None) -> "CalibrationConfig":
        v = checked("calibration", p, source)
        ev = checked("evaluation", evaluation, source)
        return cls(method=v["method"], n_bins=v["n_bins"], strategies=tuple(v["strategies"]), fit_split=v["fit_split"],
                   eval_split=v["eval_split"], survey_prevalence=v["survey_prevalence"], fprs=tuple(ev["fprs"]),
                   min_expected_controls=ev["min_expected_controls"])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["strategies"], d["fprs"] = list(self.strategies), list(self.fprs)
        return d
