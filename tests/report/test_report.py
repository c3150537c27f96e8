"""The report stage: a self-contained HTML page built from whatever the pipeline has produced.

A small fixture world (real score tables on the simulated cache, well-formed metrics of the
other stages, one arch with nothing but scores) is rendered; its numbers are the stages' own,
each with the file it came from; missing and broken inputs turn into "not run" / error notices,
never a crash or an empty section; and the page is opened in headless Chromium, which must load
every image, find no empty section and produce a non-blank screenshot.
"""


from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from tests.conftest import REPO  # noqa: E402
from dhs.imaging.cache import open_split  # noqa: E402
from dhs.params import ParamsError, load_params  # noqa: E402
from dhs.report import ReportConfig  # noqa: E402
from dhs.evaluation.scores import score_table  # noqa: E402
from dhs.report import stage as report_stage  # noqa: E402
from dhs.report.html import Section, img, page  # noqa: E402

SECTION_IDS = ["headline", "accounting", "population", "galleries", "training", "roc", "completeness", "false_positives",
               "surface", "selection", "sensitivity", "calibration", "gates", "known_lenses", "provenance"]
ARCHS = ["small_cnn", "resnet18"]


# ----------------------------------------------------------------------------- the fixture world

def _png(path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) if not isinstance(obj, str) else obj)


def _scores(cache: Path, seed: int) -> pd.DataFrame:
    """Real score tables (dhs.evaluation.scores.score_table) on the simulated cache, injections score higher."""
    rng = np.random.default_rng(seed)
    tables = []
    for split in ("val", "test"):
        meta = open_split(cache, split).meta
        label = (meta["is_control"].to_numpy() == 0).astype(float)
        tables.append(score_table(split, meta, rng.normal(0, 1, len(meta)) + 2.5 * label))
    return pd.concat(tables, ignore_index=True)


def _completeness_csv(path: Path, var: str) -> None:
    rows = []
    for th in ("fpr_0.01", "fpr_0.001"):
        for sub in ("all", "clean"):
            for i, (lo, hi) in enumerate([(0.5, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 2.5)]):
                n, k = (60, 60, 45, 30)[i], (20, 36, 38, 27)[i] - (6 if th == "fpr_0.001" else 0)
                rows.append(dict(subset=sub, threshold=th, bin_lo=lo, bin_hi=hi, bin_center=(lo + hi) / 2, n=n, k=k,
                                 completeness=k / n, wilson_lo=max(k / n - 0.1, 0), wilson_hi=min(k / n + 0.1, 1),
                                 boot_lo=max(k / n - 0.12, 0), boot_hi=min(k / n + 0.12, 1), low_n=n < 50))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def _surface_csv(path: Path) -> None:
    rows = []
    for i, (xl, xh) in enumerate([(0.5, 1.0), (1.0, 1.5), (1.5, 2.5)]):
        for j, (yl, yh) in enumerate([(0.8, 1.1), (1.1, 1.6)]):
            n, k = 40 + i, 10 + 8 * i - 3 * j
            rows.append(dict(threshold="fpr_0.01", subset="all", x_lo=xl, x_hi=xh, y_lo=yl, y_hi=yh, n=n, k=k, completeness=k / n))
    pd.DataFrame(rows).to_csv(path, index=False)


