"""Encode and decode the ``stamp_npz`` column: numpy.savez_compressed of float32 (H, W)
arrays ``image_g``, ``image_r``, ``image_z`` in nMgy per pixel.

The stored (uncompressed) form the simulator writes has one fixed byte layout per stamp size:
the same zip headers and npy headers around the pixels, only the pixels and their CRC-32s
change. Encoding splices the pixels and CRCs into that layout (bytes identical to the zipfile
writer's, a tenth of its time), and decoding reads such a blob in place after checking every
header byte and every CRC; anything else (deflate, other writers, damage) goes through
``numpy.load`` and its error reporting.

Decoding reports, never guesses: each failure raises ``StampError`` whose ``reason`` is the
rejection reason counted by the stages (failed Phase 4c rows may hold only zeros in
``image_r``; that is a ``missing_band``, not a stamp).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

BANDS = ("g", "r", "z")
BAND_KEYS = tuple(f"image_{b}" for b in BANDS)

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

REASONS = ("corrupt_npz", "missing_band", "wrong_shape", "nonfinite_pixels")


class StampError(ValueError):
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
        buf = bytearray(self.template)
        for band, (a, b), (c1, c2), head in zip(images, self.pixels, self.crcs, self.npy_headers):
            raw = np.ascontiguousarray(band, dtype="<f4").data.cast("B")
            buf[a:b] = raw
            crc = zlib.crc32(raw, zlib.crc32(head))
            struct.pack_into("<I", buf, c1, crc)
            struct.pack_into("<I", buf, c2, crc)
        return bytes(buf)

    def decode(self, blob: bytes) -> np.ndarray | None:
        """(3, H, W) float32, or None when ``blob`` is not exactly this layout with correct CRCs."""
        if len(blob) != len(self.template):
            return None
        view, tmpl = memoryview(blob), self.template
        if any(view[a:b] != tmpl[a:b] for a, b in self.fixed):
            return None
        out = np.empty((3, *self.shape), np.float32)
        for i, ((a, b), (c1, c2), head) in enumerate(zip(self.pixels, self.crcs, self.npy_headers)):
            crc = zlib.crc32(view[a:b], zlib.crc32(head))
            if crc != struct.unpack_from("<I", blob, c1)[0] or crc != struct.unpack_from("<I", blob, c2)[0]:
                return None
            out[i] = np.frombuffer(blob, dtype="<f4", count=(b - a) // 4, offset=a).reshape(self.shape)
        return out


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
