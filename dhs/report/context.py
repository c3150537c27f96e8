"""The report's settings (params section ``report``) and what every section shares: the inputs and
the score tables the galleries pick their stamps from, each loaded once.

Every number on the page is read from a stage's output under ``metrics/`` or ``plots/`` and
shown with the file it came from; the score tables and the cache only choose and caption the
stamps the galleries show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pyarrow.parquet as pq
import yaml

from dhs.evaluation.scores import ScoresError, check_scores
from dhs.params import Params
from dhs.params.views import view
from dhs.report.sources import Inputs

GALLERY_COLUMNS = ("task_id", "split", "label", "logit", "score", "region_id", "theta_e_arcsec", "theta_e_over_psf", "arc_snr",
                   "arc_snr_int", "discoverable")


@dataclass(frozen=True)
class ReportConfig:
    """A view of the ``report`` section of params.yaml (each key, its default and its check in
    dhs.params.schema). ``archs: null`` takes ``finders.measure``; ``split`` (the galleries'
    stamps) is not a key of the section: it is ``completeness.eval_split``, the split every
    number on the page was measured on."""
    SECTION: ClassVar[str] = "report"
    archs: tuple[str, ...]
    title: str
    split: str
    gallery_n: int
    gallery_theta_bins: int
    gallery_min_arc_snr: float
    seed: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any], source: str = "params.yaml") -> ReportConfig:
        p = params if isinstance(params, Params) else Params(params, source)
        rep = p["report"]
        archs = rep["archs"] if rep["archs"] is not None else p["finders"]["measure"]
        return view(cls, rep, p.source, archs=tuple(archs), split=p["completeness"]["eval_split"])


@dataclass
class Context:
    cfg: ReportConfig
    inputs: Inputs
    params_path: str = "params.yaml"
    scores: dict[str, pd.DataFrame] = field(default_factory=dict)
    score_errors: dict[str, str] = field(default_factory=dict)   # arch -> why there is no table

    @property
    def params(self) -> dict:
        """params.yaml as written ({} where it is missing or unreadable: the provenance section says so)."""
        pp = Path(self.params_path) if Path(self.params_path).is_absolute() else self.inputs.path(self.params_path)
        try:
            return yaml.safe_load(pp.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return {}

    def scores_rel(self, arch: str) -> str:
        return f"data/scores/{arch}.parquet"

    def load(self) -> Context:
        """Read every arch's score table (for the galleries); failures are kept per arch, not raised."""
        for arch in self.cfg.archs:
            rel = self.scores_rel(arch)
            p = self.inputs.path(rel)
            if not p.is_file():
                self.score_errors[arch] = f"not run: infer@{arch} ({rel} not found)"
                continue
            try:
                have = set(pq.read_schema(p).names)
                df = pd.read_parquet(p, columns=[c for c in GALLERY_COLUMNS if c in have])
                self.scores[arch] = check_scores(df, source=rel)
            except ScoresError as exc:  # its message names the file
                self.score_errors[arch] = f"error: {exc}"
            except (OSError, ValueError) as exc:
                self.score_errors[arch] = f"error: {rel}: {exc}"
        return self
