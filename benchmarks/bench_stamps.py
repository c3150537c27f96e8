"""The stamps stage end to end, by phase, against its injection engine alone.

    python benchmarks/bench_stamps.py [--n 4096] [--device cpu] [--workers 2] [--write-workers 2] [--threads N]

Times, in one run and on one population (params.yaml's simulate section at ``--n`` stamps):

- engine: ``render_batches`` alone (scene, arc, noise, metrics; the stamps stay in memory);
- encode: the rendered batches' ``stamp_npz`` columns (``stamp_column``), alone;
- write: those columns and the rows through the shard writer into parquet, alone;
- encode + write from the rendered pixels (the writer's raw columns), in this process and in
  ``--write-workers`` writer processes (each checked to write the write phase's files byte for
  byte): how the path that bounds a GPU run scales with processes;
- simulate: ``write_synthetic_dataset`` (the engine, npz encoding, parquet shards), written in
  the rendering process; and the stage's path with ``--write-workers`` writer processes, each
  validating the shard it wrote, then the validator's cross-file checks and the cache (checked
  to write the same files and cache byte for byte; the ratios are printed);
- validate: the contract validator over the written shards (``--workers`` processes), keeping
  the decoded pixels for the cache, as the stage does;
- cache: the float16 training cache, copied from those pixels;
- and, as the peer in the same run, validation that keeps nothing and a cache that reads and
  decodes every stamp again (``--workers`` processes), checked to write the same cache;

and prints stamps/s per phase, the stage's total, the ratio of the engine's rate to the
stage's, and the cost per stamp of each phase that is not rendering, in wall time and in core
time (wall x the processes that run it: validate runs ``--workers`` processes, the cache one). Nothing is written outside a temporary
directory.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from dhs.contract.codec import stamp_column
from dhs.contract.shards import HiveShardWriter
from dhs import atomic
from dhs.contract.validate import DecodeInto, validate
from dhs.params import load
from dhs.simulate.config import SimConfig
from dhs.simulate.dataset import encode_stamp_rows, write_synthetic_dataset
from dhs.simulate.fused import mode_for_run, set_compile_mode
from dhs.simulate.population import sample_population
from dhs.simulate.survey import render_batches, resolve_device
from dhs.imaging.cache import build_cache
from dhs.stamps.stage import writer_validation

REPO = Path(__file__).resolve().parents[1]


DISK_PROBE_MB = 256


def disk_write_mb_s(where: Path) -> float:
    """MB/s of one plain write of DISK_PROBE_MB MB (then fsync) in ``where``: what any phase
    that puts bytes on this disk is bounded by."""
    block = bytes(1 << 20)
    with tempfile.NamedTemporaryFile(dir=where) as f:
        t0 = time.perf_counter()
        for _ in range(DISK_PROBE_MB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
        return DISK_PROBE_MB * (1 << 20) / 1e6 / (time.perf_counter() - t0)


def _bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def _same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--write-workers", type=int, default=2, help="writer processes of the second simulate run (stamps.write_workers)")
    ap.add_argument("--compile", default="on", choices=("on", "off", "auto"),
                    help="rendering kernels: on (default) measures the compiled engine of a production-size run; "
                         "auto would render a sample this small eagerly on a CPU")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sim = dict(load(REPO / "params.yaml")["simulate"])
    sim.update(n_stamps=args.n, device=args.device, compile=args.compile)
    cfg = SimConfig.from_params(sim)
    device = resolve_device(cfg.device)
    set_compile_mode(mode_for_run(cfg.compile, cfg.n_stamps, device))
    t0 = time.perf_counter()
    pop = sample_population(cfg)
    t_population = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(render_batches(pop.iloc[: cfg.batch_size], cfg, device))     # warm-up (compilation)
    t_warm = time.perf_counter() - t0
    t = {}
    runs = []
    for _ in range(2):   # the faster of two: the first full pass still meets shapes it has not compiled
        t0 = time.perf_counter()
        batches = list(render_batches(pop, cfg, device))
        runs.append(time.perf_counter() - t0)
    t["engine"] = min(runs)
    with tempfile.TemporaryDirectory() as d:
        out, cache = Path(d) / "stamps", Path(d) / "cache"
        t0 = time.perf_counter()
        columns = [stamp_column(b.images, b.rows["cutout_ok"].to_numpy() == 1) for b in batches]
        t["encode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        writer = HiveShardWriter(Path(d) / "write-only")
        for b, col in zip(batches, columns):
            writer.add(b.rows.drop(columns=["noise_seed"]), {"stamp_npz": col})
        writer.close()
        t["write"] = time.perf_counter() - t0
        written = {"write": _bytes(Path(d) / "write-only")}
        # the same encoding and writing from the rendered pixels (raw columns), here and in writer processes
        encode = partial(encode_stamp_rows, compress=cfg.npz_compression == "deflate")
        t_ew = {}
        # shards small enough that every writer gets several (a sample this size makes only 4 of the stage's 2,000 rows)
        ew_rows = max(64, len(pop) // (8 * max(1, args.write_workers)))
        ref = HiveShardWriter(Path(d) / "write-only-small", rows_per_shard=ew_rows)
        for b, col in zip(batches, columns):
            ref.add(b.rows.drop(columns=["noise_seed"]), {"stamp_npz": col})
        ref.close()
        for workers in (0, args.write_workers):
            t0 = time.perf_counter()
            w = HiveShardWriter(Path(d) / f"raw-{workers}", rows_per_shard=ew_rows, encoders={"stamp_npz": encode}, workers=workers)
            for b in batches:
                w.add(b.rows.drop(columns=["noise_seed"]), raw_columns={"stamp_npz": b.images})
            w.close()
            t_ew[workers] = time.perf_counter() - t0
            if not _same_tree(Path(d) / "write-only-small", Path(d) / f"raw-{workers}"):
                raise SystemExit(f"encoding and writing with {workers} writer processes gave other bytes: the comparison would be void")
        del batches, columns
        t0 = time.perf_counter()
        write_synthetic_dataset(cfg, out, progress=False)
        t["simulate"] = time.perf_counter() - t0
        # the stage's path with writer processes: each validates the shard it wrote (overlapping the
        # rendering), the validator only cross-checks, the cache copies what the writers kept
        with atomic.scratch_dir(Path(d) / "cache-writers", "decoded") as scratch:
            keep = DecodeInto(str(scratch), "float16")
            t0 = time.perf_counter()
            summary = write_synthetic_dataset(cfg, Path(d) / "stamps-writers", progress=False, write_workers=args.write_workers,
                                              after_write=writer_validation(Path(d) / "stamps-writers", keep))
            t_writers = time.perf_counter() - t0
            report = validate(Path(d) / "stamps-writers", workers=args.workers, progress=False, decode_into=keep,
                              done=summary["after_write"])
            build_cache(report, Path(d) / "cache-writers", dtype="float16", workers=args.workers, progress=False)
            t_writers_stage = time.perf_counter() - t0
        if not _same_tree(out, Path(d) / "stamps-writers"):
            raise SystemExit("writer processes wrote other bytes than the rendering process: the comparison would be void")
        # the peer: validation that keeps nothing, then a cache that reads and decodes every stamp again
        t0 = time.perf_counter()
        report = validate(out, workers=args.workers, progress=False)
        peer = {"validate": time.perf_counter() - t0}
        t0 = time.perf_counter()
        build_cache(report, Path(d) / "cache-peer", dtype="float16", workers=args.workers, progress=False)
        peer["cache"] = time.perf_counter() - t0
        # the stage's path: validation keeps the decoded pixels, the cache copies the usable ones
        with atomic.scratch_dir(cache, "decoded") as scratch:
            t0 = time.perf_counter()
            report = validate(out, workers=args.workers, progress=False, decode_into=DecodeInto(str(scratch), "float16"))
            t["validate"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            build_cache(report, cache, dtype="float16", workers=args.workers, progress=False)
            t["cache"] = time.perf_counter() - t0
        written["cache"] = _bytes(cache)
        if not _same_tree(cache, Path(d) / "cache-peer") or not _same_tree(cache, Path(d) / "cache-writers"):
            raise SystemExit("the caches differ: the benchmark would compare unequal outputs")
    n = len(pop)
    stage = t["simulate"] + t["validate"] + t["cache"]
    procs = {"encode": 1, "write": 1, "validate": args.workers, "cache": 1}
    print(f"device {device.type}, {torch.get_num_threads()} torch thread(s), {args.workers} worker process(es), {n} stamps of "
          f"{cfg.stamp_size} px")
    print(f"  before the phases: sampling the population {t_population:.1f} s; the first batch (compiling the fused "
          f"kernels, once per process) {t_warm:.1f} s")
    print(f"  {'phase':<9} {'s':>7}  {'stamps/s':>9}  {'us/stamp wall':>13}  {'us/stamp core':>13}")
    for k, v in t.items():
        core = f"{v / n * 1e6 * procs[k]:13.0f}" if k in procs else ""
        print(f"  {k:<9} {v:7.2f}  {n / v:9.1f}  {v / n * 1e6:13.0f}  {core}")
    print(f"  {'stage':<9} {stage:7.2f}  {n / stage:9.1f}  {stage / n * 1e6:13.0f}  (simulate + validate + cache)")
    not_rendering = max(0.0, t["simulate"] - t["engine"]) / n * 1e6
    core_us = sum(t[k] * procs[k] for k in ("encode", "write", "validate", "cache")) / n * 1e6
    disk = disk_write_mb_s(Path(tempfile.gettempdir()))
    for k, b in written.items():
        print(f"  {k} wrote {b / n / 1e3:.1f} kB per stamp at {b / t[k] / 1e6:.0f} MB/s")
    print(f"  the disk took a plain {DISK_PROBE_MB} MB write (fsync'd) at {disk:.0f} MB/s: writing a stamp's "
          f"{sum(written.values()) / n / 1e3:.0f} kB costs {sum(written.values()) / n / (disk * 1e6) * 1e6:.0f} us at that rate")
    print(f"engine / stage rate: {stage / t['engine']:.2f}x; not rendering, per stamp: simulate - engine {not_rendering:.0f} us wall; "
          f"encode + write + validate + cache {core_us:.0f} core-us")
    ew0, ewn = t_ew[0], t_ew[args.write_workers]
    print(f"encode + write of the rendered batches in shards of {ew_rows} rows: in this process {ew0:.2f} s ({ew0 / n * 1e6:.0f} us/stamp), in "
          f"{args.write_workers} writer processes {ewn:.2f} s ({ewn / n * 1e6:.0f} us/stamp, wall): {ew0 / ewn:.2f}x, the same files")
    print(f"simulate with {args.write_workers} writer processes (each validating the shard it wrote) {t_writers:.2f} s "
          f"({n / t_writers:.1f} stamps/s) against {t['simulate']:.2f} s written in the rendering process: "
          f"{t['simulate'] / t_writers:.2f}x, the same files")
    print(f"stage with {args.write_workers} writer processes {t_writers_stage:.2f} s ({n / t_writers_stage:.1f} stamps/s) against "
          f"{stage:.2f} s: {stage / t_writers_stage:.2f}x, the same files and cache")
    both, both_peer = t["validate"] + t["cache"], peer["validate"] + peer["cache"]
    print(f"validate + cache, one decode (the stage's path) {both:.2f} s against decoding twice {both_peer:.2f} s "
          f"(validate {peer['validate']:.2f} s, cache {peer['cache']:.2f} s in {args.workers} processes): "
          f"{both_peer / both:.2f}x; {both / n * 1e6:.0f} against {both_peer / n * 1e6:.0f} us per stamp, wall")


if __name__ == "__main__":
    main()
