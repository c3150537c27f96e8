"""Stage `report`: one self-contained HTML page (plots/report/index.html) with every table and
figure of the run: headline comparison of the archs, dataset accounting, galleries, training
curves, ROC and TPR at fixed FPR, completeness (theta_E, theta_E/PSF, the theta_E x PSF surface),
sensitivity, calibration, gates, known-lens recovery, and the params and data version.

Inputs other stages have not produced yet are reported as "not run: <stage> (<path> not found)"
in their section; the page is always written (atomically).
"""

from __future__ import annotations

import argparse
import sys
import time

from dhs import atomic
from dhs.params import ParamsError, load_params
from dhs.report import ReportConfig, build_report


def run(params_path: str = "params.yaml", root: str = ".", out: str = "plots/report/index.html",
        cache_dir: str | None = None) -> dict[str, str]:
    t0 = time.perf_counter()
    cfg = ReportConfig.from_params(load_params(params_path), params_path)
    html, status = build_report(cfg, root=root, params_path=params_path, cache_dir=cache_dir)
    atomic.write_text(out, html)
    missing = sorted(k for k, v in status.items() if v != "ok")
    print(f"report: wrote {out} ({len(html) / 1e6:.2f} MB, {len(status)} sections; "
          f"not complete: {', '.join(f'{k} ({status[k]})' for k in missing) or 'none'}) in {time.perf_counter() - t0:.1f} s")
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".", help="directory the metrics/, plots/, data/ and dvclive/ paths are relative to")
    ap.add_argument("--out", default="plots/report/index.html")
    ap.add_argument("--cache", default=None, help="the stamp cache (default: <root>/data/cache)")
    args = ap.parse_args(argv)
    try:
        run(args.params, args.root, args.out, args.cache)
    except ParamsError as exc:
        print(f"report: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
