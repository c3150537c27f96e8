"""Validate a Phase 4c stamp dataset against the contract, reporting every problem at once.

Two kinds of finding:
- dataset errors (``report.errors``): the dataset cannot be used as it is: an unreadable or
  non-parquet shard, a file outside a ``region_split=`` partition, missing contract columns,
  wrong column types, a region or a host position in two splits. Each names the file (and
  column or region; a split overlap names a file and row in each split).
- row rejections (``report.rejected``): a row that cannot be used, counted by reason, with
  examples naming file, row and column: ``unknown_split``, ``corrupt_parquet`` (its row group
  does not decode: a damaged page, a failed page checksum), ``null_required``,
  ``cutout_not_ok``, ``label_mismatch``, ``bad_position`` (ra/dec not finite or outside
  [0, 360) x [-90, 90]), ``bad_theta_e`` (an injection without a finite theta_E > 0, a control
  with theta_E != 0), ``wrong_shape`` (stamp_size), the stamp codec's ``corrupt_npz``,
  ``missing_band``, ``wrong_shape``, ``nonfinite_pixels``, then ``blank_stamp`` (a band that is
  all zeros), and ``duplicate_task_id``.

Every column of every row group is read and decoded here, with the pages' CRC checksums
verified where the writer stored them (``HiveShardWriter`` does), so a damaged page is found
now, named (file, row group, column) and its rows rejected, and never crashes the cache build
later or changes a value silently. Every row read is either used or rejected for exactly one
reason (the first that applies in the order above), so ``rows_read == rows_used +
sum(rejected)`` always holds.

With ``decode_into`` the pixels decoded for the checks are also kept, in the training cache's
dtype, one array per file (``FileResult.decoded_path``): the cache then copies the usable rows
from there instead of reading and decoding every stamp a second time (dhs.imaging.cache).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from dhs.contract.codec import StampError, decode_stamp, decode_stamps, to_storage_dtype
from dhs.contract.schema import Contract, load_contract
from dhs.contract.workers import process_pool
from dhs.contract.norm_stats import STATS_COLUMNS, annulus_stats
from dhs.errors import StageError

ROW_REASONS = (
    "unknown_split", "corrupt_parquet", "null_required", "cutout_not_ok", "label_mismatch", "bad_position", "bad_theta_e",
    "corrupt_npz", "missing_band", "wrong_shape", "nonfinite_pixels", "blank_stamp", "duplicate_task_id", "bad_schema",
)
EXAMPLES_PER_REASON = 20
DECODE_BLOCK = 32  # stamps decoded at once (~6 MB of 64 px float32 with its temporaries)
# rejected-row examples written to the stage metrics on success (file, row, column, reason)
METRICS_EXAMPLES = 20
# host positions closer than this are the same host (docs/conventions.md, evaluation rules)
HOST_MATCH_ARCSEC = 1.0
# region_id / host key of a row whose region_id or ra/dec is null: not used in the split checks
NO_KEY = np.iinfo(np.int64).min


def host_keys(ra_deg, dec_deg) -> np.ndarray:
    """int64 host-position keys (equal key = same host): ra and dec rounded to a
    HOST_MATCH_ARCSEC grid; NO_KEY where either is missing or not a number. (No cos(dec): hosts
    that straddle a cell edge get different keys; identical positions always match.)"""
    ra = np.asarray(pd.to_numeric(pd.Series(ra_deg), errors="coerce"), dtype=float)
    dec = np.asarray(pd.to_numeric(pd.Series(dec_deg), errors="coerce"), dtype=float)
    ok = np.isfinite(ra) & np.isfinite(dec)
    ra, dec = np.where(ok, ra, 0.0), np.where(ok, dec, 0.0)
    key = np.round(ra * 3600 / HOST_MATCH_ARCSEC).astype(np.int64) * 10_000_000 + np.round(dec * 3600 / HOST_MATCH_ARCSEC).astype(np.int64)
    return np.where(ok, key, NO_KEY)


def host_position(key: int) -> tuple[float, float]:
    """The (ra, dec) in degrees of the HOST_MATCH_ARCSEC cell a ``host_keys`` key stands for."""
    ra_q = (int(key) + 5_000_000) // 10_000_000
    dec_q = int(key) - ra_q * 10_000_000
    return ra_q * HOST_MATCH_ARCSEC / 3600, dec_q * HOST_MATCH_ARCSEC / 3600


def exc_text(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (pyarrow's decode errors span several), shortened."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]


def open_parquet(path: str | os.PathLike) -> pq.ParquetFile:
    """A shard opened for reading with its pages' CRC checksums verified where it has them."""
    return pq.ParquetFile(path, page_checksum_verification=True)