def _params(root: Path, **report) -> Path:
    from tests.conftest import small_sim_params

    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["simulate"] = small_sim_params()     # the survey the fixture's cache was rendered from (the gallery redraws its arcs)
    p["train"]["archs"] = p["finders"]["measure"] = list(ARCHS)
    p["report"] = {"gallery_n": 3, "gallery_theta_bins": 2, "seed": 1, "title": "Fixture <report> & co", **report}
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def world(sim_cache, tmp_path_factory) -> Path:
    """small_cnn: every stage's output (completeness as CSV only, so the report redraws it);
    resnet18: scores and a training history only."""
    root = tmp_path_factory.mktemp("report_world")
    _params(root)
    for i, arch in enumerate(ARCHS):
        (root / "data/scores").mkdir(parents=True, exist_ok=True)
        _scores(sim_cache, seed=i).to_parquet(root / f"data/scores/{arch}.parquet", index=False)
    _write(root / "metrics/stamps.json", {
        "by_split_label": {s: {"control": {"used": 20, "rejected": {"cutout_not_ok": 1}},
                               "injection": {"used": 21, "rejected": {"nan_pixels": 2}}} for s in ("train", "val", "test")},
        "rejected_by_reason": {"cutout_not_ok": 3, "nan_pixels": 6}, "rows_read": 132, "rows_used": 123, "rows_rejected": 9,
        "region_disjoint": True, "host_disjoint": True, "n_regions_by_split": {"train": 7, "val": 1, "test": 2}, "source": "synthetic"})
    _write(root / "metrics/baseline.json", {"leak": {"auc_test": 0.51, "auc_test_ci95": [0.47, 0.55], "auc_ci95_excludes_chance": False,
                                                     "features": ["psfsize_r", "ebv"]}})
    hist = [{"epoch": e, "step": 10 * e, "train_loss": 0.7 / e, "val_loss": 0.6 / e, "val_auc": 0.8 + 0.05 * e} for e in (1, 2, 3)]
    for arch in ARCHS:
        _write(root / f"metrics/train/{arch}.json", {"best": {"epoch": 3, "step": 30, "auc": 0.95, "loss": 0.2}, "history": hist,
                                                     "test_at_best": {"auc": 0.94, "loss": 0.21, "n": 33}, "n_parameters": 1234})
        _write(root / f"metrics/infer/{arch}.json", {"by_split": {"test": {"scored": 33, "injection": 17, "control": 16}}})
    _write(root / "metrics/train/small_cnn.throughput.json", {"steps_timed": 30, "elapsed_s": 2.0, "images_per_s": 4321.5, "world_size": 1,
                                                              "device_name": "NVIDIA H200", "train_gflop_per_image": 14.1,
                                                              "achieved_tflops": 60.9, "peak_bf16_tflops_per_device": 989.4,
                                                              "fraction_of_peak": 0.0616})
    lv = root / "dvclive/small_cnn/plots/metrics"
    _write(lv / "train/loss.tsv", "step\tloss\n0\t0.69\n10\t0.5\n20\t0.4\n30\t0.35\n")
    _write(lv / "val/loss.tsv", "step\tloss\n10\t0.55\n20\t0.45\n30\t0.4\n")
    _write(lv / "val/auc.tsv", "step\tauc\n10\t0.85\n20\t0.9\n30\t0.93\n")
    _write(lv / "val/auc_selected.tsv", "step\tauc_selected\n10\t0.95\n20\t0.97\n30\t0.98\n")
    _write(root / "metrics/completeness/small_cnn.json", {
        "auroc": 0.97, "eval_split": "test", "plot_threshold": "fpr_0.01", "rows": {"controls": 16, "injections": 17},
        "thresholds": [{"name": "fpr_0.01", "target_fpr": 0.01, "score": 0.9, "n_controls": 16, "n_controls_above": 0,
                        "achieved_fpr": 0.0, "low_count": True}],
        "headline": {"fpr_0.01": {"overall": {"all": {"k": 10, "n": 17, "completeness": 0.59, "wilson_lo": 0.36, "wilson_hi": 0.78,
                                                      "boot_lo": 0.412, "boot_hi": 0.733}},
                                  "theta_e_over_psf_ge_1": {"all": {"k": 5, "n": 9, "completeness": 0.56}}}}})
    _write(root / "plots/roc/small_cnn.csv", "fpr,tpr\n0,0\n0,0.4\n0.0625,0.7\n0.25,0.9\n1,1\n")
    _completeness_csv(root / "plots/completeness/small_cnn/theta_e_arcsec.csv", "theta_e_arcsec")
    _completeness_csv(root / "plots/completeness/small_cnn/theta_e_over_psf.csv", "theta_e_over_psf")
    _surface_csv(root / "plots/completeness/small_cnn/theta_e_arcsec__x__psf_r_arcsec.csv")
    _write(root / "metrics/calibration/small_cnn.json", {"temperature": 1.7, "val": {"ece_before": 0.08, "ece_after": 0.021},
                                                         "test": {"ece_before": 0.09, "ece_after": 0.0234, "brier_after": 0.05}})
    _png(root / "plots/calibration/small_cnn.png", "reliability")
    _write(root / "metrics/gates/small_cnn.json", {"all_passed": False, "gates": [
        {"name": "core_only_auc", "passed": False, "value": 0.93, "threshold": 0.7},
        {"name": "region_disjoint", "passed": True, "value": 1, "threshold": 1}]})
    _png(root / "plots/gates/small_cnn.png", "gates")
    _write(root / "metrics/known_lenses/small_cnn.json", {"status": "offline", "reason": "no network", "n_lenses": 60})
    _write(root / "metrics/selection/small_cnn.json", {
        "file": "data/selection/small_cnn.json", "eval_split": "test",
        "rows": {"fit": 3038, "fit_regions": 42, "held_out": 1392, "held_out_regions": 18, "held_out_outside_range": 12},
        "validation": {"fpr_0.01": {"fraction_inside_predictive": 0.9365, "n_bins_counted": 63, "fraction_inside_model_band": 0.61,
                                    "min_bin_n": 25, "calibration": {"statistic": 11.2, "dof": 10, "p_value": 0.342}}},
        "sky": {"fpr_0.01": {"model": 0.1003, "model_lo": 0.09, "model_hi": 0.111, "binned": {"completeness": 0.0941, "boot_lo": 0.08, "boot_hi": 0.11}}}})
    _png(root / "plots/selection/small_cnn/theta_e_over_psf.png", "selection model")
    _write(root / "metrics/closure.json", {"n_seeds": 2, "min_bin_n": 50, "expected_binned_coverage": 0.834, "coverage": {
        "model@fpr_0.01": {"coverage": 0.969, "lo": 0.914, "hi": 0.99, "n": 98}, "wilson": {"coverage": 0.735, "lo": 0.681, "hi": 0.782, "n": 294},
        "model": {"coverage": 0.986, "lo": 0.966, "hi": 0.995, "n": 294}}})
    _write(root / "metrics/sensitivity.json", {"thresholds": {"0.6": {"proxy": 0.2}, "0.8": {"proxy": 0.1}}, "rows": 99})
    _png(root / "plots/sensitivity/proxy_vs_model.png", "sensitivity")
    _write(root / "dvc.lock", yaml.safe_dump({"schema": "2.0", "stages": {
        "stamps": {"cmd": "x", "outs": [{"path": "data/cache", "hash": "md5", "md5": "abc123.dir", "size": 10, "nfiles": 2}]},
        "report": {"cmd": "y", "outs": [{"path": "plots/report/index.html", "md5": "oldreport", "size": 1}]}}}))
    return root


