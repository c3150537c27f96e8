"""The body of stage ``report``: one self-contained HTML page (plots/report/index.html) with every
table and figure of the run, read from what the other stages wrote under metrics/ and plots/
(and the cache for the gallery stamps). Inputs other stages have not produced yet are reported
as "not run: <stage> (<path> not found)" in their section; the page is always written (atomically).
Beside it, summary.json: the handful of numbers per finder that DVC shows as metrics
(``dhs.headline.summary``).
"""

from __future__ import annotations

import time

from dhs import atomic, headline
from dhs.params import Params, as_params
from dhs.report.build import build_report
from dhs.report.context import ReportConfig


def run(params: str | Params = "params.yaml", root: str = ".", out: str = "plots/report/index.html",
        cache_dir: str | None = None, summary: str = headline.SUMMARY) -> dict[str, str]:
    t0 = time.perf_counter()
    p = as_params(params)
    cfg = ReportConfig.from_params(p)
    html, status = build_report(cfg, root=root, params_path=p.source, cache_dir=cache_dir)
    atomic.write_text(out, html)
    # the handful of numbers DVC shows per finder (`dvc metrics show`, `dvc exp show`)
    plot_fpr = p["completeness"]["plot_fpr"]
    atomic.write_json(summary, headline.summary(root, list(cfg.archs), f"fpr_{plot_fpr:g}"))
    missing = sorted(k for k, v in status.items() if v != "ok")
    print(f"report: wrote {out} ({len(html) / 1e6:.2f} MB, {len(status)} sections; "
          f"not complete: {', '.join(f'{k} ({status[k]})' for k in missing) or 'none'}) in {time.perf_counter() - t0:.1f} s")
    return status
