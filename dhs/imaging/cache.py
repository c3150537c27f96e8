"""The decoded training cache: per split, one contiguous memory-mappable image array plus a
metadata parquet aligned row by row.

Layout::

    data/cache/manifest.json               splits and their counts, missing_splits, dtype, stamp size
    data/cache/<split>/images.npy          (N, 3, H, W) g, r, z in nMgy
    data/cache/<split>/meta.parquet        every scalar column of the stamp table, row i <-> image i

Only usable rows (see ``dhs.contract.validate``) enter the cache, so training and inference
never meet a failed cutout, a NaN pixel, an implausible position or theta_E, or a duplicate.
Every split of the dataset is cached; a split the dataset lacks (an evaluation-only set with
only ``test``) is listed in ``missing_splits``, and a stage that needs it refuses naming it.

How it is filled: when validation kept the pixels it decoded (``validate(..., decode_into=...)``,
what the stamps stage does), the usable rows are copied from there, so every stamp is read and
decoded once; otherwise the usable rows are read and decoded again, in worker processes. The
normalisation statistics (``dhs.contract.norm_stats``) come with the pixels from either.

Why float16 by default: the pixels are sky-noise dominated (sigma 0.002-0.02 nMgy); float16
keeps 11 significant bits, a relative rounding error of 2.4e-4, far below the noise, and halves
the size (the 10.6M-stamp production set is 260 GB in float16 against 520 GB in float32), so
twice as much fits in page cache or GPU memory. Values beyond float16's range (|x| > 65504 nMgy,
a saturated star) are clipped and counted. ``cache.dtype: float32`` keeps full precision.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from dhs import atomic
from dhs.contract import decode_stamp, load_contract
from dhs.contract.codec import decode_stamps, to_storage_dtype
from dhs.contract.validate import DECODE_BLOCK, FileResult, ValidationReport, exc_text, open_parquet, read_rows, row_groups_of
from dhs.contract.workers import process_pool
from dhs.contract.norm_stats import STATS_ANNULUS, STATS_COLUMNS, annulus_mask_np, annulus_stats
from dhs.errors import StageError

CACHE_DTYPES = ("float16", "float32")


class CacheError(StageError, ValueError):
    pass


# the cache's own bookkeeping in meta.parquet, meaningless outside the cache
BOOKKEEPING_COLUMNS = ("cache_index", *STATS_COLUMNS)
COPY_CHUNK = 2048  # stamps copied at once from validation's kept pixels (~50 MB of float16)


def _fill(args) -> tuple[int, np.ndarray]:
    """Decode the usable rows of one shard into its slice of the split's image array, reading
    only the row groups that hold them: (stamps float16 clipped, their stats). Stamps in the
    stored layout are read in place a row group at a time; others one by one. (The path when
    validation kept no pixels: ``_copy_kept`` otherwise.)"""
    path, rows, images_path, offset, dtype = args
    images = np.load(images_path, mmap_mode="r+")
    stats = np.empty((len(rows), len(STATS_COLUMNS)))
    mask = annulus_mask_np(images.shape[-1], *STATS_ANNULUS)
    pf = open_parquet(path)
    starts = row_groups_of(pf)
    want = np.zeros(int(starts[-1]), dtype=bool)
    want[rows] = True
    groups = [g for g in range(len(starts) - 1) if want[starts[g]:starts[g + 1]].any()]
    clipped = 0
    k = offset
    for g in groups:
        local = np.flatnonzero(want[starts[g]:starts[g + 1]])
        table = pf.read_row_group(g, columns=["stamp_npz", "stamp_size"])
        if len(local) < table.num_rows:
            table = table.take(pa.array(local))
        sizes = table.column("stamp_size").to_numpy()
        if (sizes != images.shape[-1]).any():
            raise ValueError(f"stamp_size {sorted(set(sizes.tolist()))} where the cache holds {images.shape[-1]} px stamps")
        column = table.column("stamp_npz").combine_chunks()
        # in blocks that stay in the CPU's cache (a whole row group at once is ~3x slower per stamp)
        for a in range(0, len(column), DECODE_BLOCK):
            batch, decoded = decode_stamps(column.slice(a, DECODE_BLOCK), images.shape[-1])
            for j in np.flatnonzero(~decoded):
                batch[j] = decode_stamp(column[a + int(j)].as_py(), stamp_size=images.shape[-1])
            stored, over = to_storage_dtype(batch, dtype)
            clipped += int(over.sum())
            images[k:k + len(batch)] = stored
            stats[k - offset:k - offset + len(batch)] = annulus_stats(stored, mask)
            k += len(batch)
    images.flush()
    return clipped, stats


def _kept(f: FileResult, rows: np.ndarray, dtype: str, size: int) -> bool:
    """Whether validation kept the pixels of ``rows`` of file ``f`` in the cache's dtype and size."""
    if f.decoded_path is None or f.decoded_dtype != dtype or f.held is None or f.stats is None or not f.held[rows].all():
        return False
    if not Path(f.decoded_path).is_file():
        return False
    return np.load(f.decoded_path, mmap_mode="r").shape[1:] == (3, size, size)