def _render(root: Path, cache: Path | None) -> tuple[str, dict]:
    out = root / "plots/report/index.html"
    status = report_stage.run(str(root / "params.yaml"), str(root), str(out), str(cache) if cache else None,
                               summary=str(root / "summary.json"))
    return out.read_text(), status


def _section(html: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}".*?</section>', html, re.S)
    assert m, f"section {sid} missing"
    return m.group(0)


@pytest.fixture(scope="module")
def rendered(world, sim_cache) -> tuple[Path, str, dict]:
    html, status = _render(world, sim_cache)
    return world, html, status


# ----------------------------------------------------------------------------- numbers


def test_headline_numbers_are_the_stages_own_with_their_source(rendered):
    """The report computes no headline number: AUROC, TPR, completeness at theta_E/PSF >= 1 and
    the threshold counts are those of metrics/completeness/<arch>.json, named on the page, even
    where the score tables would give others."""
    root, html, _ = rendered
    head = _section(html, "headline")
    assert "0.97" in head and "10/17" in head and "5/9" in head and "0/16 controls above" in head
    assert "16 / 17" in head and "low count" in head
    assert "metrics/completeness/small_cnn.json" in head
    assert "not run: completeness@resnet18 (metrics/completeness/resnet18.json not found)" in head
    assert "0.0234" in head and "test.ece_after" in head and "metrics/calibration/small_cnn.json" in head
    assert "not run: calibration@resnet18" in head
    assert head.count("badge fail") == 1 and "badge unknown" in head
    roc = _section(html, "roc")
    assert "plots/roc/small_cnn.csv" in roc and "metrics/completeness/small_cnn.json" in roc and "10/17" in roc
    assert "not run: completeness@resnet18" in roc


def test_selection_section_shows_the_stage_numbers_and_what_has_not_run(rendered):
    _, html, status = rendered
    sel = _section(html, "selection")
    assert "0.936 of 63 bins" in sel and "p = 0.342" in sel and "0.1 [0.09, 0.111]" in sel and "0.0941 [0.08, 0.11]" in sel
    assert "metrics/selection/small_cnn.json" in sel and "plots/selection/small_cnn/theta_e_over_psf.png" in sel
    assert "not run: selection@resnet18" in sel and "reads 0.834 here" in sel
    # the closure table: Wilson first, then the model overall before its operating points
    assert sel.index("wilson") < sel.index(">model<") < sel.index("model at fpr_0.01") and "0.735" in sel and "[0.914, 0.99]" in sel
    assert status["selection"] == "partial"


# ----------------------------------------------------------------------------- page content

def test_page_is_self_contained_and_every_section_says_something(rendered):
    root, html, status = rendered
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    assert not re.search(r'(?:src|href)="(?!data:image/png;base64,|#)', html), "external or relative reference in the page"
    assert "<link" not in html and "@import" not in html
    assert "Fixture &lt;report&gt; &amp; co" in html          # the title is escaped
    for sid in SECTION_IDS:
        body = re.sub(r"<h2>.*?</h2>", "", _section(html, sid), flags=re.S)
        assert re.sub(r"<[^>]+>", "", body).strip(), f"section {sid} is empty"
    assert set(status) == set(SECTION_IDS)
    # every embedded image is a real, decodable PNG
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) >= 9
    for u in uris:
        im = Image.open(io.BytesIO(base64.b64decode(u)))
        im.load()
        assert im.size[0] > 50 and im.size[1] > 30


