"""`dvc plots show` draws the completeness curves with their threshold in the legend and the
theta_E x PSF surface as a heat map (real DVC, the repository's own templates and CSVs)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO, copy_repo


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


NODE_RENDER = r"""
const vega = require('vega'); const vl = require('vega-lite');
const specs = JSON.parse(require('fs').readFileSync(process.argv[2])).data;
(async () => {
  const out = {};
  for (const [name, entries] of Object.entries(specs)) {
    if (name.endsWith('.png')) continue;
    const view = new vega.View(vega.parse(vl.compile(entries[0].content).spec), {renderer: 'none'});
    await view.runAsync();
    out[name] = await view.toSVG();
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e.stack); process.exit(1); });
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed (renders the Vega specs)")
def test_plots_render_with_operating_points_in_words_and_named_axes(tmp_path):
    """Every data plot `dvc plots show` declares, rendered to SVG by the Vega and Vega-Lite builds the
    project ships (.dvc/plots_html/offline.html) under Node.js: legends say "FPR 1%", never the key
    fpr_0.01, and no axis is titled with a column name such as bin_center."""
    import json
    import re

    work, env = copy_repo(tmp_path / "repo")
    res = subprocess.run(["dvc", "plots", "show", "-o", "out", "--json"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    (tmp_path / "specs.json").write_text(res.stdout)
    page = (REPO / ".dvc/plots_html/offline.html").read_text()
    vega_js, lite_js = re.findall(r"<script[^>]*>(.*?)</script>", page, re.S)[:2]
    for name, js in (("vega", vega_js), ("vega-lite", lite_js)):
        (tmp_path / "node_modules" / name).mkdir(parents=True)
        (tmp_path / "node_modules" / name / "index.js").write_text(js)
    (tmp_path / "render.js").write_text(NODE_RENDER)
    r = subprocess.run(["node", "render.js", "specs.json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    svgs = json.loads(r.stdout)
    completeness = [k for k in svgs if k.startswith("plots/completeness/")]
    assert len(completeness) >= 10 and len(svgs) >= 15
    for name, svg in svgs.items():
        text = " ".join(re.findall(r">([^<>]+)</text>", svg))
        assert "fpr_0" not in text, f"{name}: an operating point's key in the drawing: {text[:300]}"
        assert "bin_center" not in text and "x_lo" not in text, f"{name}: an axis titled with a column name: {text[:300]}"
        if name in completeness and "__x__" not in name:
            assert "FPR 1%" in text and "bin centre" in text, (name, text[:300])
