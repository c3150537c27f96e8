"""Validate a Phase 4c stamp dataset against the contract, reporting every problem at once.

Two kinds of finding:
- dataset errors (``report.errors``): the dataset cannot be used as it is: an unreadable or
  non-parquet shard, a file outside a ``region_split=`` partition, missing contract columns,
  wrong column types, a region or a host position in two splits. Each names the file (and
  column or region).
- row rejections (``report.rejected``): a row that cannot be used, counted by reason, with
  examples naming file, row and column: ``unknown_split``, ``null_required``,
  ``cutout_not_ok``, ``label_mismatch``, ``duplicate_task_id``, and the stamp codec's
  ``corrupt_npz``, ``missing_band``, ``wrong_shape``, ``nonfinite_pixels``.

Every row read is either used or rejected for exactly one reason (the first that applies in
the order above), so ``rows_read == rows_used + sum(rejected)`` always holds.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from dhs.contract.codec import StampError, decode_stamp
from dhs.contract.schema import Contract, load_contract

ROW_REASONS = (
    "unknown_split", "null_required", "cutout_not_ok", "label_mismatch", "duplicate_task_id",
    "corrupt_npz", "missing_band", "wrong_shape", "nonfinite_pixels", "bad_schema",
)
EXAMPLES_PER_REASON = 20
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


@dataclass
class ValidationReport:
    root: str
    files: list[FileResult]
    errors: list[Problem]
    examples: list[Problem]

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

    def summary(self, max_lines: int = 30) -> str:
        lines = [f"{self.root}: {len(self.files)} files, {self.rows_read} rows read, {self.rows_used} usable"]
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
        }


class DatasetInvalid(ValueError):
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


def validate_file(path: str, root: str, check_pixels: bool = True, contract: Contract | None = None) -> FileResult:
    contract = contract or load_contract()
    p, root_p = Path(path), Path(root)
    split = partition_split(p, root_p, contract.partition_key)
    res = FileResult(path=str(p), split=split)
    rel = str(p.relative_to(root_p))
    if split is None:
        res.errors.append(Problem(rel, None, None, "no_partition", f"file is not under a '{contract.partition_key}=<split>/' directory"))
    try:
        pf = pq.ParquetFile(p)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a readable parquet shard"
        res.errors.append(Problem(rel, None, None, "unreadable_file", f"not a readable parquet file: {type(exc).__name__}: {exc}"))
        return res
    schema = pf.schema_arrow
    res.n_rows = pf.metadata.num_rows
    names = set(schema.names)
    bad_schema = False
    for col in contract.required:
        if col.name == contract.partition_key:
            continue
        if col.name not in names:
            res.errors.append(Problem(rel, None, col.name, "missing_column", f"required column {col.name!r} ({col.type}, {col.unit or 'no unit'}) is missing"))
            bad_schema = True
    for col in contract.columns:
        if col.name in names and not col.accepts(schema.field(col.name).type):
            res.errors.append(Problem(rel, None, col.name, "wrong_type", f"column {col.name!r} has type {schema.field(col.name).type}, expected {col.type}"))
            bad_schema = True
    reasons = np.full(res.n_rows, "", dtype=object)
    res.labels = np.full(res.n_rows, -1, dtype=np.int64)
    if bad_schema:
        reasons[:] = "bad_schema"
        res.reasons = reasons
        return res

    unknown_split = split not in contract.splits
    if split is not None and unknown_split:
        res.examples.append(Problem(rel, None, contract.partition_key, "unknown_split", f"split {split!r} is not one of {list(contract.splits)}"))
    read_cols = [c.name for c in contract.required if c.name in names] + [c for c in ("ra", "dec") if c in names]
    read_cols = list(dict.fromkeys(read_cols))
    non_nullable = [c.name for c in contract.required if not c.nullable and c.name in names]
    task_ids, region_ids, host_key_parts = [], [], []
    row0 = 0
    per_reason: Counter = Counter()

    def note(i: int, reason: str, column: str | None, msg: str) -> None:
        reasons[i] = reason
        per_reason[reason] += 1
        if per_reason[reason] <= EXAMPLES_PER_REASON:
            res.examples.append(Problem(rel, i, column, reason, msg))

    for batch in pf.iter_batches(batch_size=2048, columns=read_cols):
        tbl = batch
        n = tbl.num_rows
        cols = {name: tbl.column(name) for name in read_cols}
        is_control = cols["is_control"].to_numpy(zero_copy_only=False)
        lens_model = cols["lens_model"].to_pylist()
        cutout_ok = cols["cutout_ok"].to_numpy(zero_copy_only=False)
        size = cols["stamp_size"].to_numpy(zero_copy_only=False)
        blobs = cols["stamp_npz"].to_pylist() if check_pixels else None
        nulls = {name: np.asarray(cols[name].is_null()) for name in non_nullable}
        task_ids.append(np.asarray(cols["task_id"].to_pylist(), dtype=object))
        region_ids.append(cols["region_id"].fill_null(NO_KEY).to_numpy(zero_copy_only=False).astype(np.int64))
        host_key_parts.append(host_keys(cols["ra"].to_numpy(zero_copy_only=False).astype(float),
                                        cols["dec"].to_numpy(zero_copy_only=False).astype(float)))
        for j in range(n):
            i = row0 + j
            lab = is_control[j]
            res.labels[i] = int(lab) if lab is not None and not (isinstance(lab, float) and np.isnan(lab)) else -1
            if unknown_split:
                reasons[i] = "unknown_split"
                per_reason["unknown_split"] += 1
                continue
            null_col = next((c for c, m in nulls.items() if m[j]), None)
            if null_col is not None:
                note(i, "null_required", null_col, f"{null_col!r} is null but the contract requires a value")
                continue
            if int(cutout_ok[j]) != 1:
                note(i, "cutout_not_ok", "cutout_ok", "cutout_ok is 0 (failed cutout upstream)")
                continue
            lm = lens_model[j]
            if lm not in contract.lens_models or int(lab) not in (0, 1) or (lm == "CONTROL") != (int(lab) == 1):
                note(i, "label_mismatch", "lens_model", f"lens_model {lm!r} disagrees with is_control={lab} (expected one of {list(contract.lens_models)})")
                continue
            if int(size[j]) not in contract.stamp_sizes:
                note(i, "wrong_shape", "stamp_size", f"stamp_size {size[j]} is not one of {list(contract.stamp_sizes)}")
                continue
            if check_pixels:
                try:
                    decode_stamp(blobs[j], stamp_size=int(size[j]))
                except StampError as exc:
                    note(i, exc.reason, "stamp_npz", str(exc))
        row0 += n
    res.reasons = reasons
    res.task_ids = np.concatenate(task_ids) if task_ids else np.array([], dtype=object)
    res.region_ids = np.concatenate(region_ids) if region_ids else np.array([], dtype=np.int64)
    res.host_keys = np.concatenate(host_key_parts) if host_key_parts else np.array([], dtype=np.int64)
    return res


def _validate_file_star(args):
    return validate_file(*args)


def validate(dataset: str | os.PathLike, check_pixels: bool = True, workers: int = 1, progress: bool = True) -> ValidationReport:
    """Validate every shard under ``dataset`` (a Hive-partitioned directory) and cross-check splits."""
    root = Path(dataset)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    contract = load_contract()
    shards = list_shards(root)
    others = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".parquet" and not p.name.startswith((".", "_")))
    errors: list[Problem] = [
        Problem(str(p.relative_to(root)), None, None, "not_parquet", "file in the dataset does not end in .parquet; remove it or fix its name")
        for p in others
    ]
    if not shards:
        errors.append(Problem(str(root), None, None, "empty_dataset", "no parquet shards found"))
    jobs = [(str(p), str(root), check_pixels) for p in shards]
    bar = dict(total=len(jobs), desc="validate shards", unit="file", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            results = list(tqdm(ex.map(_validate_file_star, jobs), **bar))
    else:
        results = [validate_file(*j) for j in tqdm(jobs, **bar)]
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

    # split disjointness: by region and by host position (docs/conventions.md, evaluation rules)
    for what, attr, reason in (("region", "region_ids", "region_in_two_splits"), ("host position", "host_keys", "host_in_two_splits")):
        seen: dict = defaultdict(set)
        for r in ok_results:
            if r.split in contract.splits:
                for v in np.unique(getattr(r, attr)):
                    if v != NO_KEY:
                        seen[int(v)].add(r.split)
        shared = {k: v for k, v in seen.items() if len(v) > 1}
        for k in sorted(shared)[:50]:
            label = f"region_id {k}" if what == "region" else f"host at (ra, dec) key {k}"
            errors.append(Problem(str(root), None, "region_id" if what == "region" else "ra,dec", reason, f"{label} appears in splits {sorted(shared[k])}"))
        if len(shared) > 50:
            errors.append(Problem(str(root), None, None, reason, f"... {len(shared) - 50} more {what}s in two splits"))
    return ValidationReport(root=str(root), files=results, errors=errors, examples=examples)
