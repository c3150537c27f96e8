"""The ``known_lenses`` params section (checked by dhs.params.schema), for both stages (cutouts,
known_lenses).

Keys (defaults in brackets):

- ``catalog`` [dhs/known_lenses/known_lenses.csv], ``grades`` [all three], ``max_lenses`` [null = all]
- ``source``: ``legacysurvey`` [default] or a local directory of FITS cutouts
- ``url_template`` [the viewer's cutout.fits], ``layer`` [ls-dr10], ``pixscale_arcsec`` [0.262],
  ``size_px`` [64: the model's stamp size; larger cutouts are centre-cropped for scoring]
- ``max_concurrency`` [4, at most 8], ``max_attempts`` [4], ``connect_timeout_s`` [5],
  ``read_timeout_s`` [60], ``backoff_s`` [1.0, doubling per retry, capped at 30 s]
- ``cutout_deadline_s`` [120: wall time per cutout, all attempts], ``run_deadline_s`` [10800: the run]
- ``require`` [false]: true makes "no cutout at all" (offline, or every row rejected) an error
- ``prob_thresholds`` [[0.3, 0.5, 0.9]], ``theta_e_bins_arcsec`` [[0.5, 1.0, 1.25, 1.5, 2.0]],
  ``gallery_max`` [48], ``batch_size`` [256], ``device`` [auto]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from dhs.cutouts.client import CutoutError, CutoutSpec, FetchConfig
from dhs.params import ParamsError, checked
from dhs.params.views import view


@dataclass(frozen=True)
class KnownLensConfig:
    """A view of the ``known_lenses`` section of params.yaml (each key, its default and its check
    in dhs.params.schema). Not keys of the section: ``spec``, the cutout asked for (``size_px``,
    ``pixscale_arcsec``, ``layer``), and ``fetch``, how it is fetched (``FetchConfig``, a view of
    the same section)."""
    SECTION: ClassVar[str] = "known_lenses"
    catalog: str
    grades: tuple[str, ...]
    max_lenses: int | None
    source: str
    spec: CutoutSpec
    fetch: FetchConfig
    require: bool
    prob_thresholds: tuple[float, ...]
    theta_e_bins_arcsec: tuple[float, ...]
    gallery_max: int
    batch_size: int
    device: str

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml") -> "KnownLensConfig":
        """From the ``known_lenses`` section, checked by the schema (dhs.params.schema)."""
        v = checked("known_lenses", p, source)
        try:
            spec = CutoutSpec(size_px=v["size_px"], pixscale_arcsec=v["pixscale_arcsec"], layer=v["layer"])
            fetch = FetchConfig.from_params(v, source)
        except CutoutError as exc:
            raise ParamsError(f"{source}: known_lenses: {exc}") from None
        return view(cls, v, source, spec=spec, fetch=fetch)
