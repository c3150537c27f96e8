"""The thresholds known-lens recall is measured at, read from the stages that own them.

- Score thresholds: ``metrics/completeness/{arch}.json`` key ``thresholds``, a list of
  ``{"name", "target_fpr", "score", "n_controls", "n_controls_above", "achieved_fpr",
  "low_count"}``. ``score`` is on the sigmoid-score scale of the score table
  (``score = sigmoid(logit)``); a lens passes when its score > threshold. Entries with
  ``target_fpr: null`` are fixed-score thresholds reported beside the FPR ones.
- Calibrated-probability thresholds: ``p > t`` for each t of ``known_lenses.prob_thresholds``,
  with p from the arch's calibrator (``dhs.evaluation.reliability.load_calibrator(...).probabilities``):
  posteriors at the calibration split's lens fraction ``pi_train``, not at survey prevalence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from dhs.errors import StageError
from dhs.known_lenses.recall import RecallPoint


class OperatingPointError(StageError, ValueError):
    pass


def load_score_thresholds(path: str | Path) -> tuple[list[RecallPoint], dict[str, dict], str]:
    """Recall points on column ``score``, per name what the completeness stage recorded, and the
    threshold to highlight (the completeness stage's ``plot_threshold``, else the first)."""
    path = Path(path)
    if not path.is_file():
        raise OperatingPointError(f"{path} not found: known-lens recall uses the FPR thresholds of the completeness stage; "
                                  f"run `dvc repro completeness` first (or pass --thresholds)")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise OperatingPointError(f"{path} is not valid JSON ({exc}); rerun `dvc repro completeness`") from None
    entries = metrics.get("thresholds") if isinstance(metrics, dict) else None
    if not isinstance(entries, list) or not entries:
        raise OperatingPointError(f"{path} has no non-empty 'thresholds' list; rerun `dvc repro completeness`")
    points, info = [], {}
    for i, t in enumerate(entries):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or "score" not in t:
            raise OperatingPointError(f"{path}: thresholds[{i}] needs a 'name' and a 'score', got {t!r}")
        score = t["score"]
        if not isinstance(score, (int, float)) or not math.isfinite(score):
            raise OperatingPointError(f"{path}: threshold {t['name']} has a non-finite score {score!r}")
        if t["name"] in info:
            raise OperatingPointError(f"{path}: threshold name {t['name']} appears twice")
        points.append(RecallPoint(t["name"], "score", float(score)))
        info[t["name"]] = {"kind": "fpr" if t.get("target_fpr") is not None else "fixed_score", "column": "score",
                           "threshold": float(score),
                           **{k: t[k] for k in ("target_fpr", "achieved_fpr", "n_controls", "n_controls_above", "low_count") if k in t}}
    plot = metrics.get("plot_threshold")
    return points, info, (plot if plot in info else points[0].name)


def probability_points(thresholds: Sequence[float]) -> tuple[list[RecallPoint], dict[str, dict]]:
    """Recall points ``p_<t>`` on column ``probability``; each t must be in (0, 1)."""
    points, info = [], {}
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            raise OperatingPointError(f"known_lenses.prob_thresholds must be numbers in (0, 1), got {t!r}")
        name = f"p_{float(t):g}"
        points.append(RecallPoint(name, "probability", float(t)))
        info[name] = {"kind": "calibrated_probability", "column": "probability", "threshold": float(t)}
    return points, info


def load_probability_map(path: str | Path):
    """The arch's calibrator (``.probabilities(logits)``); errors name the stage to rerun."""
    from dhs.evaluation.calibrator import load_calibrator
    from dhs.evaluation.reliability import CalibrationError

    try:
        return load_calibrator(path)
    except CalibrationError as exc:
        raise OperatingPointError(f"calibrator: {exc}") from None
