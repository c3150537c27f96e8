"""The DR10 South footprint as used for known-lens recovery: a documented, conservative cut.

A position is kept when both hold:

- ``dec_deg < 32.375``: the DR9/DR10 north-south boundary (DESI target selection uses
  BASS/MzLS north of Dec = 32.375 deg in the north galactic cap). The ``ls-dr10`` cutout layer
  serves DECam (south) images only; north of this line it is BASS/MzLS territory. Applying the
  line in the south galactic cap too (where DECaLS reaches about +34 deg) loses a sliver of
  coverage and never admits blank sky.
- ``|b| >= 10 deg`` (galactic latitude): DECam grz coverage near the plane is patchy, stellar
  density and extinction make it useless for LRG lens searches, and DR10 LRG hosts do not
  reach it. Of the shared catalogues this removes 4 lenscat confident lenses (south of the
  Dec line) and no DESI candidate or SLACS/BELLS lens.

The cut is a sky-area approximation: holes inside it (chip gaps, missing bands) show up later
as cutouts without data, which the cutout validation rejects with the reason ``no_coverage``.
Galactic latitude uses astropy's ICRS -> Galactic transform.
"""

from __future__ import annotations

import numpy as np

DEC_MAX_DEG = 32.375
MIN_ABS_GALACTIC_LAT_DEG = 10.0


def valid_coordinates(ra_deg, dec_deg) -> np.ndarray:
    """True where RA is finite and in [0, 360) and Dec is finite and in [-90, 90] (degrees)."""
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(ra) & np.isfinite(dec) & (ra >= 0.0) & (ra < 360.0) & (dec >= -90.0) & (dec <= 90.0)


def galactic_latitude_deg(ra_deg, dec_deg) -> np.ndarray:
    """Galactic latitude b (degrees) of ICRS positions; needs valid coordinates."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    if ra.size == 0:
        return np.zeros(0)
    return np.asarray(SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic.b.deg, dtype=np.float64)


def footprint_reason(ra_deg, dec_deg, dec_max_deg: float = DEC_MAX_DEG,
                     min_abs_b_deg: float = MIN_ABS_GALACTIC_LAT_DEG) -> np.ndarray:
    """Per position: "" (inside), "bad_coordinates", "outside_dr10_south_dec" or "galactic_plane".

    The first failing test names the reason, in that order, so each row has exactly one."""
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    reason = np.full(ra.shape, "", dtype=object)
    ok = valid_coordinates(ra, dec)
    reason[~ok] = "bad_coordinates"
    north = ok & (dec >= dec_max_deg)
    reason[north] = "outside_dr10_south_dec"
    rest = ok & ~north
    if min_abs_b_deg > 0 and rest.any():
        b = galactic_latitude_deg(ra[rest], dec[rest])
        plane = np.zeros(ra.shape, dtype=bool)
        plane[rest] = np.abs(b) < min_abs_b_deg
        reason[plane] = "galactic_plane"
    return reason
