"""The body of stage ``stamps``: the Phase 4c stamp set in data/stamps, every row accounted for,
and the decoded training cache in data/cache.

stamps.source:
  synthetic          simulate a DR10-like survey in the contract (the embedded default)
  hosts              paint simulated arcs into real cutouts of a host catalogue (dhs.stamps.real_hosts)
  /a/local/dir       copy a Hive-partitioned Phase 4c dataset from disk
  s3://bucket/prefix copy it from S3 (credentials from the AWS chain; endpoint from params)
"""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd

from dhs import atomic, headline
from dhs.contract.validate import DecodeInto, list_shards, run_directory, validate, validate_file
from dhs.errors import StageError
from dhs.params import Params, as_params
from dhs.simulate.config import SimConfig
from dhs.simulate.dataset import write_synthetic_dataset
from dhs.simulate.survey import resolve_device
from dhs.simulate.detectability import population_summary
from dhs.imaging.cache import build_cache, open_split
from dhs.stamps.population_figure import population_figure
from dhs.stamps.real_hosts import write_host_dataset
from dhs.stamps.staging import describe_source, link_tree, stage


class RejectionRateError(StageError, RuntimeError):
    pass


MAX_AUTO_WRITE_WORKERS = 16


def writer_validation(root: Path, keep: DecodeInto):
    """What each writer process runs on the shard it wrote: ``validate_file`` keeping the decoded
    pixels in a directory of this run's own under ``keep``."""
    return partial(validate_file, root=str(root), decode_into=run_directory(keep))


def gpu_write_workers() -> int:
    """``stamps.write_workers: auto`` where the stamps render on a GPU: all cores but two (the
    renderer's process and its transfers), at most MAX_AUTO_WRITE_WORKERS."""
    return max(1, min(MAX_AUTO_WRITE_WORKERS, (os.cpu_count() or 1) - 2))


def write_workers_for(setting: int | str, device: str) -> int:
    """Processes that encode and write the simulated shards: ``stamps.write_workers``, or for
    ``auto`` none where the stamps render on the CPU (torch's threads already use every core and
    a writer would only take turns with them) and ``gpu_write_workers()`` on a GPU."""
    if setting != "auto":
        return int(setting)
    return 0 if resolve_device(device).type == "cpu" else gpu_write_workers()


def hosts_shortfall(summary: dict) -> None:
    """Say loudly, with the cause of each missing cutout, when hosts lack a cutout; for a shortfall
    a later run may not repeat (offline, timeouts, 5xx), say how to retry it: DVC sees a finished
    stage and would not rerun it by itself."""
    c = summary["cutouts"]
    why = c.get("not_usable_by_reason") or {}
    if not why:
        return
    from dhs.cutouts.client import is_transient

    transient = {r: n for r, n in why.items() if is_transient(r) or r == "missing"}
    lines = [f"HOST CUTOUTS {str(c.get('status', '')).upper()}: {c['usable_loaded']} of {summary['hosts_usable']} usable catalogue "
             f"hosts have a cutout; missing, by cause: {dict(sorted(why.items()))}"]
    if transient:
        lines.append(f"{sum(transient.values())} of them failed for a reason a later run may not repeat ({sorted(transient)}): "
                     f"once the service answers, retry them with `dvc repro -f stamps` (cutouts already fetched are reused; "
                     f"permanent failures such as 404s are not asked again)")
    from dhs.runner import banner

    print(banner(lines), file=sys.stderr)


