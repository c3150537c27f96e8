"""Assemble the report page from its sections, in reading order."""

from __future__ import annotations

from pathlib import Path

from dhs.report import sections as S
from dhs.report import stage_sections as T
from dhs.report.context import Context, ReportConfig
from dhs.report.html import Section, notice, page
from dhs.report.sources import Inputs

SECTIONS = (S.headline, S.accounting, T.population, S.galleries, S.training, S.roc, T.completeness, T.false_positives, T.surface,
            T.selection, T.sensitivity, T.calibration, T.gates, T.known_lenses, T.provenance)


def _guarded(fn, ctx: Context) -> Section:
    """The section ``fn`` builds; where a file it reads holds a value of another type than its stage
    writes (a string for a number, a list for an object), a section that says so instead of a crash."""
    try:
        return fn(ctx)
    except Exception as exc:  # noqa: BLE001 - any such value, in any of the files a section reads
        what = " ".join(str(exc).split())[:300]
        return Section(fn.__name__, fn.__name__.replace("_", " ").capitalize(),
                       notice("error", f"this section could not be drawn: {type(exc).__name__}: {what}. A file it reads holds "
                                       f"a value of another type than its stage writes; rerun that stage (`dvc repro -f <stage>`)"),
                       "error")


def build_report(cfg: ReportConfig, root: str | Path = ".", params_path: str = "params.yaml",
                 cache_dir: str | Path | None = None) -> tuple[str, dict[str, str]]:
    """The page's HTML and each section's status (ok | partial | notrun | error).

    Every input path is taken relative to ``root``; ``cache_dir`` overrides ``root/data/cache``.
    """
    ctx = Context(cfg, Inputs(root, cache_dir), params_path).load()
    built = [_guarded(fn, ctx) for fn in SECTIONS]
    subtitle = [f"finders: {', '.join(cfg.archs)}; evaluation split: {cfg.split}",
                "the result first, then the gates; every number is read from the stage output named beside it, or the section "
                "says which stage has not run"]
    try:
        result = T.result_summary(ctx)
    except Exception as exc:  # noqa: BLE001 - a value of another type in a metrics file: said, not a crash
        result = notice("warn", f"the result summary could not be drawn ({type(exc).__name__}: {exc}); a metrics file holds a "
                                f"value of another type than its stage writes")
    try:
        banner = T.gate_banner(ctx)
    except Exception as exc:  # noqa: BLE001 - a value of another type in a gates file: said, not a crash
        banner = notice("warn", f"the gate summary could not be drawn ({type(exc).__name__}: {exc}); a metrics/gates file "
                                f"holds a value of another type than the gates stage writes")
    banner = result + banner
    html = page(cfg.title, subtitle, banner, built,
                footer="Dark Halo Scope report, written by stages/report.py (dvc stage `report`).")
    return html, {s.id: s.status for s in built}
