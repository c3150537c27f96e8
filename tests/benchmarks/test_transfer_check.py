"""benchmarks/transfer_check.py: the independent lenstronomy set is rendered where it says (pixel
convention, fluxes, noise), its two render paths agree, and the whole check runs end to end
through the real-data path on a tiny finder trained here, deterministically, without writing
into the project's data/, metrics/ or plots/."""

from __future__ import annotations

import importlib.util
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO

pytest.importorskip("lenstronomy")

_spec = importlib.util.spec_from_file_location("transfer_check", REPO / "benchmarks" / "transfer_check.py")
tc = importlib.util.module_from_spec(_spec)
sys.modules["transfer_check"] = tc  # the rendering workers' jobs are pickled by module name
_spec.loader.exec_module(tc)


def cfg_for(*argv):
    return tc.render_config(tc.parse_args(["--n", "10", *argv]))


def centroid(img):
    yy, xx = np.indices(img.shape)
    return (img * xx).sum() / img.sum(), (img * yy).sum() / img.sum()


@pytest.mark.parametrize("centre", [32.0, 31.5, 30.25])
def test_host_lands_on_the_requested_pixel(centre):
    """Pixel (32, 32) 0-indexed is the catalogue position; x is the column, y the row. (A compact
    n = 0.5 host, so that the stamp edge does not truncate its wings and bias the centroid.)"""
    cfg = cfg_for("--host-centre-px", str(centre), "--centroid-err-arcsec", "0", "--host-reff", "0.6", "0.6", "--host-n", "0.5", "0.5", "--gain", "0")
    p = tc.draw_stamp(3, True, cfg)
    _, rec, parts = tc.render_stamp(p, cfg)
    cx, cy = centroid(parts["host"][1])
    assert abs(cx - centre) < 0.02 and abs(cy - centre) < 0.02, (cx, cy)
    assert rec["host_dx_arcsec"] == pytest.approx((centre - 32.0) * tc.PIX)
    # a centroid error moves the host by exactly what the columns record
    cfg = cfg_for("--centroid-err-arcsec", "0.3", "--host-reff", "0.6", "0.6", "--host-n", "0.5", "0.5")
    p = tc.draw_stamp(4, True, cfg)
    _, rec, parts = tc.render_stamp(p, cfg)
    cx, cy = centroid(parts["host"][1])
    assert cx == pytest.approx(32 + rec["host_dx_arcsec"] / tc.PIX, abs=0.03)
    assert cy == pytest.approx(32 + rec["host_dy_arcsec"] / tc.PIX, abs=0.03)


@pytest.mark.parametrize("psf", ["moffat", "gaussian"])
def test_shared_and_per_band_lenstronomy_paths_agree_and_fluxes_are_honest(psf):
    cfg = cfg_for("--psf", psf, "--neighbours-mean", "2")
    for i in range(3):
        p = tc.draw_stamp(i, False, cfg)
        a, rec, pa = tc.render_stamp(p, cfg, "shared")
        b, rec_b, pb = tc.render_stamp(p, cfg, "per_band")
        for part in ("host", "arc"):
            np.testing.assert_allclose(pa[part], pb[part], rtol=0, atol=1e-12 * pa[part].max())
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(a).max())
        assert rec.keys() == rec_b.keys() and all(rec[k] == pytest.approx(rec_b[k], rel=1e-9) for k in rec)
        # colours: the arc's band ratios are the source's colours (same morphology, PSF conserves flux)
        f = pa["arc"].sum(axis=(1, 2))
        assert -2.5 * math.log10(f[0] / f[1]) == pytest.approx(p["src_gr"], abs=0.02)
        assert -2.5 * math.log10(f[1] / f[2]) == pytest.approx(p["src_rz"], abs=0.02)
        # magnification from the unlensed flux, never renormalised; the PSF keeps the flux inside the stamp
        assert rec["magnification"] > 1.0
        assert rec["total_injected_flux_r"] == pytest.approx(rec["magnification"] * tc.mag_to_nmgy(p["src_r"]), rel=0.01)
        # arc_snr: the peak pixel of the noise-free r arc over sky and its own shot noise
        arc_r = pa["arc"][1]
        want = np.max(arc_r / np.sqrt(pa["sigma"][1] ** 2 + np.clip(arc_r, 0, None) / cfg["gain"]))
        assert rec["arc_snr"] == pytest.approx(want)


