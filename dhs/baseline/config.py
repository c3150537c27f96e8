"""The ``baseline`` params section and the rules on which columns each baseline may see.

The leak detector may use observing-condition and quality columns only: a column that describes
(or is measured on) the injection carries the label, since controls hold 0 or a constant in it.
The scalar baseline may not use the columns that define the proxy label it predicts.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dhs.params import ParamsError, checked

MODELS = ("hist_gb", "logistic")
BOOTSTRAP_UNITS = ("region", "row")
PSF_DERIVED = "psf_r_arcsec"

# Columns that describe (or are measured on) the injection; controls carry 0 or a constant in
# them, so any of them gives the label away. Matched case-insensitively as shell patterns.
FORBIDDEN_CONDITION_PATTERNS = ("theta_e*", "src_*", "arc_snr*", "magnification*", "total_injected_flux*", "lens_*",
                                "shear*", "is_control", "lens_model", "label", "recovered")
# The proxy label is defined by arc_snr; total_injected_flux_* is the same arc flux before the
# noise division. Either one as an input makes the scalar baseline trivially perfect.
FORBIDDEN_PROXY_PATTERNS = ("arc_snr*", "total_injected_flux*", "is_control", "lens_model", "label", "recovered")

DEFAULT_CONDITIONS = ("psfsize_r", "psfdepth_r", "psf_fwhm_used_g", "psf_fwhm_used_r", "psf_fwhm_used_z", "ebv",
                      "bad_pixel_frac", "wise_brightmask_frac")
DEFAULT_PROXY_FEATURES = ("theta_e_arcsec", "src_dmag", "src_reff_arcsec", PSF_DERIVED, "psfdepth_r")


def forbidden_features(features: Sequence[str], patterns: Sequence[str] = FORBIDDEN_CONDITION_PATTERNS) -> dict[str, str]:
    """{feature: the pattern it matches} for every feature that is not allowed."""
    bad = {}
    for f in features:
        for p in patterns:
            if fnmatch.fnmatchcase(str(f).lower(), p):
                bad[str(f)] = p
                break
    return bad


def check_condition_features(features: Sequence[str], what: str = "baseline.conditions_features") -> None:
    bad = forbidden_features(features, FORBIDDEN_CONDITION_PATTERNS)
    if bad:
        raise ParamsError(
            f"{what}: {sorted(bad)} are injection columns (matching {sorted(set(bad.values()))}); controls carry 0 in them, "
            f"so they give the label away. The leak detector may use observing-condition and quality columns only "
            f"(e.g. {list(DEFAULT_CONDITIONS)}); forbidden patterns: {list(FORBIDDEN_CONDITION_PATTERNS)}")


def check_proxy_features(features: Sequence[str], what: str = "baseline.proxy_features") -> None:
    bad = forbidden_features(features, FORBIDDEN_PROXY_PATTERNS)
    if bad:
        raise ParamsError(
            f"{what}: {sorted(bad)} define (or restate) the proxy label arc_snr >= snr_min AND theta_E/PSF >= min, "
            f"so the scalar baseline would be trivially perfect; forbidden patterns: {list(FORBIDDEN_PROXY_PATTERNS)}")


@dataclass(frozen=True)
class BaselineConfig:
    conditions_features: tuple[str, ...] = DEFAULT_CONDITIONS
    proxy_features: tuple[str, ...] = DEFAULT_PROXY_FEATURES
    model: str = "hist_gb"
    seed: int = 1
    n_bootstrap: int = 200
    bootstrap_unit: str = "row"
    leak_auc_warn: float = 0.6
    proxy_snr_min: float = 5.0
    proxy_theta_psf_min: float = 0.8
    n_threads: int = 1

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml") -> "BaselineConfig":
        """From the ``baseline`` params section, checked by the schema (dhs.params.schema)."""
        v = checked("baseline", p, source)
        return cls(**{k: tuple(x) if isinstance(x, list) else x for k, x in v.items()})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conditions_features"] = list(self.conditions_features)
        d["proxy_features"] = list(self.proxy_features)
        return d
