"""The fitted calibrator of an arch and its file, ``data/calibration/{arch}/calibrator.json``."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dhs import atomic
from dhs.evaluation.fitting import apply_isotonic, apply_temperature
from dhs.evaluation.prevalence import posterior_at_prevalence
from dhs.evaluation.reliability import CalibrationError, _prevalence
from dhs.params.schema import CALIBRATION_METHODS

CALIBRATOR_FORMAT = "dhs-calibrator/1"


# --------------------------------------------------------------------------- the calibrator

@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map from raw logits to P(lens) at the fit split's prevalence.

    ``temperature`` is always fitted, also when ``method`` is isotonic, so every consumer can use
    it. ``pi_train`` is the injection fraction of the fit split (the prevalence at which the
    calibrated probabilities are posteriors). ``checkpoint``/``checkpoint_sha256`` name the model
    whose logits it calibrates."""
    method: str
    temperature: float
    pi_train: float
    checkpoint: str
    checkpoint_sha256: str
    fit_split: str
    n_fit: int
    isotonic_logits: tuple[float, ...] = ()
    isotonic_probs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise CalibrationError(f"calibrator method must be one of {list(CALIBRATION_METHODS)}, got {self.method!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise CalibrationError(f"calibrator temperature must be finite and > 0, got {self.temperature!r}")
        _prevalence(self.pi_train, "calibrator pi_train")
        x, p = np.asarray(self.isotonic_logits, np.float64), np.asarray(self.isotonic_probs, np.float64)
        if self.method == "isotonic":
            if x.size == 0 or x.shape != p.shape:
                raise CalibrationError(f"an isotonic calibrator needs equally many knot logits and probabilities (got {x.size} and {p.size})")
            if np.any(np.diff(x) < 0) or np.any(np.diff(p) < 0) or p.min() < 0 or p.max() > 1:
                raise CalibrationError("isotonic knots must be non-decreasing in logit and probability, with probabilities in [0, 1]")
        elif x.size or p.size:
            raise CalibrationError("a temperature calibrator carries no isotonic knots")

    def probabilities(self, logits) -> np.ndarray:
        """Calibrated P(lens) of raw model logits, at prevalence ``pi_train``."""
        if self.method == "isotonic":
            return apply_isotonic(logits, self.isotonic_logits, self.isotonic_probs)
        return apply_temperature(logits, self.temperature)

    def temperature_probabilities(self, logits) -> np.ndarray:
        """sigmoid(logits / T), whatever ``method`` is."""
        return apply_temperature(logits, self.temperature)

    def probabilities_at_prevalence(self, logits, pi_survey: float) -> np.ndarray:
        """Calibrated posteriors moved from ``pi_train`` to ``pi_survey`` (Bayes' rule)."""
        return posterior_at_prevalence(self.probabilities(logits), self.pi_train, pi_survey)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["isotonic_logits"] = list(self.isotonic_logits)
        d["isotonic_probs"] = list(self.isotonic_probs)
        return {"format": CALIBRATOR_FORMAT, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "calibrator") -> "Calibrator":
        if d.get("format") != CALIBRATOR_FORMAT:
            raise CalibrationError(f"{source}: format {d.get('format')!r} is not {CALIBRATOR_FORMAT!r}; rerun `dvc repro calibration`")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - {"isotonic_logits", "isotonic_probs"} - set(d))
        if missing:
            raise CalibrationError(f"{source}: missing field(s) {missing}; rerun `dvc repro calibration`")
        kw = {k: d[k] for k in fields if k in d}
        kw["isotonic_logits"] = tuple(float(v) for v in kw.get("isotonic_logits", ()))
        kw["isotonic_probs"] = tuple(float(v) for v in kw.get("isotonic_probs", ()))
        return cls(**kw)


def save_calibrator(path: str | Path, calibrator: Calibrator) -> None:
    """Write ``calibrator`` as JSON atomically (usually data/calibration/{arch}/calibrator.json)."""
    atomic.write_json(path, calibrator.to_dict())


def load_calibrator(path: str | Path) -> Calibrator:
    """The calibrator saved at ``path``; use ``.probabilities(logits)`` on raw model logits."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path} not found; run `dvc repro calibration` first")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path} is not valid JSON ({exc}); rerun `dvc repro calibration`") from None
    return Calibrator.from_dict(d, str(path))