def test_sections_show_what_each_stage_wrote_and_name_what_did_not_run(rendered):
    _, html, status = rendered
    banner = re.search(r'<div class="gatebar".*?</div></div>', html, re.S).group(0)
    assert "small_cnn" in banner and "FAIL" in banner and "core_only_auc: 0.93 against threshold 0.7" in banner
    assert 'href="#gates"' in banner  # the verdict links to what the gate checks
    assert "not run: metrics/gates/resnet18.json not found" in banner
    assert html.index("gate-banner") < html.index('<section id="headline"')       # gates first, prominently
    head = _section(html, "headline")
    # what the numbers are measured on, and both intervals of the headline completeness
    assert "Data: SIMULATED survey" in head and "population physical" in head
    assert "0.59 [0.36, 0.78]" in head and "region bootstrap [0.412, 0.733]" in head
    comp = _section(html, "completeness")
    assert "redrawn from plots/completeness/small_cnn/theta_e_arcsec.csv" in comp
    assert comp.index("theta_e_arcsec.csv") < comp.index("theta_e_over_psf.csv")
    assert "not run: completeness@resnet18 (metrics/completeness/resnet18.json not found)" in comp
    # every arch on shared axes at the plot threshold, and tables for reading, not dumps of the files
    assert "every arch on the same axes at FPR 1% (fpr_0.01, completeness.plot_fpr)" in comp and 'alt="completeness of every arch at fpr_0.01"' in comp
    assert "{&#x27;" not in html and "{'" not in html, "a Python dict repr on the page"
    assert "redrawn from plots/completeness/small_cnn/theta_e_arcsec__x__psf_r_arcsec.csv" in _section(html, "surface")
    assert "not run: calibration@resnet18" in _section(html, "calibration")
    assert "plots/calibration/small_cnn.png" in _section(html, "calibration")
    gates = _section(html, "gates")
    assert "core_only_auc" in gates and "not run: gates@resnet18" in gates and "0.51" in gates
    known = _section(html, "known_lenses")
    assert "offline" in known and "not run: known_lenses@resnet18" in known
    assert "plots/sensitivity/proxy_vs_model.png" in _section(html, "sensitivity")
    acc = _section(html, "accounting")
    assert "nan_pixels" in acc and ">132<" in acc and "yes" in acc
    train = _section(html, "training")
    assert "dvclive/small_cnn/plots/metrics/" in train and "resnet18: metrics/train/resnet18.json history" in train
    assert ">4322<" in train and ">14.1<" in train and "6.2%" in train and "NVIDIA H200" in train   # the timing file, as written
    assert train.count("not recorded") == 1 and "metrics/train/small_cnn.throughput.json" in train   # resnet18 has none
    prov = _section(html, "provenance")
    assert "abc123.dir" in prov and "oldreport" not in prov and "not a git checkout" in prov
    assert "sha256" in prov and "gallery_theta_bins" in prov
    gal = _section(html, "galleries")
    assert gal.count("<img") == 3 and "small_cnn, resnet18, in that order" in gal
    assert status["completeness"] == "partial" and status["galleries"] == "ok"


def test_visible_arcs_gallery_splits_discoverable_injections_at_the_plot_threshold(rendered):
    """The counts under the "visible arcs" gallery are the test injections LensPop calls
    discoverable on either side of the plot threshold of metrics/completeness (score 0.9 here)."""
    root, html, _ = rendered
    sc = pd.read_parquet(root / "data/scores/small_cnn.parquet")
    vis = sc[(sc["split"] == "test") & (sc["label"] == 1) & (sc["discoverable"] == 1)]
    found = int((vis["score"] > 0.9).sum())
    assert 0 < found < len(vis), "the fixture should have discoverable injections on both sides of the threshold"
    gal = _section(html, "galleries")
    assert (f"LensPop-discoverable injections (integrated S/N &gt; 20, resolved, magnified) at fpr_0.01 (score &gt; 0.9000): "
            f"small_cnn misses {len(vis) - found} and finds {found} of {len(vis)}") in gal
    assert "preprocess: annulus_common, host removal on" in gal
    assert 'alt="visible arcs small_cnn misses and finds at fpr_0.01"' in gal