def run(params: str | Params = "params.yaml", out_dir: str = "data/stamps", metrics_path: str = "metrics/stamps.json",
        cache_dir: str = "data/cache", progress: bool = True, plots_dir: str | None = None) -> dict:
    p = as_params(params).require("stamps")
    st = p["stamps"]
    source, workers = st["source"], st["validate_workers"]
    t0 = time.perf_counter()
    phases: dict[str, float] = {}   # wall seconds, printed: where the stage's time went
    for out in (out_dir, cache_dir):  # what a killed run left (temporaries no live process holds)
        atomic.sweep_stale(out)
    # validation keeps the pixels it decodes here, in the cache's dtype, and the cache copies the
    # usable ones: every stamp is read and decoded once
    with atomic.scratch_dir(cache_dir, "decoded") as scratch:
        keep = DecodeInto(str(scratch), st["cache_dtype"])
        if source == "synthetic":
            cfg = SimConfig.from_params(p["simulate"])
            with atomic.atomic_dir(out_dir) as tmp:
                writers = write_workers_for(st["write_workers"], cfg.device)
                # writer processes validate each shard they write, so validation overlaps the rendering
                # (in one process it would only be serial: the validator's own workers do it after)
                check = writer_validation(tmp, keep) if writers else None
                summary = write_synthetic_dataset(cfg, tmp, rows_per_shard=st["rows_per_shard"], progress=progress,
                                                  write_workers=writers, after_write=check)
                phases["simulate"] = time.perf_counter() - t0
                report = validate(tmp, workers=workers, progress=progress, decode_into=keep, done=summary["after_write"])
                report.raise_if_errors()
                phases["validate"] = time.perf_counter() - t0 - phases["simulate"]
            report.rebase(out_dir)
            what = (f"simulated {report.rows_read} stamps on {summary['device']}, "
                    f"{f'{writers} writer processes' if writers else 'written in this process'}")
            extra = {"config_id": summary["config_id"]}
        elif source == "hosts":
            cfg = SimConfig.from_params(p["simulate"])
            with atomic.atomic_dir(out_dir) as tmp:
                summary = write_host_dataset(dict(st["hosts"]), cfg, tmp, rows_per_shard=st["rows_per_shard"], progress=progress)
                report = validate(tmp, workers=workers, progress=progress, decode_into=keep)
                report.raise_if_errors()
            report.rebase(out_dir)
            what = (f"painted arcs into {summary['cutouts']['usable_loaded']} of {summary['hosts_read']} catalogue hosts' cutouts "
                    f"({summary['hosts_rejected_by_reason'] or 'no row rejected'}; cutouts {summary['cutouts']['by_status']}) "
                    f"on {summary['device']}")
            extra = {"hosts": summary}
            hosts_shortfall(summary)
        else:
            staging_dir = Path(st["staging_dir"])
            res = stage(source, staging_dir, endpoint_url=st["s3_endpoint_url"], workers=st["copy_workers"],
                        max_attempts=st["max_attempts"], timeout_s=st["s3_timeout_s"], progress=progress)
            report = validate(staging_dir, workers=workers, progress=progress, origin=describe_source(source), decode_into=keep)
            report.raise_if_errors()
            with atomic.atomic_dir(out_dir) as tmp:
                link_tree(staging_dir, tmp, [str(f.relative_to(staging_dir)) for f in list_shards(staging_dir)])
            what = f"staged {len(res.files)} files from {describe_source(source)} ({res.copied} copied, {res.skipped} already staged)"
            extra = {}
        rejected = sum(report.rejected.values())
        max_frac = st["max_reject_frac"]
        if report.rows_read and rejected / report.rows_read > max_frac:
            raise RejectionRateError(f"{rejected} of {report.rows_read} rows rejected ({rejected / report.rows_read:.2%} > "
                                     f"stamps.max_reject_frac={max_frac:.2%}):\n{report.summary()}")
        t_cache = time.perf_counter()
        cache = build_cache(report, cache_dir, dtype=st["cache_dtype"], workers=workers, progress=progress, release_kept=True)
        phases["cache"] = time.perf_counter() - t_cache
    metrics = {"source": describe_source(source), **extra, **report.to_metrics(),
               "cache": {"rows_by_split": cache.counts, "dtype": st["cache_dtype"],
                         "stamp_size": cache.stamp_size, "stamps_clipped_f16": cache.stamps_clipped},
               "splits_missing": cache.missing_splits}
    # the population a selection function is measured on: the evaluation splits (the train split
    # may be drawn with its own overrides, simulate.physical_train), the train split beside it
    measured = [sp for sp in cache.counts if sp != "train"] or list(cache.counts)
    metrics["population"] = population_summary(pd.concat([open_split(cache_dir, sp).meta for sp in measured], ignore_index=True))
    metrics["population"]["splits"] = measured
    if "train" in cache.counts and measured != ["train"]:
        metrics["population_train"] = population_summary(open_split(cache_dir, "train").meta)
    # the stage script names plots/stamps; a caller that names no folder gets one beside its metrics,
    # never the project's own figure
    population_figure(metrics["population"], Path(plots_dir if plots_dir is not None else Path(metrics_path).parent / "plots") / "population.png")
    headline.write("stamps", metrics_path, metrics)
    dt = time.perf_counter() - t0
    print(f"stamps: {what}; {report.rows_used} usable, rejected {dict(sorted(report.rejected.items()))}; "
          f"cache {cache.counts} ({dt:.1f} s)")
    print("stamps: wall time by phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) +
          f", everything else {dt - sum(phases.values()):.1f} s")
    if cache.missing_splits:
        print(f"stamps: the dataset has no {cache.missing_splits} split(s): cached {sorted(cache.counts)} only; the stages "
              f"that need a missing split (train needs train and val) will refuse")
    return metrics
