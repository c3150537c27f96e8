"""Stage `stamps`: stage the Phase 4c stamp set into data/stamps and account for every row.

source: synthetic -> simulate a DR10-like survey in the contract (the embedded default).
"""

from __future__ import annotations

import argparse
import sys
import time

from dhs import atomic
from dhs.contract.validate import DatasetInvalid, validate
from dhs.params import ParamsError, load_params, section
from dhs.simulate.config import ConfigError, SimConfig
from dhs.simulate.dataset import write_synthetic_dataset

STAMPS_KEYS = {"source", "rows_per_shard", "validate_workers"}


def run(params_path: str = "params.yaml", out_dir: str = "data/stamps", metrics_path: str = "metrics/stamps.json", progress: bool = True) -> dict:
    params = load_params(params_path)
    st = section(params, "stamps", STAMPS_KEYS, params_path)
    source = st.get("source", "synthetic")
    t0 = time.perf_counter()
    if source != "synthetic":
        raise ParamsError(f"{params_path}: stamps.source={source!r} is not supported yet; use 'synthetic'")
    cfg = SimConfig.from_params(section(params, "simulate", source=params_path))
    with atomic.atomic_dir(out_dir) as tmp:
        summary = write_synthetic_dataset(cfg, tmp, rows_per_shard=int(st.get("rows_per_shard", 2000)), progress=progress)
        report = validate(tmp, workers=int(st.get("validate_workers", 1)), progress=progress)
        if not report.ok:
            raise DatasetInvalid(report)
    metrics = {"source": "synthetic", "config_id": summary.get("config_id"), **report.to_metrics()}
    metrics["rows_written_by_split"] = summary["rows_written_by_split"]
    atomic.write_json(metrics_path, metrics)
    dt = time.perf_counter() - t0
    print(f"stamps: {report.rows_read} rows in {summary['n_files']} shards, {report.rows_used} usable, "
          f"rejected {dict(report.rejected)} ({dt:.1f} s, {report.rows_read / dt:.0f} stamps/s on {summary['device']})")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/stamps")
    ap.add_argument("--metrics", default="metrics/stamps.json")
    args = ap.parse_args(argv)
    try:
        run(args.params, args.out, args.metrics)
    except (ParamsError, ConfigError, DatasetInvalid) as exc:
        print(f"stamps: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