def test_the_arc_alone_is_the_arc_inside_the_cached_stamp(world, sim_cache, tmp_path):
    """The gallery's noise-free arcs are rendered again from the simulated survey's rows: each holds
    the r-band flux the stamps stage recorded for that stamp's arc, and the gallery draws them."""
    from dhs.report import sections
    from dhs.report.context import Context, ReportConfig
    from dhs.report.sources import Inputs

    root = tmp_path / "w"
    shutil.copytree(world, root)
    ctx = Context(ReportConfig.from_params(load_params(root / "params.yaml")), Inputs(root, sim_cache), str(root / "params.yaml")).load()
    meta = open_split(sim_cache, "test").meta
    inj = meta[(meta["is_control"] == 0) & (meta["total_injected_flux_r"] > 0)].head(4)
    arcs = sections._arcs_alone(ctx, inj["task_id"].tolist())
    assert arcs is not None and len(arcs) == 4
    np.testing.assert_allclose([a[1].sum() for a in arcs], inj["total_injected_flux_r"], rtol=2e-3)
    gal = _section(_render(root, sim_cache)[0], "galleries")
    assert "the injected arc alone (rendered again without host, field or noise" in gal
    # stamps that are not the simulated survey's: no arc to show, and the gallery says nothing of one
    stamps = json.loads((root / "metrics/stamps.json").read_text())
    _write(root / "metrics/stamps.json", {**stamps, "source": "hosts"})
    ctx = Context(ReportConfig.from_params(load_params(root / "params.yaml")), Inputs(root, sim_cache), str(root / "params.yaml")).load()
    assert sections._arcs_alone(ctx, inj["task_id"].tolist()) is None


def test_visible_arcs_gallery_says_why_it_is_not_drawn(world, sim_cache, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(world, root)
    comp = json.loads((root / "metrics/completeness/small_cnn.json").read_text())
    comp["plot_threshold"] = "fpr_0.05"          # a name with no threshold in the file
    (root / "metrics/completeness/small_cnn.json").write_text(json.dumps(comp))
    gal = _section(_render(root, sim_cache)[0], "galleries")
    assert gal.count("<img") == 2
    assert "not drawn: metrics/completeness/small_cnn.json names no plot threshold with a score (plot_threshold: &#x27;fpr_0.05&#x27;)" in gal
    (root / "metrics/completeness/small_cnn.json").unlink()
    gal = _section(_render(root, sim_cache)[0], "galleries")
    assert "not drawn: not run: completeness@small_cnn (metrics/completeness/small_cnn.json not found)" in gal


def test_finder_view_keeps_the_residual_colours_and_refuses_other_shapes():
    from dhs.report.figures import FINDER_VIEW_RANGE, finder_view_rgb

    cube = np.zeros((3, 8, 8))
    cube[0, 2, 3] = 6.0        # g excess only: blue
    cube[2, 5, 5] = 50.0       # z far above the range: saturated red
    cube[:, 0, 0] = -5.0       # below the range: black
    rgb = finder_view_rgb(cube)
    lo, hi = FINDER_VIEW_RANGE
    sky = -lo / (hi - lo)
    assert rgb.shape == (8, 8, 3)
    assert np.allclose(rgb[2, 3], [sky, sky, (6.0 - lo) / (hi - lo)])
    assert np.allclose(rgb[5, 5], [1.0, sky, sky]) and np.allclose(rgb[0, 0], 0.0)
    with pytest.raises(ValueError, match=r"expected a \(3, S, S\) grz cube"):
        finder_view_rgb(np.zeros((8, 8, 3)))


def test_missing_inputs_give_not_run_sections_not_a_crash(tmp_path):
    _params(tmp_path)
    html, status = _render(tmp_path, None)
    for sid in SECTION_IDS:
        assert re.sub(r"<[^>]+>", "", re.sub(r"<h2>.*?</h2>", "", _section(html, sid), flags=re.S)).strip()
    assert "not run: infer@small_cnn (data/scores/small_cnn.parquet not found)" in html
    assert "not run: stamps (metrics/stamps.json not found)" in _section(html, "accounting")
    assert "not run: sensitivity (metrics/sensitivity.json not found)" in html
    assert "<img" not in html
    assert all(v == "notrun" for k, v in status.items() if k != "provenance")


def test_broken_inputs_are_reported_in_their_section(tmp_path, sim_cache):
    _params(tmp_path)
    _write(tmp_path / "metrics/gates/small_cnn.json", "{not json")
    _write(tmp_path / "metrics/stamps.json", {"by_split_label": {}, "rows_read": 10, "rows_used": 7, "rows_rejected": 1,
                                              "region_disjoint": False})
    (tmp_path / "data/scores").mkdir(parents=True)
    bad = _scores(sim_cache, 0)
    pd.concat([bad, bad.iloc[:2]]).to_parquet(tmp_path / "data/scores/small_cnn.parquet")   # duplicated task_ids
    _scores(sim_cache, 1).query("split == 'val'").to_parquet(tmp_path / "data/scores/resnet18.parquet")
    _write(tmp_path / "plots/completeness/small_cnn/theta_e_arcsec.png", "not a png")
    html, status = _render(tmp_path, sim_cache)
    assert "metrics/gates/small_cnn.json is not readable JSON" in _section(html, "gates")
    assert "rows share a task_id" in _section(html, "galleries")
    assert "holds no &#x27;test&#x27; rows" in _section(html, "galleries")
    acc = _section(html, "accounting")
    assert "some rows were dropped without a reason" in acc and "region_disjoint is false" in acc
    assert status["accounting"] == "error"
    assert "is not a PNG" in _section(html, "completeness")


def test_report_params_are_validated_with_messages_that_say_what_to_fix(tmp_path):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    assert ReportConfig.from_params(base).archs == tuple(base["finders"]["measure"])
    assert ReportConfig.from_params(base).split == base["completeness"]["eval_split"]
    for name, bad, msg in [("evaluation", {"fprs": [0.01, 2]}, "evaluation.fprs"), ("report", {"gallery_n": 0}, "report.gallery_n"),
                           ("completeness", {**base["completeness"], "eval_split": "train"}, "completeness.eval_split"),
                           ("report", {"archs": "small_cnn"}, "report.archs"), ("report", {"archs": ["../x"]}, "may hold only"),
                           ("report", {"colour": 1}, "unknown keys")]:
        p = copy.deepcopy(base)
        p[name] = bad
        with pytest.raises(ParamsError, match=re.escape(msg)):
            ReportConfig.from_params(p)


def test_summaries_show_intervals_counts_and_thresholds_not_dicts():
    from dhs.report import summaries

    doc = {"auroc": 0.9, "plot_threshold": "fpr_0.01",
           "headline": {"fpr_0.01": {"overall": {"all": {"k": 3, "n": 4, "completeness": 0.75, "wilson_lo": 0.3, "wilson_hi": 0.95,
                                                         "boot_lo": 0.5, "boot_hi": 0.9},
                                                 "clean": {"k": 2, "n": 3, "completeness": 2 / 3, "wilson_lo": 0.2, "wilson_hi": 0.94}}}},
           "thresholds": [{"name": "fpr_0.01", "score": 0.91, "n_controls": 300, "n_controls_above": 3, "low_count": True,
                           "uncertainty": {"score_loose": 0.88, "score_strict": 0.95, "completeness_range": [0.5, 0.8]}}]}
    out = summaries.completeness_table(doc)
    assert "0.75 [0.3, 0.95]" in out and "[0.5, 0.9]" in out and "3/4" in out and "2/3" in out
    assert "0.91 [0.88, 0.95]" in out and "3/300" in out and "low count" in out
    assert "{" not in out and "{&#x27;" not in out, "a dict repr leaked into the table"
    gates_html = summaries.gate_table([{"name": "shift", "passed": False, "value": 1.7, "threshold": 1.5,
                                        "detail": "control FPR rose 1.7x after a 1-px shift", "rule": "ratio <= 1.5", "n_controls": 10}])
    assert "control FPR rose 1.7x" in gates_html and "rule: ratio &lt;= 1.5" in gates_html and "<details>" in gates_html
    with pytest.raises(ValueError, match="empty body"):
        Section("x", "X", "  ").render()


# ----------------------------------------------------------------------------- in a real browser

def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _browse(html_path: Path, profile: Path, shot: Path | None = None) -> dict:
    """Load the page in headless Chromium; return its self-check (and take a screenshot)."""
    exe = _chromium()
    base = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--window-size=1400,4000"]
    url = html_path.resolve().as_uri()
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-selfcheck="([^"]*)"', dom.stdout)
    assert m, "the page's self-check did not run (no data-selfcheck on <body>)"
    if shot is not None:
        r = subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-2000:]
    import html as _html

    check = json.loads(_html.unescape(m.group(1)))
    check["dom"] = dom.stdout
    return check


