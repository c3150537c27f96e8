"""The ``calibration`` params section, with the operating FPRs of ``evaluation``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from dhs.params import checked
from dhs.params.views import view


@dataclass(frozen=True)
class CalibrationConfig:
    """A view of the ``calibration`` section of params.yaml (each key, its default and its check
    in dhs.params.schema); ``fprs`` and ``min_expected_controls`` are the shared operating points
    of ``evaluation``."""
    SECTION: ClassVar[str] = "calibration"
    method: str
    n_bins: int
    strategies: tuple[str, ...]
    fit_split: str
    eval_split: str
    survey_prevalence: float
    fprs: tuple[float, ...]
    min_expected_controls: float

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml",
                    evaluation: Mapping[str, Any] | None = None) -> "CalibrationConfig":
        ev = checked("evaluation", evaluation, source)
        return view(cls, p, source, fprs=tuple(ev["fprs"]), min_expected_controls=ev["min_expected_controls"])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["strategies"], d["fprs"] = list(self.strategies), list(self.fprs)
        return d
