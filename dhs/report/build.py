"""Assemble the report page from its sections, in reading order."""

from __future__ import annotations

from pathlib import Path

from dhs.report import sections as S
from dhs.report import stage_sections as T
from dhs.report.context import Context, ReportConfig
from dhs.report.html import page
from dhs.report.sources import Inputs

SECTIONS = (S.headline, S.accounting, T.population, S.galleries, S.training, S.roc, T.completeness, T.false_positives, T.surface,
            T.selection, T.sensitivity, T.calibration, T.gates, T.known_lenses, T.provenance)


def build_report(cfg: ReportConfig, root: str | Path = ".", params_path: str = "params.yaml",
                 cache_dir: str | Path | None = None) -> tuple[str, dict[str, str]]:
    """The page's HTML and each section's status (ok | partial | notrun | error).

    Every input path is taken relative to ``root``; ``cache_dir`` overrides ``root/data/cache``.
    """
    ctx = Context(cfg, Inputs(root, cache_dir), params_path).load()
    built = [fn(ctx) for fn in SECTIONS]
    subtitle = [f"architectures: {', '.join(cfg.archs)}; evaluation split: {cfg.split}",
                "gate status first; every number is read from the stage output named beside it, or the section says which stage has not run"]
    html = page(cfg.title, subtitle, T.gate_banner(ctx), built,
                footer="Dark Halo Scope report, written by stages/report.py (dvc stage `report`).")
    return html, {s.id: s.status for s in built}
