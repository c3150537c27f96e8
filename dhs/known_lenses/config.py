"""The ``known_lenses`` params section, validated once for both stages (cutouts, known_lenses).

Keys (defaults in brackets):

- ``catalog`` [dhs/known_lenses/known_lenses.csv], ``grades`` [all three], ``max_lenses`` [null = all]
- ``source``: ``legacysurvey`` [default] or a local directory of FITS cutouts
- ``url_template`` [the viewer's cutout.fits], ``layer`` [ls-dr10], ``pixscale_arcsec`` [0.262],
  ``size_px`` [64: the model's stamp size; larger cutouts are centre-cropped for scoring]
- ``max_concurrency`` [4, at most 8], ``max_attempts`` [4], ``connect_timeout_s`` [5],
  ``read_timeout_s`` [60], ``backoff_s`` [1.0, doubling per retry, capped at 30 s]
- ``require`` [false]: true makes "no cutout at all" (offline, or every row rejected) an error
- ``prob_thresholds`` [[0.3, 0.5, 0.9]], ``theta_e_bins_arcsec`` [[0.5, 1.0, 1.25, 1.5, 2.0]],
  ``gallery_max`` [48], ``batch_size`` [256], ``device`` [auto]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dhs.known_lenses.catalog import DEFAULT_PATH, GRADES
from dhs.known_lenses.cutouts import DEFAULT_URL_TEMPLATE, CutoutError, CutoutSpec, FetchConfig
from dhs.params import ParamsError

KNOWN_LENS_KEYS = {"catalog", "grades", "max_lenses", "source", "url_template", "layer", "pixscale_arcsec", "size_px",
                   "max_concurrency", "max_attempts", "connect_timeout_s", "read_timeout_s", "backoff_s", "require",
                   "prob_thresholds", "theta_e_bins_arcsec", "gallery_max", "batch_size", "device"}


@dataclass(frozen=True)
class KnownLensConfig:
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
    def from_params(cls, p: Mapping[str, Any], source: str = "params.yaml") -> "KnownLensConfig":
        unknown = sorted(set(p) - KNOWN_LENS_KEYS)
        if unknown:
            raise ParamsError(f"{source}: unknown keys {unknown} in 'known_lenses'; allowed keys are {sorted(KNOWN_LENS_KEYS)}")

        def num(key: str, default, kind=float):
            v = p.get(key, default)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and int(v) != v):
                raise ParamsError(f"{source}: known_lenses.{key} must be {'an integer' if kind is int else 'a number'}, got {v!r}")
            return kind(v)

        require = p.get("require", False)
        if not isinstance(require, bool):
            raise ParamsError(f"{source}: known_lenses.require must be true or false, got {require!r}")
        max_lenses = p.get("max_lenses")
        if max_lenses is not None:
            max_lenses = num("max_lenses", None, int)
            if max_lenses < 1:
                raise ParamsError(f"{source}: known_lenses.max_lenses must be >= 1 or null (all), got {max_lenses}")
        grades = tuple(p.get("grades", GRADES))
        if not grades or set(grades) - set(GRADES):
            raise ParamsError(f"{source}: known_lenses.grades must be a non-empty subset of {list(GRADES)}, got {list(grades)}")
        bins = tuple(float(b) for b in p.get("theta_e_bins_arcsec", (0.5, 1.0, 1.25, 1.5, 2.0)))
        if len(bins) < 2 or any(b <= a for a, b in zip(bins, bins[1:])):
            raise ParamsError(f"{source}: known_lenses.theta_e_bins_arcsec must be >= 2 increasing edges (arcsec), got {list(bins)}")
        gallery_max, batch = num("gallery_max", 48, int), num("batch_size", 256, int)
        if gallery_max < 0 or batch < 1:
            raise ParamsError(f"{source}: known_lenses.gallery_max must be >= 0 and batch_size >= 1")
        if abs(num("pixscale_arcsec", 0.262) - 0.262) > 1e-9:
            raise ParamsError(f"{source}: known_lenses.pixscale_arcsec must be 0.262 (the DR10 pixel scale the models are trained at); "
                              f"cutouts at another scale would be scored at the wrong angular size")
        try:
            spec = CutoutSpec(size_px=num("size_px", 64, int), pixscale_arcsec=num("pixscale_arcsec", 0.262),
                              layer=str(p.get("layer", "ls-dr10")))
            fetch = FetchConfig(url_template=str(p.get("url_template", DEFAULT_URL_TEMPLATE)),
                                max_concurrency=num("max_concurrency", 4, int), max_attempts=num("max_attempts", 4, int),
                                connect_timeout_s=num("connect_timeout_s", 5.0), read_timeout_s=num("read_timeout_s", 60.0),
                                backoff_s=num("backoff_s", 1.0))
        except CutoutError as exc:
            raise ParamsError(f"{source}: known_lenses: {exc}") from None
        probs = p.get("prob_thresholds", (0.3, 0.5, 0.9))
        if not isinstance(probs, (list, tuple)):
            raise ParamsError(f"{source}: known_lenses.prob_thresholds must be a list of numbers in (0, 1), got {probs!r}")
        device = str(p.get("device", "auto"))
        if device not in ("auto", "cpu", "cuda"):
            raise ParamsError(f"{source}: known_lenses.device must be auto, cpu or cuda, got {device!r}")
        return cls(catalog=str(p.get("catalog", DEFAULT_PATH)), grades=grades, max_lenses=max_lenses,
                   source=str(p.get("source", "legacysurvey")), spec=spec, fetch=fetch, require=require,
                   prob_thresholds=tuple(probs), theta_e_bins_arcsec=bins, gallery_max=gallery_max, batch_size=batch,
                   device=device)
