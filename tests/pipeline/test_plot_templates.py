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


@pytest.mark.slow
def test_every_declared_data_plot_names_its_threshold_and_subset(tmp_path):
    """Every CSV/TSV plot `dvc plots show` draws: where its rows carry a threshold or a subset,
    the drawing separates and names them (no two subsets or FPRs merged in one unlabelled line);
    the ROC has a log FPR axis; tables that are not plots (the top-controls gallery) are not declared."""
    import json

    work, env = copy_repo(tmp_path / "repo")
    res = subprocess.run(["dvc", "plots", "show", "-o", "out", "--json"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    specs = json.loads(res.stdout)["data"]
    data_plots = {k: v for k, v in specs.items() if not k.endswith(".png")}
    assert not any("top_controls" in k for k in specs), "a gallery table is not a plot"
    assert any(k.startswith("plots/roc/") for k in data_plots)
    checked = 0
    for name, entries in data_plots.items():
        content = entries[0]["content"]
        text = json.dumps(content)
        rows = (content.get("data") or {}).get("values") or [
            r for layer in content.get("layer", []) for r in (layer.get("data") or {}).get("values", [])]
        cols = set(rows[0]) if rows and isinstance(rows[0], dict) else set()
        if "threshold" in cols:
            assert "datum.threshold" in text, f"{name}: rows at several thresholds, none named in the drawing"
            checked += 1
        if "subset" in cols and len({r.get("subset") for r in rows}) > 1:
            assert "datum.subset" in text or '"field": "subset"' in text, f"{name}: all and clean drawn as one series"
            checked += 1
        if name.startswith("plots/roc/"):
            assert content["encoding"]["x"]["scale"]["type"] == "log", name
            checked += 1
    assert checked >= 10, checked
