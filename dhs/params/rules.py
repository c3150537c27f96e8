"""Which columns may be a model's inputs: the rules the params schema applies to the feature lists
in params.yaml, and that the model builder and the baselines apply again to what they are given.

A column that describes (or is measured on) the injection carries the label: controls hold 0 or
a constant in it, so a model that sees it reads the label instead of the pixels or conditions.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from dhs.params.fields import ParamsError

# Columns that carry (or are computed from) the injection: a model that sees any of them reads
# the label instead of the pixels. Matched exactly and by prefix.
FORBIDDEN_METADATA = (
    "is_control", "lens_model", "theta_e_arcsec", "src_", "arc_snr", "magnification", "total_injected_flux",
    "lens_e", "lens_q", "lens_phi_rad", "shear", "experiment_id", "task_id", "host_id", "cache_index", "source_row",
)


def check_metadata_columns(columns: Sequence[str]) -> None:
    bad = [c for c in columns if any(c == f or (f.endswith("_") and c.startswith(f)) or c.startswith(f + "_") for f in FORBIDDEN_METADATA)]
    if bad:
        raise ValueError(f"metadata columns {bad} carry the injection label and may not enter the hybrid model; "
                         f"use observing conditions only (e.g. psfsize_r, psfdepth_r, bad_pixel_frac, wise_brightmask_frac, ebv)")


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
