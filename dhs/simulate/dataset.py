"""Simulate a DR10-like stamp dataset in the Phase 4c contract."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from dhs.contract.codec import stamp_column
from dhs.contract.shards import HiveShardWriter
from dhs.simulate.config import SimConfig
from dhs.simulate.population import config_id, sample_population
from dhs.simulate.fused import is_compiled_on, mode_for_run, set_compile_mode
from dhs.simulate.survey import render_batches, resolve_device

# columns used only to render; everything else is written
_INTERNAL = ("noise_seed",)


def encode_stamp_rows(images: np.ndarray, rows: pd.DataFrame, compress: bool = False) -> pa.Array:
    """The ``stamp_npz`` values of rendered stamps (the shard writer's encoder for them): stored
    npz blobs, or deflated ones, and the failed-cutout blob where ``cutout_ok`` is not 1."""
    return stamp_column(images, rows["cutout_ok"].to_numpy() == 1, compress=compress)


def write_synthetic_dataset(cfg: SimConfig, out_dir: str | Path, rows_per_shard: int = 2000, progress: bool = True,
                            write_workers: int = 0, after_write=None) -> dict:
    """Render ``cfg.n_stamps`` stamps into ``out_dir`` as Hive-partitioned parquet.

    ``write_workers`` > 0 encodes and writes the shards in that many processes while this one
    renders (0: here, after each batch); ``after_write(path)`` runs on each shard where it was
    written (its results by path in the summary's ``after_write``). Returns a summary (rows
    written per split, device used). Deterministic given ``cfg``: the same config gives
    byte-identical shards, whatever the number of writer processes.
    """
    device = resolve_device(cfg.device)
    set_compile_mode(mode_for_run(cfg.compile, cfg.n_stamps, device))
    population = sample_population(cfg)
    # deflate (the non-default npz_compression) runs in the writer, per stamp; stored stamps are
    # spliced into one Arrow buffer, never a Python object per stamp
    encode = partial(encode_stamp_rows, compress=cfg.npz_compression == "deflate")
    writer = HiveShardWriter(out_dir, rows_per_shard=rows_per_shard, encoders={"stamp_npz": encode}, workers=write_workers,
                             after_write=after_write)
    try:
        with tqdm(total=len(population), desc=f"simulate stamps ({device.type})", unit="stamp", disable=not progress) as bar:
            for batch in render_batches(population, cfg, device):
                writer.add(batch.rows.drop(columns=list(_INTERNAL)), raw_columns={"stamp_npz": batch.images})
                bar.update(len(batch.rows))
        writer.close()
    finally:
        writer.abort()
    return {
        "rows_written_by_split": dict(sorted(writer.rows_written.items())),
        "n_files": len(writer.files),
        "device": device.type,
        "compiled": is_compiled_on(device),
        "config_id": config_id(cfg),
        "after_write": writer.after_write_results,
    }
