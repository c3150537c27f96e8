"""Legacy Survey FITS cutouts: read one, check it is a usable grz stamp, write one.

The viewer's ``cutout.fits?...&bands=grz`` answers with a primary HDU holding a float32 cube
of shape (3, size, size): bands g, r, z in that order, pixels in nanomaggies (AB zero point
22.5), north up, east left. Outside the survey (or where a band has no exposure) it returns
zeros rather than an error, so a band whose pixels are mostly exactly zero means "no data".

Where the file says its band order (header ``BANDS``, or ``BAND0``..``BAND2``) it must be grz: a
cube in another order is refused, never used as grz. Every HDU of the file is read (a valid
image followed by a truncated HDU is a damaged file), and a local file larger than
``MAX_FILE_BYTES`` is refused before it is read (the HTTP client caps bodies the same way).

``read_cutout`` raises ``CutoutInvalid`` with one of the ``REASONS`` so callers count
rejections per reason instead of crashing or silently dropping rows (docs/conventions.md,
evaluation rules: every row accounted for).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from dhs.errors import StageError

BANDS = "grz"
# a band with more exactly-zero pixels than this fraction has no data there
MAX_ZERO_PIXEL_FRAC = 0.5
FITS_BLOCK = 2880
REASONS = ("not_fits", "bad_shape", "nonfinite_pixels", "no_coverage", "bad_bands", "too_large")
MAX_FILE_BYTES = 64 << 20   # a (3, 96, 96) cube with its inverse variances is ~0.2 MiB


class CutoutInvalid(StageError, ValueError):
    """A cutout that cannot be scored; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def read_cutout(data: bytes | str | os.PathLike, size_px: int, where: str = "cutout", max_nonfinite_frac: float = 0.0) -> np.ndarray:
    """The (3, size_px, size_px) float32 nMgy cube in ``data`` (FITS bytes or a file path).

    ``max_nonfinite_frac``: the fraction of pixels (any band) that may be NaN or Inf; those become
    0, "no data", which counts toward a host's ``bad_pixel_frac``. Above it (and by default, for
    known lenses, at any) the cutout is rejected as ``nonfinite_pixels``.

    Raises ``CutoutInvalid`` naming ``where``, the reason and what was found."""
    import warnings

    from astropy.io import fits

    try:
        if isinstance(data, (str, os.PathLike)) and Path(data).stat().st_size > MAX_FILE_BYTES:
            raise CutoutInvalid("too_large", f"{where}: {Path(data).stat().st_size / 2**20:.0f} MiB, above the "
                                             f"{MAX_FILE_BYTES >> 20} MiB a cutout may have; not read")
        raw = Path(data).read_bytes() if isinstance(data, (str, os.PathLike)) else bytes(data)
        if len(raw) > MAX_FILE_BYTES:
            raise CutoutInvalid("too_large", f"{where}: {len(raw) / 2**20:.0f} MiB, above the {MAX_FILE_BYTES >> 20} MiB a "
                                             f"cutout may have")
        if len(raw) % FITS_BLOCK:  # FITS is written in whole 2880-byte blocks: a shorter file was cut off
            raise CutoutInvalid("not_fits", f"{where}: not a whole FITS file ({len(raw)} bytes, not a multiple of "
                                            f"{FITS_BLOCK}: truncated or not FITS)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns, then fails or reads on; we say which
            with fits.open(io.BytesIO(raw), memmap=False) as hdul:
                datas = [(h.header, h.data) for h in hdul]   # every HDU: a truncated one fails here, not later
                header, cube = next(((hd, d) for hd, d in datas if d is not None), (None, None))
                if cube is not None:
                    cube = np.array(cube)  # detach from the HDU list before it closes
    except CutoutInvalid:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise CutoutInvalid("not_fits", f"{where}: not a readable FITS file ({type(exc).__name__}: {exc})") from None
    if cube is None:
        raise CutoutInvalid("not_fits", f"{where}: the FITS file holds no image data")
    said = _band_order(header)
    if said is not None and said != BANDS:
        raise CutoutInvalid("bad_bands", f"{where}: the file says its bands are {said!r}, not {BANDS!r}; request bands=grz "
                                         f"(a cube in another order would be used with its bands swapped)")
    expected = (len(BANDS), size_px, size_px)
    if cube.shape != expected:
        raise CutoutInvalid("bad_shape", f"{where}: expected a {BANDS} cube of shape {expected}, got {cube.shape} "
                                         f"(check size and bands=grz in the request)")
    cube = cube.astype(np.float32)  # native byte order
    bad = ~np.isfinite(cube)
    if bad.any():
        frac = float(bad.any(axis=0).mean())
        if frac > max_nonfinite_frac:
            allowed = f" (at most {max_nonfinite_frac:.0%} of the pixels may be)" if max_nonfinite_frac else ""
            raise CutoutInvalid("nonfinite_pixels", f"{where}: {int(bad.sum())} NaN/Inf pixel value(s), {frac:.1%} of the "
                                                    f"pixels{allowed}")
        cube[bad] = 0.0   # no data there: counted as a bad pixel, never painted over as sky
    zero_frac = (cube == 0).reshape(len(BANDS), -1).mean(axis=1)
    empty = [f"{b} ({f:.0%} zeros)" for b, f in zip(BANDS, zero_frac) if f > MAX_ZERO_PIXEL_FRAC]
    if empty:
        raise CutoutInvalid("no_coverage", f"{where}: no data in band(s) {', '.join(empty)}: outside the DR10 South "
                                           f"footprint or in a gap")
    return cube


def _band_order(header) -> str | None:
    """The band order a cutout's header states (``BANDS``, else ``BAND0``, ``BAND1``, ...), or None."""
    if header is None:
        return None
    if "BANDS" in header:
        return str(header["BANDS"]).strip().lower()
    bands = [str(header[f"BAND{i}"]).strip().lower() for i in range(3) if f"BAND{i}" in header]
    return "".join(bands) if bands else None


def read_invvar(data: bytes | str | os.PathLike, size_px: int) -> np.ndarray | None:
    """The inverse-variance planes of a cutout, where its FITS file carries them: the first image
    HDU after the pixels with the same (3, size, size) shape; None when there is none."""
    import warnings

    from astropy.io import fits

    raw = Path(data).read_bytes() if isinstance(data, (str, os.PathLike)) else bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(io.BytesIO(raw), memmap=False) as hdul:
            images = [h.data for h in hdul if getattr(h, "data", None) is not None]
            if len(images) < 2 or np.shape(images[1]) != (len(BANDS), size_px, size_px):
                return None
            return np.array(images[1], dtype=np.float32)


def cutout_bytes(cube_nmgy: np.ndarray, header: dict | None = None, invvar: np.ndarray | None = None) -> bytes:
    """A FITS file (bytes) holding ``cube_nmgy`` as float32 in the primary HDU, as the viewer does."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(cube_nmgy, dtype=np.float32))
    hdu.header["BANDS"] = BANDS
    hdu.header["BUNIT"] = "nanomaggy"
    for k, v in (header or {}).items():
        hdu.header[k] = v
    hdus = [hdu] + ([fits.ImageHDU(np.asarray(invvar, dtype=np.float32), name="INVVAR")] if invvar is not None else [])
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()
