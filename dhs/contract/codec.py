"""Encode and decode the ``stamp_npz`` column: numpy.savez_compressed of float32 (H, W)
arrays ``image_g``, ``image_r``, ``image_z`` in nMgy per pixel.

The stored (uncompressed) form the simulator writes has one fixed byte layout per stamp size:
the same zip headers and npy headers around the pixels, only the pixels and their CRC-32s
change. Encoding splices the pixels and CRCs into that layout (bytes identical to the zipfile
writer's, a tenth of its time), and decoding reads such a blob in place after checking every
header byte and every CRC; anything else (deflate, other writers, damage) goes through
``numpy.load`` and its error reporting.

Whole columns: ``stamp_column`` / ``encode_stamps`` write a batch's blobs into one Arrow binary
buffer (no Python object per stamp; what the shard writer takes), and ``decode_stamps`` reads a
column's stored blobs in place, all at once, marking the rows it could not read for
``decode_stamp``. CRC-32 is ISA-L's (``isal``) where installed, zlib's otherwise: same values.

Decoding reports, never guesses: each failure raises ``StampError`` whose ``reason`` is the
rejection reason counted by the stages (failed Phase 4c rows may hold only zeros in
``image_r``; that is a ``missing_band``, not a stamp).
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from dhs.errors import StageError

try:  # the same CRC-32 (zip's polynomial) ~8x faster: Intel ISA-L, SIMD carry-less multiply
    from isal.isal_zlib import crc32 as _crc32
except ImportError:  # a machine without the wheel (a bare GPU box) gets the same values, slower
    from zlib import crc32 as _crc32

BANDS = ("g", "r", "z")
BAND_KEYS = tuple(f"image_{b}" for b in BANDS)

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

REASONS = ("corrupt_npz", "missing_band", "wrong_shape", "nonfinite_pixels")


class StampError(StageError, ValueError):
    """A stamp that cannot be used; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def encode_stamp(images: np.ndarray, compress: bool = True) -> bytes:
    """(3, H, W) array in g, r, z order -> npz bytes with float32 image_g/r/z.

    ``compress=True`` writes what ``numpy.savez_compressed`` writes (deflate); ``False`` what
    ``numpy.savez`` writes (stored). ``np.load`` and ``decode_stamp`` read both. Sky-noise
    dominated float32 pixels barely compress (44 KB against 49 KB for 64x64 grz) while deflate
    costs ~1.5 ms per stamp to write and ~1 ms to read.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[0] != 3:
        raise ValueError(f"encode_stamp expects a (3, H, W) grz array, got shape {images.shape}")
    if not compress:
        return _stored_layout(images.shape[1], images.shape[2]).encode(images)
    return _zip_stamp(images, compress)


def _zip_stamp(images: np.ndarray, compress: bool) -> bytes:
    # Same layout as numpy.savez_compressed, but with fixed zip timestamps so the same pixels
    # always give the same bytes (savez stamps the current time into every member).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i, key in enumerate(BAND_KEYS):
            arr = io.BytesIO()
            np.lib.format.write_array(arr, np.ascontiguousarray(images[i], dtype=np.float32), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            # level 1: noisy float32 pixels barely compress further at higher levels, and 6 costs 3x the time
            if compress:
                zf.writestr(info, arr.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
            else:
                zf.writestr(info, arr.getvalue(), compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


@dataclass(frozen=True)
class _StoredLayout:
    """Where the pixels and CRC-32s of each band sit in the stored npz of an (H, W) stamp."""

    template: bytes                         # the zipfile writer's bytes for all-zero bands
    npy_headers: tuple[bytes, ...]          # each member's npy header (CRC-32 covers header + pixels)
    pixels: tuple[tuple[int, int], ...]     # (start, end) of each band's pixel bytes
    crcs: tuple[tuple[int, int], ...]       # (local header, central directory) offsets of each CRC-32
    fixed: tuple[tuple[int, int], ...]      # every other byte range: must equal the template's
    shape: tuple[int, int]

    def encode(self, images: np.ndarray) -> bytes:
        return self.encode_many(np.asarray(images)[None])[0].as_py()

    def decode(self, blob: bytes) -> np.ndarray | None:
        """(3, H, W) float32, or None when ``blob`` is not exactly this layout with correct CRCs."""
        if len(blob) != len(self.template):  # deflated or foreign: no copy into Arrow to find that out
            return None
        out, ok = self.decode_many(pa.array([blob], pa.binary()))
        return out[0] if ok[0] else None

    def encode_many(self, images: np.ndarray) -> pa.BinaryArray:
        """(n, 3, H, W) -> an Arrow binary array of n stored npz blobs in one buffer, each
        byte-identical to ``encode`` of its stamp (no Python bytes object per stamp)."""
        n, size = len(images), len(self.template)
        buf = np.empty((n, size), np.uint8)
        tmpl = np.frombuffer(self.template, np.uint8)
        for a, b in self.fixed:  # every byte but the pixels and CRCs, which are written below
            buf[:, a:b] = tmpl[a:b]
        pix = np.ascontiguousarray(images, dtype="<f4").reshape(n, 3, -1)
        for i, ((a, b), (c1, c2), head) in enumerate(zip(self.pixels, self.crcs, self.npy_headers)):
            buf[:, a:b].view("<f4")[:] = pix[:, i]
            seed = _crc32(head)
            crc = np.fromiter((_crc32(row, seed) for row in buf[:, a:b]), np.uint32, n).astype("<u4")
            buf[:, c1:c1 + 4].view("<u4")[:, 0] = crc
            buf[:, c2:c2 + 4].view("<u4")[:, 0] = crc
        offsets = np.arange(n + 1, dtype=np.int32) * size
        return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(buf)])

    def decode_many(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """A binary column -> ((n, 3, H, W) float32, (n,) bool): the pixels of every blob in
        exactly this layout with correct CRCs, read straight from the column's buffer, and which
        rows those are (the others, nulls included, hold zeros here and go to ``decode_stamp``)."""
        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if not pa.types.is_binary(column.type):
            column = column.cast(pa.binary())
        n, size = len(column), len(self.template)
        out = np.zeros((n, 3, *self.shape), np.float32)
        ok = np.zeros(n, bool)
        if n == 0:
            return out, ok
        _, offs_buf, data_buf = column.buffers()
        offsets = np.frombuffer(offs_buf, np.int32, n + 1, column.offset * 4)
        lengths = np.diff(offsets)
        valid = (lengths == size) & ~np.asarray(column.is_null(), bool)
        data = np.frombuffer(data_buf, np.uint8)
        rows = np.flatnonzero(valid)
        if rows.size == 0:
            return out, ok
        # equal lengths laid end to end: a run of such rows is an (m, size) view of the buffer
        if _contiguous(offsets, rows, size):  # the usual case: one (m, size) view, no copy
            view = data[offsets[rows[0]]:offsets[rows[0]] + size * rows.size].reshape(rows.size, size)
        else:
            view = np.stack([data[o:o + size] for o in offsets[rows]])
        tmpl = np.frombuffer(self.template, np.uint8)
        good = np.ones(rows.size, bool)
        for a, b in self.fixed:
            good &= (view[:, a:b] == tmpl[a:b]).all(axis=1)
        dense = rows.size == n
        for i, ((a, b), (c1, c2), head) in enumerate(zip(self.pixels, self.crcs, self.npy_headers)):
            seed = _crc32(head)
            crc = np.fromiter((_crc32(row, seed) for row in view[:, a:b]), np.uint32, rows.size)
            stored = np.ascontiguousarray(view[:, [c1, c1 + 1, c1 + 2, c1 + 3, c2, c2 + 1, c2 + 2, c2 + 3]]).view("<u4")
            good &= (crc == stored[:, 0]) & (crc == stored[:, 1])
            pixels = view[:, a:b].view("<f4").reshape(rows.size, *self.shape)
            if dense:
                out[:, i] = pixels
            else:
                out[rows, i] = pixels
        ok[rows] = good
        if not ok.all():
            out[~ok] = 0.0
        return out, ok


def _contiguous(offsets: np.ndarray, rows: np.ndarray, size: int) -> bool:
    """Whether the blobs of ``rows`` follow one another in the buffer with nothing between."""
    return bool(rows.size == rows[-1] - rows[0] + 1 and offsets[rows[-1] + 1] - offsets[rows[0]] == size * rows.size)


@lru_cache(maxsize=8)
def _stored_layout(h: int, w: int) -> _StoredLayout:
    template = _zip_stamp(np.zeros((3, h, w), np.float32), compress=False)
    n_pix = h * w * 4
    pixels, crcs, heads, variable = [], [], [], []
    infos = zipfile.ZipFile(io.BytesIO(template)).infolist()
    # the central directory: one 46-byte record + name + extra + comment per member, in order
    eocd = template.rindex(b"PK\x05\x06")
    cd = struct.unpack_from("<I", template, eocd + 16)[0]
    for info in infos:
        name_len, extra_len = struct.unpack_from("<HH", template, info.header_offset + 26)
        data = info.header_offset + 30 + name_len + extra_len
        start, end = data + info.file_size - n_pix, data + info.file_size
        heads.append(template[data:start])
        pixels.append((start, end))
        crcs.append((info.header_offset + 14, cd + 16))
        variable += [(start, end), (info.header_offset + 14, info.header_offset + 18), (cd + 16, cd + 20)]
        n, e, c = struct.unpack_from("<HHH", template, cd + 28)
        cd += 46 + n + e + c
    fixed, pos = [], 0
    for a, b in sorted(variable):
        if a > pos:
            fixed.append((pos, a))
        pos = b
    fixed.append((pos, len(template)))
    return _StoredLayout(template, tuple(heads), tuple(pixels), tuple(crcs), tuple(fixed), (h, w))


def encode_stamps(images: np.ndarray) -> pa.BinaryArray:
    """(n, 3, H, W) g, r, z -> an Arrow binary column of stored npz blobs (``encode_stamp(...,
    compress=False)`` of each stamp, byte for byte) in one buffer: what the shard writer takes
    without a Python object per stamp."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"encode_stamps expects an (n, 3, H, W) grz array, got shape {images.shape}")
    return _stored_layout(images.shape[2], images.shape[3]).encode_many(images)


