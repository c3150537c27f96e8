"""The selection function's inputs from a score table's columns (the stamps' metadata)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dhs.evaluation.scores import ScoresError


def selection_inputs(scores: pd.DataFrame) -> dict[str, np.ndarray]:
    """The selection function's inputs from score-table columns (the stamps' metadata):
    psf_fwhm_r_arcsec from psf_r_arcsec, psfdepth_r_mag from psfdepth_r (AB mag in the simulated
    survey and the bricks table), lens_r_mag = src_r_mag - src_dmag."""
    need = ("theta_e_arcsec", "psf_r_arcsec", "psfdepth_r", "src_r_mag", "src_dmag", "src_reff_arcsec", "magnification")
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise ScoresError(f"score table: missing column(s) {missing} that the selection function's inputs come from")
    f = lambda c: pd.to_numeric(scores[c], errors="coerce").to_numpy(float)  # noqa: E731
    return {"theta_e_arcsec": f("theta_e_arcsec"), "psf_fwhm_r_arcsec": f("psf_r_arcsec"), "psfdepth_r_mag": f("psfdepth_r"),
            "src_r_mag": f("src_r_mag"), "src_reff_arcsec": f("src_reff_arcsec"), "magnification": f("magnification"),
            "lens_r_mag": f("src_r_mag") - f("src_dmag")}
