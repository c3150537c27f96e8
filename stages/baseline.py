"""Stage `baseline`: metadata-only models on the cached stamp metadata (no pixels).

leak:   observing conditions -> injection label; test AUC about 0.5 means injections and
        controls share conditions (DOMAIN pitfall 9). A WARNING is printed above leak_auc_warn.
proxy:  the seed's scalar baseline; injection parameters -> Phase 4d proxy "recovered"
        (arc_snr >= proxy_snr_min AND theta_E/PSF >= proxy_theta_psf_min), injections only.

Reads data/cache (train fits, val and test score) and writes metrics/baseline.json atomically.
"""

from __future__ import annotations

import argparse
import sys
import time

from dhs import atomic
from dhs.baseline.models import BaselineConfig, BaselineError, load_cache_meta, run_baseline, summary_lines
from dhs.stamps.cache import CacheError
from dhs.params import ParamsError, load_params, section


def run(params_path: str = "params.yaml", cache_dir: str = "data/cache", metrics_path: str = "metrics/baseline.json") -> dict:
    params = load_params(params_path)
    cfg = BaselineConfig.from_params(section(params, "baseline", BaselineConfig.keys(), params_path), params_path)
    t0 = time.perf_counter()
    splits = load_cache_meta(cache_dir)
    metrics = run_baseline(splits, cfg)
    atomic.write_json(metrics_path, metrics)
    for line in summary_lines(metrics):
        print(f"baseline: {line}")
    print(f"baseline: wrote {metrics_path} ({time.perf_counter() - t0:.1f} s)")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache", default="data/cache")
    ap.add_argument("--metrics", default="metrics/baseline.json")
    args = ap.parse_args(argv)
    try:
        run(args.params, args.cache, args.metrics)
    except (ParamsError, BaselineError, CacheError) as exc:
        print(f"baseline: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