def failed_cutout_blob(stamp_size: int) -> bytes:
    """What a failed Phase 4c row (cutout_ok = 0) holds: only image_r, all zeros, deflated."""
    buf = io.BytesIO()
    np.savez_compressed(buf, image_r=np.zeros((stamp_size, stamp_size), np.float32))
    return buf.getvalue()


def stamp_column(images: np.ndarray, ok: np.ndarray | None = None, compress: bool = False, map_fn=map) -> pa.BinaryArray:
    """The ``stamp_npz`` column of a batch: (n, 3, H, W) stamps encoded (stored: ``encode_stamps``,
    one buffer; deflate: ``encode_stamp`` per stamp through ``map_fn``, e.g. a thread pool's
    map), the rows where ``ok`` is False holding ``failed_cutout_blob`` instead."""
    images = np.asarray(images)
    if compress:
        column = pa.array(list(map_fn(lambda img: encode_stamp(img, compress=True), images)), pa.binary())
    else:
        column = encode_stamps(images)
    if ok is not None and not np.all(ok):
        failed = pa.array([failed_cutout_blob(images.shape[-1])], pa.binary())
        index = np.where(np.asarray(ok, bool), np.arange(len(images)), len(images))
        column = pa.concat_arrays([column, failed]).take(pa.array(index))
    return column


