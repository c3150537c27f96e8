"""Stage `stamps`: stage the Phase 4c stamp set into data/stamps, account for every row, and
write the decoded training cache into data/cache.

stamps.source:
  synthetic          simulate a DR10-like survey in the contract (the embedded default)
  /a/local/dir       copy a Hive-partitioned Phase 4c dataset from disk
  s3://bucket/prefix copy it from S3 (credentials from the AWS chain; endpoint from params)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dhs import atomic
from dhs.stamps.cache import CacheError, build_cache
from dhs.contract.validate import DatasetInvalid, list_shards, validate
from dhs.params import ParamsError, load_params, section
from dhs.simulate.config import ConfigError, SimConfig
from dhs.simulate.dataset import write_synthetic_dataset
from dhs.stamps.staging import StagingError, describe_source, link_tree, stage

STAMPS_KEYS = {"source", "rows_per_shard", "validate_workers", "s3_endpoint_url", "copy_workers", "max_attempts",
               "max_reject_frac", "staging_dir", "cache_dtype", "s3_timeout_s"}


class RejectionRateError(RuntimeError):
    pass


def run(params_path: str = "params.yaml", out_dir: str = "data/stamps", metrics_path: str = "metrics/stamps.json",
        cache_dir: str = "data/cache", progress: bool = True) -> dict:
    params = load_params(params_path)
    st = section(params, "stamps", STAMPS_KEYS, params_path)
    source = str(st.get("source", "synthetic"))
    workers = int(st.get("validate_workers", 1))
    t0 = time.perf_counter()
    if source == "synthetic":
        cfg = SimConfig.from_params(section(params, "simulate", source=params_path))
        with atomic.atomic_dir(out_dir) as tmp:
            summary = write_synthetic_dataset(cfg, tmp, rows_per_shard=int(st.get("rows_per_shard", 2000)), progress=progress)
            report = validate(tmp, workers=workers, progress=progress)
            report.raise_if_errors()
        report.rebase(out_dir)
        what = f"simulated {report.rows_read} stamps on {summary['device']}"
        extra = {"config_id": summary["config_id"]}
    else:
        staging_dir = Path(st.get("staging_dir", "data/staging"))
        res = stage(source, staging_dir, endpoint_url=st.get("s3_endpoint_url") or None, workers=int(st.get("copy_workers", 8)),
                    max_attempts=int(st.get("max_attempts", 5)), timeout_s=float(st.get("s3_timeout_s", 60)), progress=progress)
        report = validate(staging_dir, workers=workers, progress=progress)
        report.raise_if_errors()
        with atomic.atomic_dir(out_dir) as tmp:
            link_tree(staging_dir, tmp, [str(p.relative_to(staging_dir)) for p in list_shards(staging_dir)])
        what = f"staged {len(res.files)} files from {describe_source(source)} ({res.copied} copied, {res.skipped} already staged)"
        extra = {}
    rejected = sum(report.rejected.values())
    max_frac = float(st.get("max_reject_frac", 0.05))
    if report.rows_read and rejected / report.rows_read > max_frac:
        raise RejectionRateError(f"{rejected} of {report.rows_read} rows rejected ({rejected / report.rows_read:.2%} > "
                                 f"stamps.max_reject_frac={max_frac:.2%}):\n{report.summary()}")
    cache = build_cache(report, cache_dir, dtype=str(st.get("cache_dtype", "float16")), workers=workers, progress=progress)
    metrics = {"source": describe_source(source), **extra, **report.to_metrics(),
               "cache": {"rows_by_split": cache.counts, "dtype": str(st.get("cache_dtype", "float16")),
                         "stamp_size": cache.stamp_size, "stamps_clipped_f16": cache.stamps_clipped}}
    atomic.write_json(metrics_path, metrics)
    dt = time.perf_counter() - t0
    print(f"stamps: {what}; {report.rows_used} usable, rejected {dict(sorted(report.rejected.items()))}; "
          f"cache {cache.counts} ({dt:.1f} s)")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/stamps")
    ap.add_argument("--cache", default="data/cache")
    ap.add_argument("--metrics", default="metrics/stamps.json")
    args = ap.parse_args(argv)
    try:
        run(args.params, args.out, args.metrics, args.cache)
    except (ParamsError, ConfigError, DatasetInvalid, StagingError, RejectionRateError, CacheError) as exc:
        print(f"stamps: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
