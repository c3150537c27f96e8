"""The report's settings (params section ``report``) and what every section shares: the inputs,
the score tables and the per-arch ROC summaries, each loaded once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from dhs.params import ParamsError
from dhs.report.scoring import REPORT_COLUMNS, ArchSummary, ReportDataError, summarise
from dhs.report.sources import Inputs, safe_name
from dhs.evaluation.scores import SCORE_SPLITS, ScoresError, check_scores
from dhs.evaluation.thresholds import ThresholdError

REPORT_KEYS = {"archs", "title", "split", "fprs", "gallery_n", "gallery_theta_bins", "seed"}


@dataclass(frozen=True)
class ReportConfig:
    """``report`` params. ``archs: null`` takes ``train.archs``."""

    archs: tuple[str, ...]
    title: str = "Dark Halo Scope: selection function report"
    split: str = "test"
    fprs: tuple[float, ...] = (1e-2, 1e-3)
    gallery_n: int = 6
    gallery_theta_bins: int = 4
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any], source: str = "params.yaml") -> ReportConfig:
        rep = params.get("report") or {}
        if not isinstance(rep, Mapping):
            raise ParamsError(f"{source}: 'report' must be a mapping, got {type(rep).__name__}")
        unknown = sorted(set(rep) - REPORT_KEYS)
        if unknown:
            raise ParamsError(f"{source}: unknown keys {unknown} in 'report'; allowed keys are {sorted(REPORT_KEYS)}")
        archs = rep.get("archs")
        if archs is None:
            archs = (params.get("train") or {}).get("archs")
            if not archs:
                raise ParamsError(f"{source}: set report.archs or train.archs (a list of architecture names)")
        if isinstance(archs, str) or not isinstance(archs, (list, tuple)) or not archs:
            raise ParamsError(f"{source}: report.archs must be a non-empty list of architecture names, got {archs!r}")
        try:
            archs = tuple(safe_name(str(a)) for a in archs)
        except ValueError as exc:
            raise ParamsError(f"{source}: report.archs: {exc}") from None
        split = str(rep.get("split", "test"))
        if split not in SCORE_SPLITS:
            raise ParamsError(f"{source}: report.split must be one of {list(SCORE_SPLITS)}, got {split!r}")
        fprs = rep.get("fprs", [1e-2, 1e-3])
        try:
            fprs = tuple(float(x) for x in fprs)
        except (TypeError, ValueError):
            raise ParamsError(f"{source}: report.fprs must be a list of numbers in (0, 1), got {fprs!r}") from None
        if not fprs or not all(0.0 < x < 1.0 for x in fprs):
            raise ParamsError(f"{source}: report.fprs must be a non-empty list of numbers in (0, 1), got {list(fprs)}")
        ints = {}
        for key, lo, hi, default in (("gallery_n", 1, 20, 6), ("gallery_theta_bins", 1, 10, 4), ("seed", 0, 2**32 - 1, 0)):
            v = rep.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ParamsError(f"{source}: report.{key} must be an integer in [{lo}, {hi}], got {v!r}")
            ints[key] = v
        title = str(rep.get("title") or cls.title)
        return cls(archs=archs, title=title, split=split, fprs=fprs, **ints)


@dataclass
class Context:
    cfg: ReportConfig
    inputs: Inputs
    params_path: str = "params.yaml"
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)
    score_errors: dict[str, str] = field(default_factory=dict)   # arch -> why there is no table
    summaries: dict[str, ArchSummary] = field(default_factory=dict)
    summary_errors: dict[str, str] = field(default_factory=dict)

    def scores_rel(self, arch: str) -> str:
        return f"data/scores/{arch}.parquet"

    def load(self) -> Context:
        """Read every arch's score table and summarise it; failures are kept per arch, not raised."""
        for arch in self.cfg.archs:
            rel = self.scores_rel(arch)
            p = self.inputs.path(rel)
            if not p.is_file():
                self.score_errors[arch] = f"not run: infer@{arch} ({rel} not found)"
                continue
            try:
                have = set(pq.read_schema(p).names)
                df = pd.read_parquet(p, columns=[c for c in REPORT_COLUMNS if c in have])
                self.scores[arch] = check_scores(df, source=rel)
            except ScoresError as exc:  # its message names the file
                self.score_errors[arch] = f"error: {exc}"
                continue
            except (OSError, ValueError) as exc:
                self.score_errors[arch] = f"error: {rel}: {exc}"
                continue
            try:
                self.summaries[arch] = summarise(arch, self.scores[arch], self.cfg.split, self.cfg.fprs)
            except (ReportDataError, ThresholdError) as exc:
                self.summary_errors[arch] = f"error: {rel}: {exc}"
        return self

    def arch_problem(self, arch: str) -> str | None:
        return self.score_errors.get(arch) or self.summary_errors.get(arch)