def _copy_kept(f: FileResult, rows: np.ndarray, images: np.ndarray, offset: int, release: bool) -> tuple[int, np.ndarray]:
    """Copy the kept pixels of ``rows`` into ``images`` at ``offset``: (stamps float16 clipped,
    their stats, which validation measured from the same stored pixels). ``release``: delete
    the kept file once copied, so the kept copy and the cache never both take the full disk."""
    src = np.load(f.decoded_path, mmap_mode="r")
    for a in range(0, len(rows), COPY_CHUNK):
        r = rows[a:a + COPY_CHUNK]
        images[offset + a:offset + a + len(r)] = src[r]
    del src
    if release:
        Path(f.decoded_path).unlink()
        f.decoded_path = None
    return int(f.clipped[rows].sum()), f.stats[rows]


@dataclass
class CacheSummary:
    counts: dict[str, int]
    stamps_clipped: int
    stamp_size: int
    missing_splits: list[str] = field(default_factory=list)   # contract splits the dataset has no file for


def _split_rejections(report: ValidationReport, split: str, n_examples: int = 5) -> str:
    """The rejections of one split, by reason, with a few examples (file, row, column): what the
    error names when a split has files but no usable row."""
    reasons: Counter = Counter()
    files = [f for f in report.files if f.split == split]
    for f in files:
        if f.reasons is not None:
            reasons.update(r for r in f.reasons if r)
    rels = {str(Path(f.path).relative_to(report.root)) for f in files}
    examples = [f"  e.g. {p}" for p in report.examples if p.file in rels][:n_examples]
    errors = [f"  {p}" for p in report.errors if p.file in rels][:n_examples]
    return "\n".join([f"  {len(files)} file(s), {sum(f.n_rows for f in files)} rows, rejected by reason {dict(sorted(reasons.items()))}",
                      *errors, *examples])


def _meta_table(path: str, rows: np.ndarray, contract) -> pd.DataFrame:
    """The scalar columns of ``rows`` of a shard; a column stored with Arrow type null (every
    value missing) takes its contract type (float64 outside the contract) so readers downstream
    see an ordinary column of nulls."""
    names = [c for c in open_parquet(path).schema_arrow.names if c != "stamp_npz"]
    table = read_rows(path, rows, names)
    by_name = contract.by_name
    for i, f in enumerate(table.schema):
        if pa.types.is_null(f.type):
            t = by_name[f.name].arrow_type() if f.name in by_name else pa.float64()
            table = table.set_column(i, pa.field(f.name, t), pa.nulls(table.num_rows, t))
    return table.to_pandas()


