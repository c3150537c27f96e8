"""Stage selection@{arch} end to end on an analytic finder's score table: the completeness stage
sets the thresholds (Spark), the selection stage fits, validates and writes the file, the
metrics with every row accounted for, and the plots; bad tables are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from dhs.selection.closure import analytic_score_table
from dhs.selection.function import SelectionFunction
from tests.conftest import REPO

BINS = {"theta_e_arcsec": [0.2, 0.75, 1.25, 2.0, 3.5], "psf_r_arcsec": [0.8, 1.1, 1.3, 1.6], "src_r_mag": [20.0, 24.0, 25.0, 26.0, 27.0]}


def _params(tmp_path):
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["completeness"].update(n_bootstrap=100, bins=BINS, surface={"x": "theta_e_arcsec", "y": "psf_r_arcsec"}, discoverable_bins=[],
                             spark={"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g"})
    p["sensitivity"]["variables"] = ["theta_e_arcsec"]
    p["selection"].update(n_replicates=12, n_draws=100, min_bin_n=20)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path, p


def _run(tmp_path, scores: pd.DataFrame, arch="m"):
    from stages import completeness, selection

    params, p = _params(tmp_path)
    (tmp_path / "scores").mkdir(exist_ok=True)
    scores.to_parquet(tmp_path / "scores" / f"{arch}.parquet", index=False)
    common = ["--arch", arch, "--params", str(params), "--scores", str(tmp_path / "scores")]
    assert completeness.main(common + ["--metrics", str(tmp_path / "cm"), "--plots", str(tmp_path / "cp")]) == 0
    rc = selection.main(common + ["--completeness", str(tmp_path / "cm"), "--models", str(tmp_path / "models"),
                                  "--out", str(tmp_path / "sel"), "--metrics", str(tmp_path / "sm"), "--plots", str(tmp_path / "sp")])
    return rc, p


@pytest.mark.slow
def test_stage_writes_a_validated_file_and_accounts_for_every_row(small_population, tmp_path):
    scores = analytic_score_table(small_population, seed=5)
    inj = scores["label"] == 1
    bad = scores.index[inj & (scores["split"] == "test")][:7]
    scores.loc[bad, "src_reff_arcsec"] = np.nan           # injections without a source size: rejected, counted
    rc, p = _run(tmp_path, scores)
    assert rc == 0
    m = json.loads((tmp_path / "sm" / "m.json").read_text())
    r = m["rows"]
    test = scores[scores["split"] == "test"]
    assert r["read"] == len(scores) and r["other_split"] == int((scores["split"] != "test").sum())
    assert r["controls"] == int((test["label"] == 0).sum()) and r["injections"] == int((test["label"] == 1).sum())
    assert r["injections_rejected"] == {"src_reff_arcsec_not_finite": 7}
    assert r["fit"] + r["held_out"] + 7 == r["injections"]
    assert r["held_out"] > 0 and r["fit_regions"] > r["held_out_regions"] > 0
    sf = SelectionFunction.load(tmp_path / "sel" / "m.json")
    assert sf.operating_points == [f"fpr_{f:g}" for f in p["evaluation"]["fprs"]] and sf.name == "fpr_0.01"
    cm = json.loads((tmp_path / "cm" / "m.json").read_text())
    assert sf.threshold == cm["threshold_by_name"]["fpr_0.01"]["score"]          # the completeness stage's threshold
    assert sf.doc["measured_on"]["split"] == "test" and sf.doc["code"]["dhs_selection_sha256"]
    # the analytic finder is inside the model's class: held-out bins agree with the model
    for name, v in m["validation"].items():
        assert v["n_bins_counted"] >= 20, name
        assert v["fraction_inside_predictive"] >= 0.75, (name, v["fraction_inside_predictive"])
    # the model beside the binned completeness, for every binned variable, and the headline
    for var in BINS:
        csv = pd.read_csv(tmp_path / "sp" / "m" / f"{var}.csv")
        assert set(csv["threshold"]) == set(sf.operating_points) and csv["primary"].sum() == (csv["threshold"] == "fpr_0.01").sum()
        assert ((csv["model_lo"] <= csv["model"] + 1e-12) & (csv["model"] <= csv["model_hi"] + 1e-12)).all()
        assert (tmp_path / "sp" / "m" / f"{var}.png").stat().st_size > 1000
    h = json.loads((tmp_path / "sm" / "m.headline.json").read_text())
    assert set(h) == {"fpr_0.1", "fpr_0.01", "fpr_0.001"}
    assert h["fpr_0.01"]["heldout_inside_band"] == round(m["validation"]["fpr_0.01"]["fraction_inside_predictive"], 4)
    s = m["sky"]["fpr_0.01"]
    assert s["model_lo"] <= s["model"] <= s["model_hi"] and h["fpr_0.01"]["sky_model"] == round(s["model"], 4)
    assert abs(s["model"] - s["binned"]["completeness"]) < 0.05
    # deterministic given its seed: a second run writes the same bytes
    from stages import selection

    first = {f: (tmp_path / f).read_bytes() for f in ("sel/m.json", "sm/m.json", "sp/m/theta_e_arcsec.csv")}
    assert selection.main(["--arch", "m", "--params", str(tmp_path / "params.yaml"), "--scores", str(tmp_path / "scores"),
                           "--completeness", str(tmp_path / "cm"), "--models", str(tmp_path / "models"), "--out", str(tmp_path / "sel"),
                           "--metrics", str(tmp_path / "sm"), "--plots", str(tmp_path / "sp")]) == 0
    assert all((tmp_path / f).read_bytes() == b for f, b in first.items())


@pytest.mark.slow
def test_missing_input_column_is_named(small_population, tmp_path, capsys):
    scores = analytic_score_table(small_population, seed=6).drop(columns=["magnification"])
    rc, _ = _run(tmp_path, scores)
    assert rc == 2
    assert "magnification" in capsys.readouterr().err


def test_rows_without_a_region_are_refused_by_name(small_population, tmp_path, capsys):
    from stages import selection

    params, _ = _params(tmp_path)
    scores = analytic_score_table(small_population, seed=7)
    scores["region_id"] = scores["region_id"].astype("Int64")
    scores.loc[scores.index[scores["split"] == "test"][:3], "region_id"] = pd.NA
    (tmp_path / "scores").mkdir()
    scores.to_parquet(tmp_path / "scores" / "m.parquet", index=False)
    rc = selection.main(["--arch", "m", "--params", str(params), "--scores", str(tmp_path / "scores"), "--completeness", str(tmp_path / "cm"),
                         "--out", str(tmp_path / "sel"), "--metrics", str(tmp_path / "sm"), "--plots", str(tmp_path / "sp")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "m.parquet: 3 row(s) of split test without a region_id" in err
    assert not (tmp_path / "sel" / "m.json").exists()
