"""Write Hive-partitioned parquet shards: ``region_split=<split>/part-00000.parquet``.

Rows are buffered per split and flushed into shards of ``rows_per_shard`` rows (never one
file per stamp), each with row groups small enough to stream without loading a whole shard.
The partition key lives in the path, not inside the files (the Hive convention). Every page
carries a CRC checksum, which the validator verifies (dhs.contract.validate).

Large binary columns (the encoded stamps) can be handed over as Arrow arrays beside the
DataFrame of scalars, so 48 KB per stamp is never turned into a Python object and copied back;
or as raw arrays (``raw_columns``, e.g. the rendered pixels) with an encoder per column, which
runs where the shard is written. With ``workers`` > 0 the shards are encoded and written in that
many processes (``dhs.contract.workers.process_pool``: numpy and pyarrow only, never torch), so
the process that renders never waits on encoding or parquet; a shard's raw pieces reach its
writer through a buffer of anonymous shared memory the writers inherit when they are forked (one
copy into memory already mapped, read in place; freed when the last process holding it ends, a
SIGKILLed run included). Which rows go into which shard, and the chunks each column is written
in, are decided in the calling process exactly as without workers, so the files are byte for
byte the same whatever the number of workers.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dhs.contract.workers import process_pool

ROW_GROUP_ROWS = 512
IN_FLIGHT_PER_WORKER = 2   # shards handed to each writer process at most at once (~100 MB each at 64 px)
SLOT_MEMORY_BYTES = 8 << 30   # at most this much shared memory for shards in flight (large rows_per_shard: fewer at once)

# encodes one chunk of a raw column: (values of the chunk's rows, those rows) -> an Arrow array
Encoder = Callable[[np.ndarray, pd.DataFrame], pa.Array]


class ShardWriteError(RuntimeError):
    pass


def _head(rows: np.ndarray | slice, n: int) -> np.ndarray | slice:
    return slice(rows.start, rows.start + n) if isinstance(rows, slice) else rows[:n]


def _tail(rows: np.ndarray | slice, n: int) -> np.ndarray | slice:
    return slice(rows.start + n, rows.stop) if isinstance(rows, slice) else rows[n:]


def _gathered(raw: Mapping[str, list[tuple[np.ndarray, np.ndarray | slice]]]) -> dict[str, list[np.ndarray]]:
    return {name: [a[rows] for a, rows in pieces] for name, pieces in raw.items()}


def write_shard(path: str, rows: pd.DataFrame, arrow: Mapping[str, pa.ChunkedArray], raw: Mapping[str, list[np.ndarray]],
                encoders: Mapping[str, Encoder], precompressed: frozenset[str]) -> None:
    """Write one shard: the DataFrame's columns, then the Arrow columns, then each raw column
    encoded chunk by chunk (the chunks ``raw`` lists, in order, cover the rows). Runs in a writer
    process or in the caller."""
    table = pa.Table.from_pandas(rows, preserve_index=False)
    for name, arr in arrow.items():
        table = table.append_column(name, arr)
    for name, pieces in raw.items():
        chunks, a = [], 0
        for piece in pieces:
            chunks.append(encoders[name](piece, rows.iloc[a:a + len(piece)]))
            a += len(piece)
        table = table.append_column(name, pa.chunked_array(chunks))
    # stamp_npz is already deflated: compressing it again costs time and saves nothing; and
    # every stamp is unique, so a dictionary for it is built only to be dropped (it was half
    # of the writing time: 220 against 97 us per 64 px stamp)
    compression = {name: ("NONE" if name in precompressed else "ZSTD") for name in table.column_names}
    dictionary = [name for name in table.column_names if name not in precompressed]
    # page checksums: a flipped byte in any page (a dictionary page included, where it would
    # otherwise change values silently) fails validation, naming the file and column
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression=compression, use_dictionary=dictionary,
                   write_page_checksum=True)


# Shared buffers the writer processes inherit: anonymous shared memory mapped before the pool
# forks, one per shard in flight. Handing ~100 MB a shard through the pool's pipe (pickled, copied
# twice into fresh memory) cost more than encoding and writing it on a VM where a fresh page costs
# a fault; a buffer reused shard after shard is written at memory speed and read in place.
_SLOTS: list[mmap.mmap] = []


def _piece_shape(a: np.ndarray, rows: np.ndarray | slice) -> tuple[int, ...]:
    n = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
    return (n, *a.shape[1:])


def _pack(slot: mmap.mmap, raw: Mapping[str, list[tuple[np.ndarray, np.ndarray | slice]]]
          ) -> dict[str, list[tuple[int, tuple[int, ...], str]]] | None:
    """Gather a shard's raw pieces one after another into ``slot`` (the only copy they get); where
    each lies, or None if they do not fit (the shard then travels through the pipe)."""
    need = sum(math.prod(_piece_shape(a, r)) * a.itemsize for pieces in raw.values() for a, r in pieces)
    if need > len(slot):
        return None
    buf, where, offset = np.frombuffer(slot, dtype=np.uint8), {}, 0
    for name, pieces in raw.items():
        where[name] = []
        for a, rows in pieces:
            shape = _piece_shape(a, rows)
            out = np.ndarray(shape, a.dtype, buffer=buf, offset=offset)
            if isinstance(rows, slice):
                np.copyto(out, a[rows])
            else:
                np.take(a, rows, axis=0, out=out)
            where[name].append((offset, shape, a.dtype.str))
            offset += out.nbytes
    return where


def _write_packed_shard(args) -> Any:
    """In a writer process: the shard's raw pieces are read in place from the inherited slot;
    returns what ``after_write`` returns for the written file (None without one)."""
    path, rows, arrow, raw, slot, where, encoders, precompressed, after_write = args
    if where is not None:
        buf = np.frombuffer(_SLOTS[slot], dtype=np.uint8)
        raw = {name: [np.ndarray(shape, np.dtype(dt), buffer=buf, offset=off) for off, shape, dt in pieces]
               for name, pieces in where.items()}
    write_shard(path, rows, arrow, raw, encoders, precompressed)
    return after_write(path) if after_write is not None else None


class HiveShardWriter:
    def __init__(self, root: str | Path, partition_key: str = "region_split", rows_per_shard: int = 2000,
                 precompressed: tuple[str, ...] = ("stamp_npz",), encoders: Mapping[str, Encoder] | None = None,
                 workers: int = 0, after_write: Callable[[str], Any] | None = None):
        if rows_per_shard < 1:
            raise ValueError("rows_per_shard must be >= 1")
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: write in this process), got {workers}")
        self.root = Path(root)
        self.key = partition_key
        self.rows_per_shard = rows_per_shard
        self.precompressed = frozenset(precompressed)
        self.encoders = dict(encoders or {})
        self._buffers: dict[str, list[pd.DataFrame]] = {}
        self._arrow: dict[str, list[dict[str, pa.Array]]] = {}   # per split: the Arrow columns of each buffered part
        # per split: (rows, {raw column: (the array added, the rows of it that are this part's)}) of each
        # buffered part; the rows are gathered once, where the shard is packed or written
        self._raw: dict[str, list[tuple[int, dict[str, tuple[np.ndarray, np.ndarray | slice]]]]] = {}
        self._buffered: dict[str, int] = {}
        self._next_part: dict[str, int] = {}
        self.rows_written: dict[str, int] = {}
        self.files: list[Path] = []
        self._workers = workers
        # run on each shard where it was written, in the writer process (e.g. its validation, which
        # then overlaps the rendering); results by path in ``after_write_results``
        self.after_write = after_write
        self.after_write_results: dict[str, Any] = {}
        self._pool = None   # forked at the first shard, once the slots it inherits are mapped
        self._free_slots: list[int] = []
        self._in_flight: deque[tuple[Future, Path, int]] = deque()

    def add(self, rows: pd.DataFrame, arrow_columns: Mapping[str, pa.Array] | None = None,
            raw_columns: Mapping[str, np.ndarray] | None = None) -> None:
        """Buffer ``rows``; ``arrow_columns`` and then ``raw_columns`` (one value per row each; a
        raw column is encoded by its encoder where the shard is written) follow the DataFrame's
        columns, in their order, in every call alike."""
        arrow_columns, raw_columns = dict(arrow_columns or {}), dict(raw_columns or {})
        for name, arr in (*arrow_columns.items(), *raw_columns.items()):
            kind = "arrow" if name in arrow_columns else "raw"
            if len(arr) != len(rows):
                raise ValueError(f"{kind} column {name!r} has {len(arr)} values for {len(rows)} rows")
            if name in rows.columns:
                raise ValueError(f"column {name!r} is both in the DataFrame and an {kind} column")
        if set(arrow_columns) & set(raw_columns):
            raise ValueError(f"columns {sorted(set(arrow_columns) & set(raw_columns))} are both arrow and raw columns")
        if missing := sorted(set(raw_columns) - set(self.encoders)):
            raise ValueError(f"raw column(s) {missing} have no encoder; the writer has encoders for {sorted(self.encoders)}")
        splits = rows[self.key].to_numpy()
        for split in sorted(pd.unique(splits)):
            where = np.flatnonzero(splits == split)
            part = rows.iloc[where].drop(columns=[self.key])
            whole = len(where) == len(rows)
            self._buffers.setdefault(split, []).append(part)
            self._arrow.setdefault(split, []).append({k: (a if whole else a.take(pa.array(where))) for k, a in arrow_columns.items()})
            take = slice(0, len(rows)) if whole else where
            self._raw.setdefault(split, []).append((len(part), {k: (a, take) for k, a in raw_columns.items()}))
            self._buffered[split] = self._buffered.get(split, 0) + len(part)
            while self._buffered[split] >= self.rows_per_shard:
                self._flush(split, self.rows_per_shard)

    def close(self) -> None:
        """Write what is buffered and wait for every shard; the writer processes end."""
        try:
            for split in sorted(self._buffers):
                while self._buffered.get(split, 0) > 0:
                    self._flush(split, min(self.rows_per_shard, self._buffered[split]))
            while self._in_flight:
                self._wait_oldest()
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop the writer processes without waiting for shards not yet written (after an error:
        the caller's temporary directory is discarded anyway)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            for m in _SLOTS:
                m.close()
            _SLOTS.clear()
        self._in_flight.clear()

    def _start_pool(self, raw: Mapping[str, list[tuple[np.ndarray, np.ndarray | slice]]]) -> None:
        """Map the shared slots (sized for a full shard of these raw columns), then fork the
        writers, which inherit them. One writer with processes at a time per interpreter."""
        if _SLOTS:
            raise RuntimeError("another HiveShardWriter with writer processes is open in this process; close it first")
        per_row = sum(math.prod(pieces[0][0].shape[1:]) * pieces[0][0].itemsize for pieces in raw.values() if pieces)
        size = max(per_row * self.rows_per_shard, mmap.PAGESIZE)
        n_slots = max(1, min(IN_FLIGHT_PER_WORKER * self._workers, SLOT_MEMORY_BYTES // size))
        _SLOTS.extend(mmap.mmap(-1, size) for _ in range(n_slots))
        self._free_slots = list(range(len(_SLOTS)))
        self._pool = process_pool(self._workers, mp_context=multiprocessing.get_context("fork"))

    def _wait_oldest(self) -> None:
        fut, path, slot = self._in_flight.popleft()
        try:
            result = fut.result()
        except Exception as exc:  # noqa: BLE001 - reported with the shard it was writing
            self.abort()
            raise ShardWriteError(f"writing shard {path} failed: {type(exc).__name__}: {exc}") from exc
        self._free_slots.append(slot)   # its writer is done with it
        if self.after_write is not None:
            self.after_write_results[str(path)] = result

    def _flush(self, split: str, n: int) -> None:
        df = pd.concat(self._buffers[split], ignore_index=True)
        out, rest = df.iloc[:n], df.iloc[n:]
        self._buffers[split] = [rest] if len(rest) else []
        parts = self._arrow[split]
        names = list(parts[0]) if parts else []
        if any(list(p) != names for p in parts):
            raise ValueError(f"split {split}: parts were added with different arrow columns {[list(p) for p in parts]}")
        # chunked: slicing off a shard and keeping the rest copies nothing
        arrow = {k: pa.chunked_array([c for p in parts for c in (p[k].chunks if isinstance(p[k], pa.ChunkedArray) else [p[k]])])
                 for k in names}
        self._arrow[split] = [{k: a.slice(n) for k, a in arrow.items()}] if len(rest) else []
        self._buffered[split] = len(rest)
        part = self._next_part.get(split, 0)
        self._next_part[split] = part + 1
        d = self.root / f"{self.key}={split}"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"part-{part:05d}.parquet"
        raw = self._take_raw(split, n)
        arrow_cols = {k: a.slice(0, n) for k, a in arrow.items()}
        if not self._workers:
            write_shard(str(path), out, arrow_cols, _gathered(raw), self.encoders, self.precompressed)
            if self.after_write is not None:
                self.after_write_results[str(path)] = self.after_write(str(path))
        else:
            if self._pool is None:
                self._start_pool(raw)
            while not self._free_slots:   # bounded memory: wait for the oldest shard
                self._wait_oldest()
            slot = self._free_slots.pop()
            where = _pack(_SLOTS[slot], raw)
            job = (str(path), out, arrow_cols, _gathered(raw) if where is None else {}, slot, where, self.encoders, self.precompressed,
                   self.after_write)
            self._in_flight.append((self._pool.submit(_write_packed_shard, job), path, slot))
        self.rows_written[split] = self.rows_written.get(split, 0) + n
        self.files.append(path)

    def _take_raw(self, split: str, n: int) -> dict[str, list[tuple[np.ndarray, np.ndarray | slice]]]:
        """The raw columns' pieces of the first ``n`` buffered rows of ``split``: the parts as they
        were added, the last one cut at ``n`` (its rest stays buffered), as the Arrow columns'
        chunks are."""
        parts, taken, have = self._raw[split], [], 0
        while have < n:
            size, p = parts.pop(0)
            if have + size > n:
                cut = n - have
                taken.append({k: (a, _head(i, cut)) for k, (a, i) in p.items()})
                parts.insert(0, (size - cut, {k: (a, _tail(i, cut)) for k, (a, i) in p.items()}))
                have = n
            else:
                taken.append(p)
                have += size
        names = list(taken[0]) if taken else []
        if any(list(p) != names for p in taken):
            raise ValueError(f"split {split}: parts were added with different raw columns {[list(p) for p in taken]}")
        return {k: [p[k] for p in taken] for k in names}
