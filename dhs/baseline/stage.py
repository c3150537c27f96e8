"""The body of stage ``baseline``: both metadata-only models on the cached metadata.

Reads data/cache (train fits, val and test score) and writes metrics/baseline.json atomically.
"""

from __future__ import annotations

import time

from dhs import headline
from dhs.baseline.config import BaselineConfig
from dhs.baseline.models import load_cache_meta, run_baseline, summary_lines
from dhs.params import Params, as_params


def run(params: str | Params = "params.yaml", cache_dir: str = "data/cache", metrics_path: str = "metrics/baseline.json") -> dict:
    p = as_params(params).require("baseline")
    cfg = BaselineConfig.from_params(p["baseline"], p.source)
    t0 = time.perf_counter()
    splits = load_cache_meta(cache_dir)
    metrics = run_baseline(splits, cfg)
    headline.write("baseline", metrics_path, metrics)
    for line in summary_lines(metrics):
        print(f"baseline: {line}")
    print(f"baseline: wrote {metrics_path} ({time.perf_counter() - t0:.1f} s)")
    return metrics
