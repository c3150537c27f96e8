"""Loader throughput: normalised tensors from the decoded cache against the per-row
path (read parquet, decode ``stamp_npz`` row by row, normalise), same process, same stamps.

    python benchmarks/bench_cache.py [--n 8192] [--batch-size 256] [--threads 1]

Prints stamps/s for each path, per CPU thread, and the ratio. Targets: >= 20,000
stamps/s per core from the cache, >= 10x the per-row NPZ path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import yaml

from dhs.imaging.cache import build_cache, open_split
from dhs.contract import decode_stamp, validate
from dhs.models.loader import NormConfig, iterate_batches, normalize, shard_indices
from dhs.simulate.config import SimConfig
from dhs.simulate.dataset import write_synthetic_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8192, help="stamps to simulate for the benchmark")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the per-core figure divides by this)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    norm = NormConfig.from_params({})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        p = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "params.yaml"))["simulate"]
        # deflate, as real Phase 4c stamps are written (numpy.savez_compressed)
        p.update(n_stamps=args.n, failed_cutout_fraction=0.0, n_regions=20, split_fractions={"train": 0.9, "val": 0.05, "test": 0.05},
                 npz_compression="deflate")
        print(f"simulating {args.n} stamps for the benchmark ...", flush=True)
        write_synthetic_dataset(SimConfig.from_params(p), tmp / "stamps", progress=False)
        report = validate(tmp / "stamps", progress=False)
        build_cache(report, tmp / "cache", dtype=args.dtype, progress=False)
        split = open_split(tmp / "cache", "train")
        n = len(split)
        idx = shard_indices(n, shuffle=True, seed=0)

        # warm the page cache so both paths read from memory
        _ = np.asarray(split.images, dtype=np.float32).sum()
        t = time.perf_counter()
        for _batch in iterate_batches(split, idx, args.batch_size, norm):
            pass
        cache_s = time.perf_counter() - t

        shards = sorted((tmp / "stamps" / "region_split=train").glob("*.parquet"))
        t = time.perf_counter()
        done = 0
        for shard in shards:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=args.batch_size, columns=["stamp_npz", "stamp_size"]):
                imgs = [decode_stamp(b) for b in batch.column("stamp_npz").to_pylist()]
                normalize(torch.from_numpy(np.stack(imgs)), norm)
                done += len(imgs)
        npz_s = time.perf_counter() - t

    rate_cache, rate_npz = n / cache_s, done / npz_s
    print(f"\n{'path':<34}{'stamps/s':>12}{'per thread':>12}")
    print(f"{'cache (' + args.dtype + ', shuffled, normalised)':<34}{rate_cache:>12,.0f}{rate_cache / args.threads:>12,.0f}")
    print(f"{'per-row stamp_npz decode':<34}{rate_npz:>12,.0f}{rate_npz / args.threads:>12,.0f}")
    print(f"ratio cache / per-row npz: {rate_cache / rate_npz:.1f}x  ({n} cached stamps, {done} decoded, torch threads {args.threads})")


if __name__ == "__main__":
    main()