def row_groups_of(pf: pq.ParquetFile) -> np.ndarray:
    """First row of each row group, and the total row count last: (n_row_groups + 1,)."""
    md = pf.metadata
    return np.cumsum([0] + [md.row_group(g).num_rows for g in range(md.num_row_groups)])


def read_rows(path: str | os.PathLike, rows: np.ndarray, columns: list[str] | None = None) -> pa.Table:
    """Rows ``rows`` (sorted file row numbers) of a shard, reading only the row groups that hold
    them (a damaged row group whose rows were all rejected is never touched)."""
    pf = open_parquet(path)
    starts = row_groups_of(pf)
    rows = np.asarray(rows, dtype=np.int64)
    groups = np.unique(np.searchsorted(starts, rows, side="right") - 1)
    if not groups.size:
        return pf.schema_arrow.empty_table() if columns is None else pf.schema_arrow.empty_table().select(columns)
    table = pf.read_row_groups(groups.tolist(), columns=columns)
    local = np.concatenate([np.arange(starts[g], starts[g + 1]) for g in groups])
    return table.take(pa.array(np.searchsorted(local, rows)))


def _floats(values) -> np.ndarray:
    """A column as float64, NaN where null (whatever numeric or null Arrow type it has)."""
    return np.asarray(pd.to_numeric(pd.Series(values.to_pandas() if hasattr(values, "to_pandas") else values), errors="coerce"),
                      dtype=float)


@dataclass
class Problem:
    file: str
    row: int | None
    column: str | None
    reason: str
    message: str

    def __str__(self) -> str:
        where = self.file + (f" row {self.row}" if self.row is not None else "") + (f" column {self.column!r}" if self.column else "")
        return f"{where}: [{self.reason}] {self.message}"


@dataclass
class FileResult:
    path: str
    split: str | None
    n_rows: int = 0
    errors: list[Problem] = field(default_factory=list)
    reasons: np.ndarray | None = None  # per row: "" for usable, else the reason
    labels: np.ndarray | None = None  # per row is_control (or -1 if unknown)
    task_ids: np.ndarray | None = None
    region_ids: np.ndarray | None = None
    host_keys: np.ndarray | None = None
    examples: list[Problem] = field(default_factory=list)
    # with ``decode_into``: the file's decoded pixels, (n_rows, 3, N, N) in ``decoded_dtype``;
    # ``held`` marks the rows whose pixels are there, ``clipped`` those float16 clipped
    decoded_path: str | None = None
    decoded_dtype: str | None = None
    held: np.ndarray | None = None
    clipped: np.ndarray | None = None
    stats: np.ndarray | None = None       # (n_rows, 7) the cache's normalisation stats of the kept pixels


@dataclass(frozen=True)
class DecodeInto:
    """Where validation keeps the pixels it decodes (a directory that outlives the report's use,
    e.g. ``dhs.atomic.scratch_dir``) and the dtype the cache stores."""

    directory: str
    dtype: str = "float16"


def run_directory(decode_into: DecodeInto) -> DecodeInto:
    """``decode_into`` in a new directory of one validation's own under it: a second validation
    into the same place (another copy of the dataset, or the same files changed) never overwrites
    the pixels an earlier report points to."""
    run = Path(decode_into.directory) / f"run-{uuid.uuid4().hex[:12]}"
    run.mkdir(parents=True)
    return DecodeInto(str(run), decode_into.dtype)