def build_cache(report: ValidationReport, out_dir: str | Path, dtype: str = "float16", workers: int = 1, progress: bool = True,
                release_kept: bool = False) -> CacheSummary:
    """Write the cache for the usable rows of a validated dataset, atomically.

    Rows whose pixels validation kept (``validate(..., decode_into=...)``) are copied from there;
    with ``release_kept`` each kept file is deleted once copied (the stage's scratch copy: the
    disk then holds about one cache's worth at any time, not two). Other rows are decoded again.

    Every contract split with usable rows is cached; a split the dataset has no file for is
    left out and listed (``missing_splits``, in the manifest and the summary), so an
    evaluation-only dataset (say, only ``test``) caches; the stages that need a missing split
    refuse with a message naming it (``open_split``). A split whose files hold no usable row is
    an error naming its rejections."""
    if dtype not in CACHE_DTYPES:
        raise CacheError(f"cache.dtype must be one of {CACHE_DTYPES}, got {dtype!r}")
    report.raise_if_errors()
    contract = load_contract()
    root = Path(report.root)
    present = report.splits_present()
    missing = [s for s in contract.splits if s not in present]
    splits: dict[str, list] = {s: [] for s in present}
    for f in report.files:
        if f.split in splits and f.reasons is not None:
            rows = np.flatnonzero(f.reasons == "")
            if rows.size:
                splits[f.split].append((f.path, rows))
    empty = [s for s, items in splits.items() if not items]
    if empty:
        detail = "\n".join(f"split {s}:\n{_split_rejections(report, s)}" for s in empty)
        raise CacheError(f"{report.where}: split(s) {empty} have files but no usable row; every row there was rejected:\n{detail}")
    if not splits:
        raise CacheError(f"{report.where}: no file under any of {[f'{contract.partition_key}={s}' for s in contract.splits]}")

    by_path = {f.path: f for f in report.files}
    counts, clipped, size = {}, 0, None
    with atomic.atomic_dir(out_dir) as tmp:
        for split, items in splits.items():
            metas = []
            for path, rows in items:
                try:
                    meta = _meta_table(path, rows, contract)
                except Exception as exc:  # noqa: BLE001 - the file changed or broke since it was validated
                    raise CacheError(f"{report.where}: {Path(path).relative_to(root)}: cannot read the rows validation accepted "
                                     f"({exc_text(exc)}); the file changed after validation: run the stage again") from None
                meta["source_file"] = str(Path(path).relative_to(root))
                meta["source_row"] = rows
                metas.append(meta)
            meta = pd.concat(metas, ignore_index=True)
            sizes = meta["stamp_size"].unique()
            if len(sizes) != 1:
                raise CacheError(f"{report.where}: split {split} mixes stamp sizes {sorted(sizes.tolist())}; stage one size per dataset")
            if size is not None and int(sizes[0]) != size:
                raise CacheError(f"{report.where}: splits have different stamp sizes ({size} and {int(sizes[0])})")
            size = int(sizes[0])
            meta["region_split"] = split
            n = len(meta)
            d = tmp / split
            d.mkdir()
            images_path = d / "images.npy"
            images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.dtype(dtype), shape=(n, 3, size, size))
            offsets = np.cumsum([0] + [len(r) for _, r in items])[:-1]
            jobs, parts = [], {}
            try:
                for i, ((p, r), o) in enumerate(zip(items, offsets)):
                    f = by_path[p]
                    if _kept(f, r, dtype, size):
                        parts[i] = _copy_kept(f, r, images, int(o), release_kept)   # validation decoded them already
                    else:
                        jobs.append((i, (p, r, str(images_path), int(o), dtype)))
            except OSError as exc:
                raise CacheError(f"{report.where}: split {split}: the pixels validation kept no longer read ({exc_text(exc)}); "
                                 f"run the stage again") from None
            images.flush()
            del images
            bar = dict(total=len(jobs), desc=f"cache {split}", unit="shard", disable=not progress or not jobs)
            try:
                if workers > 1 and len(jobs) > 1:
                    with process_pool(workers) as ex:
                        parts.update(zip([i for i, _ in jobs], tqdm(ex.map(_fill, [j for _, j in jobs]), **bar)))
                else:
                    parts.update((i, _fill(j)) for i, j in tqdm(jobs, **bar))
            except BrokenProcessPool as exc:
                raise CacheError(f"{report.where}: split {split}: a cache worker died ({exc}); out of memory? lower "
                                 f"stamps.validate_workers and run the stage again") from None
            except (OSError, ValueError) as exc:  # pyarrow decode errors are OSErrors; a stamp that no longer decodes
                raise CacheError(f"{report.where}: split {split}: a shard no longer reads as validated ({exc_text(exc)}); "
                                 f"the files changed after validation: run the stage again") from None
            clipped += sum(parts[i][0] for i in range(len(items)))
            stats = np.concatenate([parts[i][1] for i in range(len(items))]).astype(np.float64)   # float32 values, stored as double
            for j, col in enumerate(STATS_COLUMNS):
                meta[col] = stats[:, j]
            meta.insert(0, "cache_index", np.arange(n, dtype=np.int64))
            meta.to_parquet(d / "meta.parquet", index=False, write_page_checksum=True)
            counts[split] = n
        manifest = {"format": 1, "dtype": dtype, "stamp_size": size, "bands": list(contract.bands), "counts": counts,
                    "missing_splits": missing,
                    "stamps_clipped_f16": clipped, "unit": "nMgy",
                    "norm_stats": {"columns": list(STATS_COLUMNS), "annulus_frac": list(STATS_ANNULUS)}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if release_kept:   # kept files no usable row was copied from (all rejected later, or decoded again instead)
        for f in report.files:
            if f.decoded_path is not None:
                Path(f.decoded_path).unlink(missing_ok=True)
                f.decoded_path = None
    return CacheSummary(counts=counts, stamps_clipped=clipped, stamp_size=size, missing_splits=missing)


def cache_manifest(cache_dir: str | Path) -> dict | None:
    """The cache's manifest.json, or None when there is none (no cache, or an unreadable one)."""
    try:
        return json.loads((Path(cache_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def require_splits(cache_dir: str | Path, splits, stage: str) -> None:
    """Refuse, before any work, a cache that lacks a split ``stage`` needs, naming the split and
    what to do."""
    missing = [s for s in splits if not (Path(cache_dir) / s / "images.npy").exists()]
    if missing:
        raise CacheError(_no_split_message(cache_dir, missing, stage))


def _no_split_message(cache_dir: str | Path, missing: list[str], stage: str | None = None) -> str:
    manifest = cache_manifest(cache_dir)
    names = ", ".join(map(repr, missing))
    if manifest is None:
        return f"no cached split {names} under {cache_dir}: there is no training cache (no manifest.json); run `dvc repro stamps` first"
    have = sorted(manifest.get("counts", {}))
    who = f"{stage} needs" if stage else "this stage needs"
    absent = [s for s in missing if s in manifest.get("missing_splits", [])]
    if absent:
        return (f"{who} split(s) {missing} but the stamp dataset (stamps.source) has no "
                f"region_split={'/'.join(absent)} partition: the cache at {cache_dir} holds {have} only "
                f"(metrics/stamps.json: splits_missing). Stage a dataset that has {missing} (stamps.source), or leave this "
                f"stage out for an evaluation-only dataset")
    return f"no cached split {names} under {cache_dir} (have {have}); run `dvc repro stamps`"


@dataclass
class CachedSplit:
    """One split of the cache: ``images`` is a read-only memmap, ``meta`` is aligned with it."""

    split: str
    images: np.ndarray
    meta: pd.DataFrame
    stats_annulus: tuple[float, float] | None = None  # annulus the stored normalisation stats used

    def norm_stats(self, inner_frac: float, outer_frac: float) -> np.ndarray | None:
        """(N, 7) stored annulus statistics if they were measured in this annulus, else None."""
        if self.stats_annulus != (inner_frac, outer_frac) or not set(STATS_COLUMNS) <= set(self.meta.columns):
            return None
        return self.meta[list(STATS_COLUMNS)].to_numpy(np.float32)

    def __len__(self) -> int:
        return len(self.meta)

    def stamp_meta(self) -> pd.DataFrame:
        """The stamps' own metadata: ``meta`` without the cache's bookkeeping columns."""
        return self.meta.drop(columns=[c for c in BOOKKEEPING_COLUMNS if c in self.meta.columns])

    @property
    def labels(self) -> np.ndarray:
        """1 = injection (lens), 0 = control: the classifier's target."""
        return (self.meta["is_control"].to_numpy() == 0).astype(np.float32)


def open_split(cache_dir: str | Path, split: str) -> CachedSplit:
    d = Path(cache_dir) / split
    if not (d / "images.npy").exists():
        raise CacheError(_no_split_message(cache_dir, [split]))
    try:
        images = np.load(d / "images.npy", mmap_mode="r")
        meta = pd.read_parquet(d / "meta.parquet")
    except (OSError, ValueError) as exc:
        raise CacheError(f"{d}: the cache does not read ({exc_text(exc)}); rebuild it with `dvc repro --force stamps`") from None
    if len(meta) != images.shape[0]:
        raise CacheError(f"{d}: meta.parquet has {len(meta)} rows but images.npy has {images.shape[0]}; rebuild the cache")
    manifest_path = Path(cache_dir) / "manifest.json"
    annulus = None
    if manifest_path.exists():
        ns = json.loads(manifest_path.read_text()).get("norm_stats")
        annulus = tuple(ns["annulus_frac"]) if ns else None
    return CachedSplit(split=split, images=images, meta=meta, stats_annulus=annulus)