needs_chromium = pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does it)")


@needs_chromium
def test_chromium_loads_every_image_finds_no_empty_section_and_draws_the_page(rendered, tmp_path):
    root, html, _ = rendered
    shot = tmp_path / "report.png"
    check = _browse(root / "plots/report/index.html", tmp_path / "profile", shot)
    assert check["images"] == html.count("<img") >= 9
    assert check["broken"] == [], f"images that did not load: {check['broken']}"
    assert check["sections"] == len(SECTION_IDS) and check["empty"] == []
    assert check["wide_tables"] == [], f"tables wider than their section at 1400 px: {check['wide_tables']}"
    # what a reader must see at a glance, as the browser built it: the data banner, both intervals
    # of the headline, every gate's explanation, every arch's curves on shared axes, no dict dumps
    dom = check["dom"]
    # the first thing under the title is the result, then the gates
    assert dom.index('id="result"') < dom.index('id="gate-banner"') < dom.index("<nav>")
    assert "Data: SIMULATED survey" in dom and "region bootstrap" in dom
    assert "what was measured" in dom and 'alt="completeness of every arch at fpr_0.01"' in dom
    assert "{&#x27;" not in dom and "{'" not in dom
    im = Image.open(shot)
    assert im.size == (1400, 4000)
    px = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert px.std() > 20, "the screenshot is blank"
    # the dark header band and real figure pixels are both there
    assert px[:40].mean() < 100 and (px[200:].reshape(-1, 3).std(axis=0) > 10).all()