@dataclass
class ValidationReport:
    root: str
    files: list[FileResult]
    errors: list[Problem]
    examples: list[Problem]
    origin: str | None = None  # where the dataset came from (the user's stamps.source), named in messages

    @property
    def where(self) -> str:
        """The dataset as messages name it: its origin when it was staged from elsewhere."""
        return self.origin or self.root

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def rows_read(self) -> int:
        return sum(f.n_rows for f in self.files)

    @property
    def rejected(self) -> Counter:
        c: Counter = Counter()
        for f in self.files:
            if f.reasons is not None:
                c.update(r for r in f.reasons if r)
        return c

    @property
    def rows_used(self) -> int:
        return sum(int((f.reasons == "").sum()) for f in self.files if f.reasons is not None)

    def by_split_label(self) -> dict:
        """{split: {'control'|'injection'|'unknown': {'used': n, 'rejected': {reason: n}}}}"""
        out: dict = {}
        for f in self.files:
            if f.reasons is None:
                continue
            split = f.split or "unknown"
            for lab, reason in zip(f.labels, f.reasons):
                name = {1: "control", 0: "injection"}.get(int(lab), "unknown")
                slot = out.setdefault(split, {}).setdefault(name, {"used": 0, "rejected": {}})
                if reason:
                    slot["rejected"][reason] = slot["rejected"].get(reason, 0) + 1
                else:
                    slot["used"] += 1
        return out

    def regions_by_split(self) -> dict[str, list[int]]:
        regs: dict[str, set] = defaultdict(set)
        for f in self.files:
            if f.region_ids is not None and f.split:
                regs[f.split].update(int(r) for r in f.region_ids)
        return {k: sorted(v) for k, v in sorted(regs.items())}

    def rebase(self, new_root: str | os.PathLike) -> "ValidationReport":
        """The same report for the dataset after it moved (e.g. renamed into place) to ``new_root``."""
        old = Path(self.root)
        for f in self.files:
            f.path = str(Path(new_root) / Path(f.path).relative_to(old))
        self.root = str(new_root)
        return self

    def usable_mask(self, path: str) -> np.ndarray:
        for f in self.files:
            if f.path == path:
                return f.reasons == ""
        raise KeyError(path)

    def splits_present(self) -> list[str]:
        """The contract's splits that have at least one file, in contract order."""
        have = {f.split for f in self.files}
        return [s for s in load_contract().splits if s in have]

    def rejected_examples(self, limit: int = METRICS_EXAMPLES) -> list[dict]:
        """At most ``limit`` rejected rows (file, row, column, reason, message), taking the
        reasons in turn so that each reason seen is shown."""
        by_reason: dict[str, list[Problem]] = defaultdict(list)
        for p in self.examples:
            by_reason[p.reason].append(p)
        out: list[dict] = []
        k = 0
        while len(out) < limit and any(k < len(v) for v in by_reason.values()):
            for reason in sorted(by_reason):
                if k < len(by_reason[reason]) and len(out) < limit:
                    p = by_reason[reason][k]
                    out.append({"file": p.file, "row": p.row, "column": p.column, "reason": p.reason, "message": p.message})
            k += 1
        return out

    def summary(self, max_lines: int = 30) -> str:
        lines = [f"{self.where}: {len(self.files)} files, {self.rows_read} rows read, {self.rows_used} usable"]
        for reason, n in sorted(self.rejected.items()):
            lines.append(f"  rejected {reason}: {n}")
        for p in self.errors[:max_lines]:
            lines.append(f"  ERROR {p}")
        if len(self.errors) > max_lines:
            lines.append(f"  ... and {len(self.errors) - max_lines} more errors")
        shown = 0
        for p in self.examples:
            if shown >= max_lines:
                break
            lines.append(f"  e.g. {p}")
            shown += 1
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise DatasetInvalid(self)

    def to_metrics(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "rows_rejected": int(sum(self.rejected.values())),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "by_split_label": self.by_split_label(),
            "n_files": len(self.files),
            "n_regions_by_split": {k: len(v) for k, v in self.regions_by_split().items()},
            "region_disjoint": not any(p.reason == "region_in_two_splits" for p in self.errors),
            "host_disjoint": not any(p.reason == "host_in_two_splits" for p in self.errors),
            "errors": [str(p) for p in self.errors[:100]],
            "rejected_examples": self.rejected_examples(),
        }


class DatasetInvalid(StageError, ValueError):
    def __init__(self, report: ValidationReport):
        super().__init__(f"dataset does not meet the stamp contract:\n{report.summary()}")
        self.report = report


def partition_split(path: Path, root: Path, key: str) -> str | None:
    for part in path.relative_to(root).parts[:-1]:
        if part.startswith(f"{key}="):
            return part.split("=", 1)[1]
    return None


def list_shards(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix == ".parquet" and not p.name.startswith((".", "_")))


