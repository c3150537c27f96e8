"""`dvc plots show` draws the completeness curves with their threshold in the legend and the
theta_E x PSF surface as a heat map (real DVC, the repository's own templates and CSVs)."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import copy_repo


@pytest.mark.slow
def test_dvc_draws_the_surface_as_a_heat_map_and_labels_the_threshold(tmp_path):
    work, env = copy_repo(tmp_path / "repo")
    res = subprocess.run(["dvc", "plots", "show", "-o", "out", "--json",
                          "plots/completeness/small_cnn/theta_e_arcsec__x__psf_r_arcsec.csv",
                          "plots/completeness/small_cnn/arc_snr.csv"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    specs = json.loads(res.stdout)["data"]
    surface = specs["plots/completeness/small_cnn/theta_e_arcsec__x__psf_r_arcsec.csv"][0]["content"]
    assert surface["spec"]["mark"]["type"] == "rect" and surface["spec"]["encoding"]["color"]["field"] == "completeness"
    rows = surface["data"]["values"]
    assert rows and {"x_lo", "x_hi", "y_lo", "y_hi", "primary"} <= set(rows[0])
    curve = specs["plots/completeness/small_cnn/arc_snr.csv"][0]["content"]
    assert "datum.threshold" in json.dumps(curve["transform"]) and curve["encoding"]["color"]["field"] == "series"