def test_blank_sky_noise_follows_the_depth_formula():
    cfg = cfg_for("--gain", "0")
    p = tc.draw_stamp(7, True, cfg)
    p["host_r"] = 60.0  # no host
    imgs = []
    for k in range(12):
        p["index"] = 500 + k
        img, rec, parts = tc.render_stamp(p, cfg)
        imgs.append(img)
    sd = np.std(np.array(imgs), axis=(0, 2, 3))
    for b, band in enumerate("grz"):
        s = rec[f"psf_fwhm_used_{band}"] / 2.3548 / 0.262
        want = 10 ** (-0.4 * (rec[f"psfdepth_{band}"] - 22.5)) / (5 * math.sqrt(4 * math.pi * s * s))
        assert rec[f"sky_sigma_{band}_nmgy"] == pytest.approx(want)
        assert sd[b] == pytest.approx(want, rel=0.03)


@pytest.fixture(scope="module")
def tiny_project(sim_cache, tmp_path_factory):
    """A project root with a small_cnn trained for a few steps on the simulated cache, its
    thresholds set on its own test controls, and its score table: what `dvc repro` leaves."""
    from dhs import atomic
    from dhs.imaging.cache import open_split
    from dhs.models.checkpoint import load_trained
    from dhs.models.inference import score_split
    from dhs.models.loader import NormConfig
    from dhs.evaluation.scores import score_table
    from dhs.evaluation.thresholds import threshold_at_fpr
    from dhs.finder.training import TrainConfig, train
    from sklearn.metrics import roc_auc_score

    root = tmp_path_factory.mktemp("project")
    cfg = TrainConfig.from_params({"epochs": 1, "steps_per_epoch": 6, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2,
                                   "eval_batch_size": 64, "device": "cpu"}, "small_cnn")
    norm = NormConfig.from_params(dict(radial_profile_subtract=True))
    train(cfg, sim_cache, root / "data" / "models" / "small_cnn", norm, augment=False, progress=False)
    tm = load_trained(root / "data" / "models" / "small_cnn", "cpu")
    scores = pd.concat([score_table(s, open_split(sim_cache, s).meta, score_split(tm, open_split(sim_cache, s), progress=False))
                        for s in ("val", "test")], ignore_index=True)
    (root / "data" / "scores").mkdir(parents=True)
    scores.to_parquet(root / "data" / "scores" / "small_cnn.parquet", index=False)
    test = scores[scores["split"] == "test"]
    thresholds = []
    for fpr in (0.1, 0.01, 0.001):
        t = threshold_at_fpr(test.loc[test["label"] == 0, "score"], fpr)
        thresholds.append({**t.as_dict(), "name": f"fpr_{fpr:g}"})
    atomic.write_json(root / "metrics" / "completeness" / "small_cnn.json",
                      {"arch": "small_cnn", "eval_split": "test", "thresholds": thresholds,
                       "auroc": float(roc_auc_score(test["label"], test["score"])), "headline": {}})
    (root / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (root / "data" / "cache").symlink_to(sim_cache, target_is_directory=True)  # the cache its scores came from
    return root


def tree_state(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_end_to_end_through_the_real_data_path(tiny_project, tmp_path, capsys):
    before = tree_state(tiny_project)
    args = ["--project-root", str(tiny_project), "--n", "40", "--n-regions", "6", "--seed", "5"]
    assert tc.main([*args, "--out", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    assert "Control FPR at the shipped thresholds" in printed and "AUROC" in printed
    assert tree_state(tiny_project) == before  # nothing written into the project
    res = json.loads((tmp_path / "a.json").read_text())
    m = res["real_data_path"]["metrics"]
    assert (m["rows_read"], m["rows_used"], m["rows_rejected"]) == (40, 40, 0)
    assert m["region_disjoint"] and m["host_disjoint"]
    assert sum(res["real_data_path"]["cache_rows_by_split"].values()) == 40
    assert (res["set"]["n_scored"], res["set"]["n_controls"], res["set"]["n_injections"]) == (40, 20, 20)
    assert not res["project"]["score_table_mismatch"]
    check = res["project"]["checkpoint_check"]  # the checkpoint rescored on the project's own test stamps
    assert check["checked"] > 0 and "mismatch" not in check and check["max_abs_logit_diff"] < 1e-4
    for t in res["fpr"]:
        assert t["n"] == 20 and t["fpr"] == t["k"] / 20
        assert t["wilson_lo"] <= t["fpr"] <= t["wilson_hi"]
        assert t["ratio_to_nominal"] == pytest.approx(t["fpr"] / t["nominal_fpr"])
        comp = res["completeness"][t["name"]]
        assert sum(r["n"] for r in comp["by_arc_snr"]) == 20
        assert sum(r["k"] for r in comp["by_arc_snr"]) == comp["overall"]["k"]
        # the project's own figures, recomputed from its score table, have its test injections in them
        assert sum(r["n"] for r in res["project"]["by_threshold"][t["name"]]) > 0
    assert 0.0 <= res["auroc"]["transfer"] <= 1.0

    # deterministic, and independent of the number of rendering processes
    assert tc.main([*args, "--workers", "2", "--quiet", "--out", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["fpr"] == res["fpr"] and b["completeness"] == res["completeness"] and b["auroc"]["transfer"] == res["auroc"]["transfer"]


def test_an_evaluation_only_set_is_cached_and_scored_as_it_is(tiny_project, tmp_path):
    # a one-split (test-only) set: the real-data path caches the split it has and scores it
    rc = tc.main(["--project-root", str(tiny_project), "--n", "8", "--split-fractions", "test=1", "--quiet",
                  "--out", str(tmp_path / "a.json")])
    assert rc == 0
    res = json.loads((tmp_path / "a.json").read_text())
    assert res["real_data_path"]["cache_rows_by_split"] == {"test": 8} and res["set"]["n_scored"] == 8


def test_a_refusal_by_the_real_data_path_is_reported_with_the_function_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(tc.TransferError, match=r"dhs.staging.stage refused the set: .*holds no files"):
        tc.stage_real_data(tmp_path / "empty", tmp_path / "work", 0.05, "float16", 1)


def test_refuses_to_write_into_the_project(tiny_project, tmp_path):
    rc = tc.main(["--project-root", str(tiny_project), "--n", "8", "--quiet", "--workdir", str(tiny_project / "data" / "x")])
    assert rc == 2 and not (tiny_project / "data" / "x").exists()
    assert tc.main(["--project-root", str(tiny_project), "--n", "8", "--quiet", "--out", str(tiny_project / "metrics" / "x.json")]) == 2
    assert not (tiny_project / "metrics" / "x.json").exists()


def test_a_checkpoint_other_than_the_scored_one_is_named(tiny_project, tmp_path, sim_cache, capsys):
    # the thresholds belong to the checkpoint that wrote the score table; a retrained checkpoint in
    # its place (same file name, any file time) is caught by rescoring the project's test stamps
    import shutil
    from dhs.models.loader import NormConfig
    from dhs.finder.training import TrainConfig, train

    root = tmp_path / "project"
    shutil.copytree(tiny_project, root, symlinks=True)
    ok = tc.checkpoint_against_scores(root, "small_cnn", root / "data" / "models" / "small_cnn", "test", "cpu")
    assert ok["checked"] > 0 and "mismatch" not in ok
    cfg = TrainConfig.from_params({"epochs": 1, "steps_per_epoch": 3, "batch_size": 16, "lr": 3e-3, "warmup_steps": 1,
                                   "eval_batch_size": 64, "device": "cpu", "seed": 7}, "small_cnn")
    shutil.rmtree(root / "data" / "models" / "small_cnn")
    train(cfg, sim_cache, root / "data" / "models" / "small_cnn", NormConfig.from_params(dict(radial_profile_subtract=True)), augment=False, progress=False)
    bad = tc.checkpoint_against_scores(root, "small_cnn", root / "data" / "models" / "small_cnn", "test", "cpu")
    assert bad["max_abs_logit_diff"] > 1e-3 and "another checkpoint" in bad["mismatch"]
    assert tc.main(["--project-root", str(root), "--n", "8", "--split-fractions", "test=1", "--quiet",
                    "--out", str(tmp_path / "a.json")]) == 0
    res = json.loads((tmp_path / "a.json").read_text())
    assert "another checkpoint" in res["project"]["checkpoint_check"]["mismatch"]
    # without the project's cache nothing is claimed either way
    (root / "data" / "cache").unlink()
    none = tc.checkpoint_against_scores(root, "small_cnn", root / "data" / "models" / "small_cnn", "test", "cpu")
    assert none["checked"] == 0 and "not compared" in none["note"] and "mismatch" not in none