def schema_problems(schema: pa.Schema, contract: Contract, rel: str) -> list[Problem]:
    """The schema's problems, naming the file ``rel`` and the column: each required column that
    is missing (the partition key lives in the directory name), then each contract column of a
    type the contract does not accept."""
    names = set(schema.names)
    out = []
    for col in contract.required:
        if col.name == contract.partition_key:
            continue
        if col.name not in names:
            out.append(Problem(rel, None, col.name, "missing_column", f"required column {col.name!r} ({col.type}, {col.unit or 'no unit'}) is missing"))
    for col in contract.columns:
        if col.name in names and not col.accepts(schema.field(col.name).type):
            t = schema.field(col.name).type
            msg = (f"column {col.name!r} holds no values (Arrow type null) but the contract requires a value in every row"
                   if pa.types.is_null(t) else f"column {col.name!r} has type {t}, expected {col.type}")
            out.append(Problem(rel, None, col.name, "wrong_type", msg))
    return out


def validate_file(path: str, root: str, check_pixels: bool = True, contract: Contract | None = None,
                  decode_into: DecodeInto | None = None) -> FileResult:
    """One shard against the contract: its partition, that it opens as parquet, its schema, then
    every row of every row group (``_RowChecks``; the module docstring lists the reasons in the
    order they apply). A schema problem rejects every row as ``bad_schema`` without reading them.
    ``decode_into`` (with ``check_pixels``): keep the usable rows' decoded pixels for the cache."""
    contract = contract or load_contract()
    p, root_p = Path(path), Path(root)
    split = partition_split(p, root_p, contract.partition_key)
    res = FileResult(path=str(p), split=split)
    rel = str(p.relative_to(root_p))
    if split is None:
        res.errors.append(Problem(rel, None, None, "no_partition", f"file is not under a '{contract.partition_key}=<split>/' directory"))
    try:
        pf = open_parquet(p)
        schema = pf.schema_arrow
        starts = row_groups_of(pf)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a readable parquet shard"
        res.errors.append(Problem(rel, None, None, "unreadable_file", f"not a readable parquet file: {exc_text(exc)}"))
        return res
    res.n_rows = int(starts[-1])
    bad_schema = schema_problems(schema, contract, rel)
    res.errors.extend(bad_schema)
    res.labels = np.full(res.n_rows, -1, dtype=np.int64)
    if bad_schema:
        res.reasons = np.full(res.n_rows, "bad_schema", dtype=object)
        return res
    checks = _RowChecks(res, rel, contract, set(schema.names), check_pixels, decode_into)
    for g in range(len(starts) - 1):
        checks.row_group(pf, g, int(starts[g]), int(starts[g + 1]))
    return checks.finish()


@dataclass
class _Batch:
    """The columns of one record batch that the row checks read (``nulls``: per non-nullable
    column, which rows are null; ``lab``: is_control as float, NaN where null)."""
    cols: dict[str, pa.Array]
    lens_model: list
    cutout_ok: np.ndarray
    size: np.ndarray
    nulls: dict[str, np.ndarray]
    ra: np.ndarray
    dec: np.ndarray
    theta: np.ndarray
    lab: np.ndarray


