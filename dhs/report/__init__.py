"""The HTML report: one self-contained page (figures as base64 PNG, CSS inline, no external
requests) with every table and figure of a pipeline run. ``build_report`` assembles it;
``stages/report.py`` writes it to ``plots/report/index.html``."""

from dhs.report.build import build_report
from dhs.report.context import ReportConfig

__all__ = ["ReportConfig", "build_report"]