@needs_chromium
def test_the_browser_check_itself_catches_a_broken_image_an_empty_section_and_a_wide_table(tmp_path):
    """Guard against a self-check that always passes: a page with one undecodable image, one
    empty section and one table too wide for its section must be reported as such."""
    from dhs.report.html import table

    ok = Section("full", "Full", img(_tiny_png(), "fine"))
    wide = Section("wide", "Wide", table([["x" * 40] * 60], [f"column {i}" for i in range(60)]))
    text = page("t", [], "", [ok, wide, Section("hollow", "Hollow", "<p>x</p>")])
    text = text.replace("<p>x</p>", "")
    text = text.replace("</main>", '<section id="bad"><h2>Bad</h2><div class="body"><img alt="broken" src="data:image/png;base64,AAAA"></div></section></main>')
    p = tmp_path / "page.html"
    p.write_text(text)
    check = _browse(p, tmp_path / "profile")
    assert check["images"] == 2 and check["broken"] == ["broken"]
    assert check["empty"] == ["hollow"]
    assert check["wide_tables"] == ["wide"]


def _tiny_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_an_external_finder_shows_what_was_checked_and_what_its_gates_mean(world, sim_cache, tmp_path):
    """A finder made elsewhere has no training curves: the training section shows its import
    (format, file, hash, shapes) instead of 'not run', the gates section says which gates test the
    data and which the finder, and a score table's known-lens recall says why it is not measured;
    everything read from the files is escaped."""
    root = tmp_path / "w"
    shutil.copytree(world, root)
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["finders"] = {"measure": [*p["finders"]["measure"], "their_net"],
                    "external": {"their_net": {"model": "finders/their_net.csv"}}}
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _write(root / "metrics/external/their_net.json", {"name": "their_net", "format": "scores", "model": "finders/their<net>.csv",
                                                      "model_sha256": "ab" * 32, "rows": 1234})
    _write(root / "metrics/gates/their_net.json", {"external": {"format": "scores", "model": "finders/their<net>.csv"}, "gates": {
        "metadata_only": {"status": "PASS", "passed": True, "value": 0.51, "threshold": 0.6, "detail": "conditions alone"},
        "core_masked": {"status": "SKIP", "passed": False, "value": None, "threshold": None,
                        "detail": "not evaluated: the finder is a score table"}}})
    _write(root / "metrics/known_lenses/their_net.json", {"status": "not_scorable", "recall": None, "cutouts": {"selected": 3}})
    html = _render(root, sim_cache)[0]
    train = _section(html, "training")
    assert "Finders trained elsewhere" in train and "finders/their&lt;net&gt;.csv" in train and "abababababababab" in train
    assert "not run: train@their_net" not in train
    gsec = _section(html, "gates")
    assert "their_net is an external finder (scores, finders/their&lt;net&gt;.csv)" in gsec
    assert "tests the finder: replacing the core by sky noise" in gsec and "tests the data: observing conditions alone" in gsec
    assert "this finder is a score table" in _section(html, "known_lenses")


EVIL = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"


@needs_chromium
def test_values_read_from_metrics_never_become_markup_and_a_wrong_type_is_said_not_a_crash(world, sim_cache, tmp_path):
    """Every value a stage file gives is text on the page: markup planted in numeric fields of the
    completeness, closure, sensitivity, stamps and calibration files stays text (and the page's
    policy runs its own script, by hash, and nothing else); a value of another type (a string for
    a number, a list for an object) leaves its section saying so, and the rest of the page drawn."""
    root = tmp_path / "w"
    shutil.copytree(world, root)
    comp = json.loads((root / "metrics/completeness/small_cnn.json").read_text())
    comp["auroc"] = EVIL
    comp["rows"] = {"controls": EVIL, "injections": EVIL}
    for t in comp.get("thresholds", []):
        t["n_controls_above"] = EVIL
    (root / "metrics/completeness/small_cnn.json").write_text(json.dumps(comp))
    _write(root / "metrics/sensitivity.json", {"snr_min": EVIL, "eval_split": "test", "rows": 1})
    _write(root / "metrics/calibration/resnet18.json", ["not", "an", "object"])
    stamps = json.loads((root / "metrics/stamps.json").read_text())
    stamps["rows_by_split"] = {"train": "many", "test": [1]}
    (root / "metrics/stamps.json").write_text(json.dumps(stamps))
    html, status = _render(root, sim_cache)
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert "metrics/calibration/resnet18.json holds a JSON list, not the object its stage writes" in html
    assert any(v == "error" for v in status.values()) and status["provenance"] == "ok"
    assert "this section could not be drawn: ValueError: could not convert string to float" in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "script-src 'sha256-" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    check = _browse(root / "plots/report/index.html", tmp_path / "profile")   # the page's own script still runs
    body_tag = re.search(r"<body[^>]*>", check["dom"]).group(0)
    assert "data-selfcheck" in body_tag and "data-pwned" not in body_tag and check["sections"] == len(SECTION_IDS)