class _RowChecks:
    """The row checks of one shard whose schema meets the contract, filling its ``FileResult``:
    each row's first rejection reason ("" for a usable row), counted per reason with the first
    ``EXAMPLES_PER_REASON`` examples; each row's task_id, region and host key for the cross-file
    checks; and, with ``decode_into`` and ``check_pixels``, the usable rows' decoded pixels."""

    def __init__(self, res: FileResult, rel: str, contract: Contract, names: set[str], check_pixels: bool,
                 decode_into: DecodeInto | None):
        self.res, self.rel, self.contract = res, rel, contract
        self.check_pixels, self.decode_into = check_pixels, decode_into
        self.reasons = np.full(res.n_rows, "", dtype=object)
        self.unknown_split = res.split not in contract.splits
        if res.split is not None and self.unknown_split:
            res.examples.append(Problem(rel, None, contract.partition_key, "unknown_split",
                                        f"split {res.split!r} is not one of {list(contract.splits)}"))
        self.non_nullable = [c.name for c in contract.required if not c.nullable and c.name in names]
        self.task_ids: list[np.ndarray] = []
        self.region_ids: list[np.ndarray] = []
        self.host_key_parts: list[np.ndarray] = []
        self.per_reason: Counter = Counter()
        self.store: np.ndarray | None = None   # the memmap of the kept pixels, made at the first stamp kept
        if decode_into is not None and check_pixels:
            res.held = np.zeros(res.n_rows, bool)
            res.clipped = np.zeros(res.n_rows, bool)
            res.stats = np.zeros((res.n_rows, len(STATS_COLUMNS)), np.float32)   # what annulus_stats computes

    def keep(self, rows: np.ndarray, images: np.ndarray) -> None:
        """Keep the decoded pixels of (absolute) ``rows`` for the cache."""
        res, into = self.res, self.decode_into
        if res.held is None or not rows.size:
            return
        if self.store is None:
            name = hashlib.sha256(self.rel.encode()).hexdigest()[:24] + ".npy"
            res.decoded_path, res.decoded_dtype = str(Path(into.directory) / name), into.dtype
            self.store = np.lib.format.open_memmap(res.decoded_path, mode="w+", dtype=np.dtype(into.dtype),
                                                   shape=(res.n_rows, *images.shape[1:]))
        if self.store.shape[1:] != images.shape[1:]:
            return  # a second stamp size in one file: the cache refuses mixed sizes, nothing to keep
        stored, over = to_storage_dtype(images, into.dtype)
        if rows[-1] - rows[0] + 1 == rows.size:   # the usual case: a run of rows, a plain copy
            self.store[rows[0]:rows[-1] + 1] = stored
        else:
            self.store[rows] = stored
        res.held[rows] = True
        res.clipped[rows] = over
        res.stats[rows] = annulus_stats(stored)

    def note(self, i: int, reason: str, column: str | None, msg: str) -> None:
        """Reject row ``i`` for ``reason``, an example naming ``column`` while the reason has few."""
        self.reasons[i] = reason
        self.per_reason[reason] += 1
        if self.per_reason[reason] <= EXAMPLES_PER_REASON:
            self.res.examples.append(Problem(self.rel, i, column, reason, msg))

    def row_group(self, pf: pq.ParquetFile, g: int, row0: int, row1: int) -> None:
        """Read row group ``g`` (file rows ``row0`` to ``row1 - 1``) with every column, so what
        the cache build reads later is decoded now, and check its rows batch by batch; a group
        that does not decode is rejected whole (``_reject_group``)."""
        try:
            tbl = pf.read_row_group(g)
            if tbl.num_rows != row1 - row0:
                raise ValueError(f"decoded {tbl.num_rows} rows where the footer lists {row1 - row0}")
        except Exception as exc:  # noqa: BLE001 - thrift, ZSTD, CRC, ...: the row group cannot be read
            self._reject_group(pf, g, row0, row1, exc)
            return
        for batch in tbl.to_batches(max_chunksize=2048):
            self.check(batch, row0)
            row0 += batch.num_rows

    def _reject_group(self, pf: pq.ParquetFile, g: int, row0: int, row1: int, exc: Exception) -> None:
        """Every row of an undecodable row group rejected (``corrupt_parquet``, or
        ``unknown_split`` in a split the contract does not know), with no keys, and one example
        naming the group's rows and the columns that do not decode on their own."""
        bad = _damaged_columns(pf, g, pf.schema_arrow.names)
        reason = "unknown_split" if self.unknown_split else "corrupt_parquet"
        self.reasons[row0:row1] = reason
        self.per_reason[reason] += row1 - row0
        self.task_ids.append(np.full(row1 - row0, None, dtype=object))
        self.region_ids.append(np.full(row1 - row0, NO_KEY, dtype=np.int64))
        self.host_key_parts.append(np.full(row1 - row0, NO_KEY, dtype=np.int64))
        if not self.unknown_split:
            where = f"column(s) {bad}" if bad else "its columns"
            self.res.examples.append(Problem(self.rel, row0, ",".join(bad) or None, "corrupt_parquet",
                                             f"row group {g} (rows {row0}-{row1 - 1}) does not decode: {where}: {exc_text(exc)}; "
                                             f"its {row1 - row0} rows are rejected (the file is damaged: copy it again from its origin)"))

    def check(self, tbl: pa.Table | pa.RecordBatch, row0: int) -> None:
        """Check the rows of one batch, the first at file row ``row0``: record their keys and
        labels, then run every check at once; the rows any check flags go through ``explain``,
        which finds the first reason that applies and words it (clean rows, nearly all, never
        enter Python)."""
        n = tbl.num_rows
        b = self._batch(tbl)
        self.task_ids.append(np.asarray(b.cols["task_id"].to_pylist(), dtype=object))
        self.region_ids.append(b.cols["region_id"].fill_null(NO_KEY).to_numpy(zero_copy_only=False).astype(np.int64))
        self.host_key_parts.append(host_keys(b.ra, b.dec))
        self.res.labels[row0:row0 + n] = np.where(np.isfinite(b.lab), b.lab, -1).astype(np.int64)   # -1: no label
        if self.unknown_split:
            self.reasons[row0:row0 + n] = "unknown_split"
            self.per_reason["unknown_split"] += n
            return
        flagged, sizes = self._flag_metadata(b)
        if self.check_pixels:
            self._flag_pixels(b, flagged, sizes, row0)
        for j in np.flatnonzero(flagged):
            self.explain(b, j, row0 + j)

    def _batch(self, tbl: pa.Table | pa.RecordBatch) -> _Batch:
        """The columns of ``tbl`` the checks read, converted once."""
        cols = {name: tbl.column(name) for name in tbl.schema.names}
        lens_model = cols["lens_model"].to_pylist()
        cutout_ok = cols["cutout_ok"].to_numpy(zero_copy_only=False)
        size = cols["stamp_size"].to_numpy(zero_copy_only=False)
        nulls = {name: np.asarray(cols[name].is_null()) for name in self.non_nullable}
        ra, dec, theta = _floats(cols["ra"]), _floats(cols["dec"]), _floats(cols["theta_e_arcsec"])
        return _Batch(cols, lens_model, cutout_ok, size, nulls, ra, dec, theta, _floats(cols["is_control"]))

    def _flag_metadata(self, b: _Batch) -> tuple[np.ndarray, np.ndarray]:
        """(rows that fail a check of their columns other than the pixels, each row's stamp_size
        as float, -1 where null)."""
        contract, lab, ra, dec, theta = self.contract, b.lab, b.ra, b.dec, b.theta
        flagged = np.zeros(len(lab), bool)
        for m in b.nulls.values():
            flagged |= m
        lm = np.asarray(b.lens_model, dtype=object)
        control = lm == "CONTROL"
        flagged |= ~np.isin(lm, list(contract.lens_models)) | ~np.isin(lab, (0.0, 1.0)) | (control != (lab == 1.0))
        flagged |= np.nan_to_num(_floats(b.cols["cutout_ok"]), nan=0.0) != 1.0
        flagged |= ~(np.isfinite(ra) & (ra >= 0.0) & (ra < 360.0)) | ~(np.isfinite(dec) & (dec >= -90.0) & (dec <= 90.0))
        with np.errstate(invalid="ignore"):
            flagged |= (lab == 0.0) & ~(np.isfinite(theta) & (theta > 0))
            flagged |= (lab == 1.0) & np.isfinite(theta) & (theta != 0)
            flagged |= ~np.isnan(theta) & ~np.isfinite(theta)
        sizes = np.nan_to_num(_floats(b.cols["stamp_size"]), nan=-1.0)
        flagged |= ~np.isin(sizes, list(contract.stamp_sizes))
        return flagged, sizes

    def _flag_pixels(self, b: _Batch, flagged: np.ndarray, sizes: np.ndarray, row0: int) -> None:
        """Flag (in place) the unflagged rows whose stamp does not decode, holds a non-finite
        pixel or a blank band; keep the pixels of the others. Read in place, in blocks that stay
        in the CPU's cache (a whole batch at once is slower: two workers streaming 100 MB arrays
        share one memory bus); rows of other sizes or already flagged are ignored."""
        n = len(flagged)
        for sz in np.unique(sizes[~flagged]).astype(int):
            good = np.zeros(n, bool)
            rows = ~flagged & (sizes == sz)
            for a in range(0, n, DECODE_BLOCK):
                images, decoded = decode_stamps(b.cols["stamp_npz"].slice(a, DECODE_BLOCK), int(sz))
                g = decoded & np.isfinite(images).all(axis=(1, 2, 3)) & images.any(axis=(2, 3)).all(axis=1)
                good[a:a + len(images)] = g
                j = np.flatnonzero(g & rows[a:a + len(images)])
                self.keep(row0 + a + j, images[j])
            flagged[rows] |= ~good[rows]

    def explain(self, b: _Batch, j: int, i: int) -> None:
        """Reject row ``i`` (batch row ``j``) for the first reason that applies, if any: the
        columns' checks in the module docstring's order, then its stamp's."""
        found = self._metadata_reason(b, j)
        if found is not None:
            self.note(i, *found)
        elif self.check_pixels:
            self._explain_pixels(b, j, i)

    def _metadata_reason(self, b: _Batch, j: int) -> tuple[str, str, str] | None:
        """(reason, column, message) of the first check of batch row ``j``'s columns (other than
        the pixels) that it fails, or None."""
        contract, ra, dec, theta, size = self.contract, b.ra, b.dec, b.theta, b.size
        null_col = next((c for c, m in b.nulls.items() if m[j]), None)
        if null_col is not None:
            return "null_required", null_col, f"{null_col!r} is null but the contract requires a value"
        if int(b.cutout_ok[j]) != 1:
            return "cutout_not_ok", "cutout_ok", "cutout_ok is 0 (failed cutout upstream)"
        lm, label = b.lens_model[j], b.cols["is_control"][j].as_py()
        if lm not in contract.lens_models or int(label) not in (0, 1) or (lm == "CONTROL") != (int(label) == 1):
            return ("label_mismatch", "lens_model",
                    f"lens_model {lm!r} disagrees with is_control={label} (expected one of {list(contract.lens_models)})")
        label = int(label)
        if not (np.isfinite(ra[j]) and 0.0 <= ra[j] < 360.0):
            return "bad_position", "ra", f"ra {ra[j]!r} deg is not a number in [0, 360)"
        if not (np.isfinite(dec[j]) and -90.0 <= dec[j] <= 90.0):
            return "bad_position", "dec", f"dec {dec[j]!r} deg is not a number in [-90, 90]"
        if label == 0 and not (np.isfinite(theta[j]) and theta[j] > 0):
            return "bad_theta_e", "theta_e_arcsec", f"an injection needs a finite theta_e_arcsec > 0, got {theta[j]!r}"
        if label == 1 and np.isfinite(theta[j]) and theta[j] != 0:
            return "bad_theta_e", "theta_e_arcsec", f"a control carries theta_e_arcsec 0 (or null), got {theta[j]!r}"
        if not np.isnan(theta[j]) and not np.isfinite(theta[j]):
            return "bad_theta_e", "theta_e_arcsec", f"theta_e_arcsec is {theta[j]!r}"
        if int(size[j]) not in contract.stamp_sizes:
            return "wrong_shape", "stamp_size", f"stamp_size {size[j]} is not one of {list(contract.stamp_sizes)}"
        return None

    def _explain_pixels(self, b: _Batch, j: int, i: int) -> None:
        """Decode row ``i``'s stamp alone: reject it for the codec's reason or a blank band, or
        keep it (a stamp outside the stored layout, from deflate or other writers, is usable)."""
        try:
            img = decode_stamp(b.cols["stamp_npz"][j].as_py(), stamp_size=int(b.size[j]))
        except StampError as exc:
            self.note(i, exc.reason, "stamp_npz", str(exc))
            return
        blank = [band_name for band_name, band in zip(self.contract.bands, img) if not band.any()]
        if blank:
            self.note(i, "blank_stamp", "stamp_npz", f"band(s) {blank} are all zeros (no data), though cutout_ok is 1")
            return
        self.keep(np.array([i]), img[None])

    def finish(self) -> FileResult:
        """The file's result with every row's reason and keys. The kept pixels are unmapped
        without msync: the cache reads these scratch files through the same page cache (another
        process included) and removes them when the stage ends, so forcing them to the disk
        buys nothing (~65 us a stamp); the cache's own files are flushed before their rename."""
        self.store = None
        res = self.res
        res.reasons = self.reasons
        res.task_ids = np.concatenate(self.task_ids) if self.task_ids else np.array([], dtype=object)
        res.region_ids = np.concatenate(self.region_ids) if self.region_ids else np.array([], dtype=np.int64)
        res.host_keys = np.concatenate(self.host_key_parts) if self.host_key_parts else np.array([], dtype=np.int64)
        return res