F16_MAX = float(np.finfo(np.float16).max)


def to_storage_dtype(images: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, H, W) float32 pixels as the training cache stores them, and which stamps were
    clipped: float16 keeps 11 significant bits, far below the sky noise, and values beyond its
    range (|x| > 65504 nMgy, a saturated star) are clipped to it; float32 is kept as it is."""
    if dtype == "float32":
        return np.asarray(images, np.float32), np.zeros(len(images), bool)
    if dtype != "float16":
        raise ValueError(f"storage dtype must be float16 or float32, got {dtype!r}")
    if len(images) and (images.max() > F16_MAX or images.min() < -F16_MAX):   # two reductions, no temporary
        over = (np.abs(images) > F16_MAX).any(axis=(1, 2, 3))
        images = np.clip(images, -F16_MAX, F16_MAX)
    else:
        over = np.zeros(len(images), bool)
    return images.astype(np.float16), over


def decode_stamps(column: pa.Array | pa.ChunkedArray, stamp_size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``stamp_npz`` column of stamps of ``stamp_size`` -> ((n, 3, H, W) float32, (n,) bool
    decoded). Rows in the stored layout with correct CRCs are read in place, all at once;
    the rows marked False (other writers, deflate, damage, nulls) hold zeros and must go through
    ``decode_stamp``, which decodes them or says why not. Finiteness is not checked here."""
    return _stored_layout(stamp_size, stamp_size).decode_many(column)


def decode_stamp(blob: bytes | None, stamp_size: int | None = None, check_finite: bool = True) -> np.ndarray:
    """npz bytes -> (3, H, W) float32 (g, r, z). Raises ``StampError`` with a reason."""
    if blob is None or len(blob) == 0:
        raise StampError("corrupt_npz", "stamp_npz is empty or null")
    out = _stored_layout(stamp_size, stamp_size).decode(blob) if stamp_size else None
    if out is not None:
        if check_finite and not np.isfinite(out).all():
            raise StampError("nonfinite_pixels", f"{int((~np.isfinite(out)).sum())} NaN/Inf pixels")
        return out
    try:
        loaded = np.load(io.BytesIO(blob), allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise StampError("corrupt_npz", f"stamp_npz holds a single {type(loaded).__name__}, not an npz of {list(BAND_KEYS)}")
        with loaded as npz:
            keys = set(npz.files)
            missing = [k for k in BAND_KEYS if k not in keys]
            if missing:
                raise StampError("missing_band", f"stamp_npz lacks {missing} (has {sorted(keys)})")
            arrays = [npz[k] for k in BAND_KEYS]
    except StampError:
        raise
    # numpy parses a damaged npy header before any CRC is checked, and fails in ways beyond its
    # documented ones (AssertionError on a version byte, tokenize.TokenError, SyntaxError on the
    # header dict): for untrusted bytes every failure to parse is a corrupt stamp
    except Exception as exc:  # noqa: BLE001
        raise StampError("corrupt_npz", f"stamp_npz does not decode as npz: {type(exc).__name__}: {exc}") from None
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise StampError("wrong_shape", f"bands have different shapes {[a.shape for a in arrays]}")
    shape = arrays[0].shape
    if len(shape) != 2 or shape[0] != shape[1] or (stamp_size is not None and shape != (stamp_size, stamp_size)):
        want = f"({stamp_size}, {stamp_size})" if stamp_size else "square (H, H)"
        raise StampError("wrong_shape", f"band arrays have shape {shape}, expected {want}")
    out = np.stack(arrays).astype(np.float32, copy=False)
    if check_finite and not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise StampError("nonfinite_pixels", f"{bad} NaN/Inf pixels")
    return out