def test_the_page_opens_with_the_result_sentence_then_the_gates(world, sim_cache, tmp_path):
    """First on the page, per finder: what it is, the sky-weighted completeness of all and of
    discoverable lenses at the plot operating point with their bootstrap intervals and n_eff, and
    the purity they imply at the survey prevalence; a degenerate calibration or an uninformative
    finder said before any number; a real-hosts run named as simulated arcs on real hosts."""
    root = tmp_path / "w"
    shutil.copytree(world, root)
    comp = json.loads((root / "metrics/completeness/small_cnn.json").read_text())
    comp["threshold_by_name"] = {"fpr_0.01": {"score": 0.8963, "achieved_fpr": 0.00997, "n_controls": 22156}}
    comp["sky"] = {"fpr_0.01": {"all": {"completeness": 0.0910, "boot_lo": 0.081, "boot_hi": 0.102, "n": 4413, "n_eff": 2123.6},
                                "discoverable": {"completeness": 0.4519, "boot_lo": 0.4014, "boot_hi": 0.5094, "n": 552, "n_eff": 229.9}},
                   "discoverable_fraction": {"completeness": 0.0599}}
    _write(root / "metrics/completeness/small_cnn.json", comp)
    train = json.loads((root / "metrics/train/small_cnn.json").read_text())
    train.update(n_parameters=138401, steps=1500, batch_size=128, device="cpu", data="cache", n_train=17863, completed=True)
    _write(root / "metrics/train/small_cnn.json", train)
    html, _ = _render(root, sim_cache)
    top = html[html.index('id="result"'):html.index("<nav>")]
    assert html.index('id="result"') < html.index('id="gate-banner"') < html.index("<nav>")
    text = re.sub(r"<[^>]+>", "", top)
    assert "small_cnn: 0.14 M parameters, 6-channel" in text and "1,500 steps of batch 128 on cpu" in text
    assert "At FPR 1%" in text and "9.1 % [8.1 %, 10.2 %]" in text and "n = 4413, neff = 2,124" in text
    assert "45.2 % [40.1 %, 50.9 %] of LensPop-discoverable lenses (6.0 % of them)" in text
    prevalence = yaml.safe_load((root / "params.yaml").read_text())["calibration"]["survey_prevalence"]
    purity = 0.0910 * prevalence / (0.0910 * prevalence + 0.00997 * (1 - prevalence))
    assert f"purity of {100 * purity:.1f} %" in text
    assert "resnet18: no result yet (completeness@resnet18 has not run)" in text
    assert "\u26a0" not in text                       # nothing makes these numbers unreadable

    # a degenerate calibration and an uninformative finder are said in the result, before the numbers' use
    comp["auroc"] = 0.52
    _write(root / "metrics/completeness/small_cnn.json", comp)
    cal = json.loads((root / "metrics/calibration/small_cnn.json").read_text())
    cal.update(status="degenerate", cause="the finder's val logits carry (almost) no information about the label (AUROC 0.512)")
    _write(root / "metrics/calibration/small_cnn.json", cal)
    stamps = json.loads((root / "metrics/stamps.json").read_text())
    _write(root / "metrics/stamps.json", {**stamps, "source": "hosts"})
    html, _ = _render(root, sim_cache)
    text = unescape(re.sub(r"<[^>]+>", "", html[html.index('id="result"'):html.index("<nav>")]))
    assert "calibration: the finder's val logits carry (almost) no information" in text
    assert "barely tells injections from controls (test AUROC 0.520)" in text
    assert "of simulated arcs on real host cutouts, as on the sky" in text
    assert "REAL host cutouts" in _section(html, "headline") and "SIMULATED arcs" in _section(html, "headline")


def test_the_training_curves_carry_the_auroc_the_finder_is_trained_on_beside_the_all_injection_one(world, sim_cache):
    """The figure and the table agree: where the finder trains on a selection of the injections
    (visible arcs), the curves include the AUROC on that selection (what the table reports) and the
    one over every injection, each named in the legend."""
    from dhs.report import sections
    from dhs.report.context import Context, ReportConfig
    from dhs.report.sources import Inputs

    ctx = Context(ReportConfig.from_params(load_params(world / "params.yaml")), Inputs(world, sim_cache), str(world / "params.yaml"))
    curves, src = sections._curves(ctx, "small_cnn")
    assert curves["val_auc_selected"] == ([10, 20, 30], [0.95, 0.97, 0.98]) and curves["val_auc"][1] == [0.85, 0.9, 0.93]
    assert src == "dvclive/small_cnn/plots/metrics/"