def _damaged_columns(pf: pq.ParquetFile, group: int, columns: list[str]) -> list[str]:
    """The columns of a row group that do not decode on their own."""
    bad = []
    for c in columns:
        try:
            pf.read_row_group(group, columns=[c])
        except Exception:  # noqa: BLE001
            bad.append(c)
    return bad


def _validate_file_star(args):
    return validate_file(*args)


def validate(dataset: str | os.PathLike, check_pixels: bool = True, workers: int = 1, progress: bool = True,
             origin: str | None = None, decode_into: DecodeInto | None = None,
             done: Mapping[str, FileResult] | None = None) -> ValidationReport:
    """Validate every shard under ``dataset`` (a Hive-partitioned directory) and cross-check splits.

    ``origin``: where the dataset was staged from (the user's ``stamps.source``), named in the
    report's messages instead of the local copy. ``decode_into``: keep the decoded pixels there
    for ``build_cache`` (module docstring). ``done``: ``validate_file`` results already made for
    some shards (by path; the stamps stage's writer processes validate each shard they write, with
    the same ``check_pixels`` and ``decode_into`` dtype), taken as they are; the cross-file checks
    always see every shard."""
    root = Path(dataset)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {origin or root} does not exist")
    contract = load_contract()
    shards = list_shards(root)
    others = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".parquet" and not p.name.startswith((".", "_")))
    errors: list[Problem] = [
        Problem(str(p.relative_to(root)), None, None, "not_parquet", "file in the dataset does not end in .parquet; remove it or fix its name")
        for p in others
    ]
    if not shards:
        errors.append(Problem(origin or str(root), None, None, "empty_dataset", "no parquet shards found"))
    if decode_into is not None:
        decode_into = run_directory(decode_into)
    done = dict(done or {})
    if unknown := sorted(set(done) - {str(p) for p in shards}):
        raise ValueError(f"results given for files that are not shards of {root}: {unknown[:3]}")
    jobs = [(str(p), str(root), check_pixels, None, decode_into) for p in shards if str(p) not in done]
    bar = dict(total=len(jobs), desc="validate shards", unit="file", disable=not progress or not jobs)
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as ex:
            fresh = list(tqdm(ex.map(_validate_file_star, jobs), **bar))
    else:
        fresh = [validate_file(*j) for j in tqdm(jobs, **bar)]
    made = iter(fresh)
    results = [done[str(p)] if str(p) in done else next(made) for p in shards]
    examples: list[Problem] = []
    for r in results:
        errors.extend(r.errors)
        examples.extend(r.examples)

    # duplicate task_ids across the whole dataset: the first occurrence is kept
    ok_results = [r for r in results if r.task_ids is not None and r.task_ids.size]
    if ok_results:
        # only usable rows take part: the first usable copy of a task_id is kept
        all_ids = np.concatenate([r.task_ids for r in ok_results])
        usable = np.concatenate([r.reasons == "" for r in ok_results])
        dup = np.zeros(all_ids.size, dtype=bool)
        dup[usable] = pd.Series(all_ids[usable]).duplicated(keep="first").to_numpy()
        offset = 0
        n_dup_examples = 0
        for r in ok_results:
            d = dup[offset : offset + r.n_rows]
            offset += r.n_rows
            for i in np.flatnonzero(d & (r.reasons == "")):
                r.reasons[i] = "duplicate_task_id"
                if n_dup_examples < EXAMPLES_PER_REASON:
                    examples.append(Problem(str(Path(r.path).relative_to(root)), int(i), "task_id", "duplicate_task_id", f"task_id {r.task_ids[i]!r} already seen"))
                    n_dup_examples += 1

    # split disjointness: by region and by host position (docs/conventions.md, evaluation rules);
    # each overlap names a file and row of every split it is in
    for what, attr, reason in (("region", "region_ids", "region_in_two_splits"), ("host position", "host_keys", "host_in_two_splits")):
        first: dict[int, dict[str, tuple[str, int]]] = defaultdict(dict)
        for r in ok_results:
            if r.split in contract.splits:
                keys, rows = np.unique(getattr(r, attr), return_index=True)
                rel = str(Path(r.path).relative_to(root))
                for k, i in zip(keys.tolist(), rows.tolist()):
                    if k != NO_KEY:
                        first[k].setdefault(r.split, (rel, i))
        shared = {k: v for k, v in first.items() if len(v) > 1}
        for k in sorted(shared)[:50]:
            where = shared[k]
            if what == "region":
                label = f"region_id {k}"
            else:
                ra, dec = host_position(k)
                label = f"host at ra={ra:.5f} dec={dec:+.5f} deg (one {HOST_MATCH_ARCSEC:g} arcsec cell)"
            seen = "; ".join(f"{s}: {f} row {i}" for s, (f, i) in sorted(where.items()))
            f0, i0 = where[sorted(where)[0]]
            errors.append(Problem(f0, i0, "region_id" if what == "region" else "ra,dec", reason,
                                  f"{label} appears in splits {sorted(where)} (first rows: {seen})"))
        if len(shared) > 50:
            errors.append(Problem(origin or str(root), None, None, reason, f"... {len(shared) - 50} more {what}s in two splits"))
    return ValidationReport(root=str(root), files=results, errors=errors, examples=examples, origin=origin)
