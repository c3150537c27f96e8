"""Completeness aggregation at production size: a synthetic 10.6M-row score table (the real
production set: 10,627,158 stamps, about half controls, 782 regions) through the Spark count
table of ``dhs.measurement.counts`` and through the pandas reference, same run, same table.

    python benchmarks/bench_completeness.py [--rows 10627158] [--master local[*]]

Both paths compute the same (variable x bin x region) count table for the params.yaml bins,
the theta_E x PSF surface and the three FPR thresholds; the benchmark checks they agree, then
prints wall times, rows/s and the ratio. The FPR thresholds (top-k of the control scores) are
timed separately for Spark. Intervals (Wilson, region bootstrap) run on the small table and
are timed once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from dhs.measurement.counts import Criterion, headline_bins, region_bin_counts_pandas, region_bin_counts_spark, completeness_intervals, surface_name
from dhs.measurement.measure import CompletenessConfig
from dhs.measurement.spark import spark_session
from dhs.evaluation.thresholds import threshold_at_fpr

REPO = Path(__file__).resolve().parents[1]


def synthetic_scores(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int8)
    theta = np.where(label == 1, rng.uniform(0.5, 2.5, n), np.nan)
    psf = np.clip(rng.normal(1.31, 0.17, n), 0.8, 1.6)
    score = np.clip(rng.beta(1 + 6 * label, 6 - 5 * label), 1e-7, 1 - 1e-7)
    cols = {
        "task_id": pa.array(np.char.add("t", np.arange(n).astype("U9")).astype(object)) if n <= 2_000_000 else pa.array([f"t{i}" for i in range(n)]),
        "split": pa.array(np.where(rng.random(n) < 0.8, "test", "val")), "label": label, "score": score,
        "logit": np.log(score / (1 - score)), "region_id": rng.integers(0, 782, n),
        "theta_e_arcsec": theta, "psf_r_arcsec": psf, "theta_e_over_psf": theta / psf,
        "psfdepth_r": rng.uniform(23.6, 26.8, n), "src_r_mag": np.where(label == 1, rng.uniform(20.5, 23.0, n), np.nan),
        "arc_snr": np.where(label == 1, rng.lognormal(3.4, 1.2, n), np.nan),
        "bad_pixel_frac": np.where(rng.random(n) < 0.88, 0.0, rng.uniform(0, 0.5, n)),
        "wise_brightmask_frac": np.where(rng.random(n) < 0.94, 0.0, rng.uniform(0, 0.8, n)),
    }
    return pa.table(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_627_158)
    ap.add_argument("--master", default="local[*]")
    ap.add_argument("--driver-memory", default="6g")
    args = ap.parse_args()
    params = yaml.safe_load(open(REPO / "params.yaml"))
    cfg = CompletenessConfig.from_params({**params["completeness"], "spark": {}}, evaluation=params["evaluation"])
    bins = [*headline_bins(), *cfg.bins]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scores.parquet"
        t0 = time.perf_counter()
        table = synthetic_scores(args.rows)
        pq.write_table(table, path, row_group_size=1_000_000)
        print(f"score table: {args.rows:,} rows, {path.stat().st_size / 1e6:.0f} MB parquet (made in {time.perf_counter() - t0:.0f} s)")
        del table

        spark = spark_session({"master": args.master, "driver_memory": args.driver_memory, "shuffle_partitions": 8})
        sdf = spark.read.parquet(str(path)).where("split = 'test'")
        t0 = time.perf_counter()
        from pyspark.sql import functions as F

        ctl = sdf.where("label = 0")
        n_ctl = ctl.count()
        need = int(max(cfg.fprs) * n_ctl) + 1
        top = np.array([r[0] for r in ctl.select("score").orderBy(F.desc("score")).limit(need).collect()])
        thr_spark = {f: float(top[int(f * n_ctl + 1e-9)]) for f in cfg.fprs}
        t_thr_spark = time.perf_counter() - t0
        crits = [Criterion(f"fpr_{f:g}", "score", thr_spark[f]) for f in cfg.fprs]
        t0 = time.perf_counter()
        counts_spark = region_bin_counts_spark(sdf.where("label = 1"), bins, crits, cfg.clean_max, cfg.surfaces())
        t_spark = time.perf_counter() - t0

        t0 = time.perf_counter()
        df = pd.read_parquet(path, columns=[c for c in pa.parquet.read_schema(path).names if c != "task_id"])
        df = df[df["split"] == "test"]
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        thr_pd = {f: threshold_at_fpr(df.loc[df["label"] == 0, "score"].to_numpy(), f).score for f in cfg.fprs}
        t_thr_pd = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts_pd = region_bin_counts_pandas(df[df["label"] == 1], bins, crits, cfg.clean_max, cfg.surfaces())
        t_pd = time.perf_counter() - t0
        n_eval = len(df)
        del df

        assert thr_spark == thr_pd, (thr_spark, thr_pd)
        pd.testing.assert_frame_equal(counts_spark[sorted(counts_spark.columns)], counts_pd[sorted(counts_pd.columns)], check_dtype=False)
        specs = {b.name: b.edges for b in bins}
        for bx, by in cfg.surfaces():
            specs[surface_name(bx, by)] = bx.n_bins * by.n_bins
        t0 = time.perf_counter()
        completeness_intervals(counts_spark, specs, crits, cfg.n_bootstrap, 0, 0.95)
        t_sum = time.perf_counter() - t0
        spark.stop()

    n_inj = int(counts_spark.loc[counts_spark["var"] == "overall", "n"].sum())
    print(f"evaluation split: {n_eval:,} rows ({n_inj:,} injections), {len(bins) + 1} binnings, {len(crits)} thresholds, "
          f"count table {len(counts_spark):,} rows; Spark and pandas tables identical")
    print(f"thresholds (top-k of controls): Spark {t_thr_spark:.1f} s, numpy sort {t_thr_pd:.1f} s")
    print(f"count table: Spark ({args.master}) {t_spark:.1f} s = {n_eval / t_spark:,.0f} rows/s; "
          f"pandas {t_pd:.1f} s = {n_eval / t_pd:,.0f} rows/s (+ {t_read:.1f} s reading parquet)")
    print(f"ratio pandas / Spark (count table): {t_pd / t_spark:.2f}x")
    print(f"Wilson + region bootstrap (B={cfg.n_bootstrap}) on the count table: {t_sum:.1f} s")


if __name__ == "__main__":
    main()
