"""Completeness: Wilson intervals, thresholds, the Spark count table against a pandas reference,
region-bootstrap coverage, the stage end to end, and refusal of bad score tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from dhs.measurement.counts import (MISSING, OUT_OF_RANGE, BinSpec, CompletenessError, Criterion, region_bin_counts_pandas,
                              region_bin_counts_spark, completeness_intervals)
from dhs.measurement.measure import CompletenessConfig, measure
from dhs.evaluation.thresholds import threshold_at_fpr
from dhs.params import ParamsError
from tests.conftest import REPO


def random_scores(n: int, seed: int, null_frac: float = 0.05) -> pd.DataFrame:
    """A score table with NULLs and NaNs in binning and quality columns."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.5).astype(np.int8)
    theta = rng.uniform(0.3, 2.7, n)  # some outside the 0.5-2.5 edges
    psf = rng.uniform(0.8, 1.6, n)
    df = pd.DataFrame({
        "task_id": [f"t{i:07d}" for i in range(n)], "split": np.where(rng.random(n) < 0.8, "test", "val"), "label": label,
        "score": np.clip(rng.normal(0.3 + 0.4 * label, 0.2), 0, 1), "region_id": rng.integers(0, 25, n),
        "theta_e_arcsec": theta, "psf_r_arcsec": psf, "theta_e_over_psf": theta / psf,
        "arc_snr": rng.lognormal(3, 1, n), "bad_pixel_frac": rng.uniform(0, 0.4, n), "wise_brightmask_frac": rng.uniform(0, 0.3, n),
    })
    df["logit"] = np.log(np.clip(df["score"], 1e-6, 1 - 1e-6) / (1 - np.clip(df["score"], 1e-6, 1 - 1e-6)))
    for col in ("theta_e_arcsec", "psf_r_arcsec", "arc_snr", "bad_pixel_frac", "wise_brightmask_frac", "theta_e_over_psf"):
        m = rng.random(n) < null_frac
        df[col] = df[col].astype("Float64")
        df.loc[m & (rng.random(n) < 0.5), col] = pd.NA   # NULL in parquet
        df.loc[m & (rng.random(n) >= 0.5), col] = np.nan  # NaN in parquet
    return df


BINS = [BinSpec("theta_e_arcsec", "theta_e_arcsec", (0.5, 1.0, 1.5, 2.0, 2.5)),
        BinSpec("psf_r_arcsec", "psf_r_arcsec", (0.8, 1.2, 1.6)),
        BinSpec("arc_snr", "arc_snr", (0.0, 10.0, 40.0, np.inf))]


def test_spark_counts_equal_pandas_reference_with_nulls(spark, tmp_path):
    df = random_scores(4000, seed=1)
    path = tmp_path / "s.parquet"
    df.to_parquet(path, index=False)
    inj_pd = df[(df["label"] == 1)]
    inj_sp = spark.read.parquet(str(path)).where("label = 1")
    crits = [Criterion("fpr_0.01", "score", 0.71), Criterion("s", "score", 0.5), Criterion("proxy_0.8", "proxy", 0.8, snr_min=5.0)]
    surf = [(BINS[0], BINS[1])]
    a = region_bin_counts_spark(inj_sp, BINS, crits, (0.2, 0.2), surf)
    b = region_bin_counts_pandas(inj_pd, BINS, crits, (0.2, 0.2), surf)
    pd.testing.assert_frame_equal(a[sorted(a.columns)], b[sorted(b.columns)], check_dtype=False)
    # NULL and NaN rows are counted as missing, outside the edges as out of range, never dropped
    th = a[a["var"] == "theta_e_arcsec"]
    assert th["n"].sum() == len(inj_pd)
    n_missing = int(inj_pd["theta_e_arcsec"].isna().sum())
    assert th.loc[th["bin"] == MISSING, "n"].sum() == n_missing > 0
    v = inj_pd["theta_e_arcsec"].astype(float)
    assert th.loc[th["bin"] == OUT_OF_RANGE, "n"].sum() == int(((v < 0.5) | (v > 2.5)).sum()) > 0
    # a NULL quality column makes the row not clean (a cast of NULL would have dropped it from sum)
    q = inj_pd[["bad_pixel_frac", "wise_brightmask_frac"]].astype(float)
    clean = ((q["bad_pixel_frac"] <= 0.2) & (q["wise_brightmask_frac"] <= 0.2)).sum()
    assert th["n_clean"].sum() == clean


def test_completeness_matches_direct_count(spark, tmp_path):
    df = random_scores(3000, seed=2, null_frac=0.0)
    path = tmp_path / "s.parquet"
    df.to_parquet(path, index=False)
    cfg = CompletenessConfig.from_params({"plot_fpr": 0.05, "n_bootstrap": 20, "bins": {"theta_e_arcsec": [0.5, 1.0, 1.5, 2.0, 2.5]}},
                                         evaluation={"fprs": [0.05]})
    res = measure(spark, str(path), cfg)
    test = df[df["split"] == "test"]
    t = threshold_at_fpr(test.loc[test["label"] == 0, "score"], 0.05)
    assert res.thresholds["fpr_0.05"].score == t.score
    inj = test[test["label"] == 1]
    row = res.table[(res.table["var"] == "theta_e_arcsec") & (res.table["subset"] == "all")].set_index("bin")
    for i, (lo, hi) in enumerate(zip([0.5, 1.0, 1.5, 2.0], [1.0, 1.5, 2.0, 2.5])):
        sel = inj[(inj["theta_e_arcsec"] >= lo) & ((inj["theta_e_arcsec"] < hi) if i < 3 else (inj["theta_e_arcsec"] <= hi))]
        assert row.loc[i, "n"] == len(sel)
        assert row.loc[i, "completeness"] == pytest.approx((sel["score"] > t.score).mean(), abs=1e-12)
    assert res.rows["injections"] == len(inj) and res.rows["controls"] == (test["label"] == 0).sum()
    assert res.rows["other_split_rows"] == (df["split"] != "test").sum()


def test_summarise_flags_small_bins():
    table = pd.DataFrame({"var": "x", "bin": [0, 1], "region_id": [1, 1], "n": [10, 60], "n_clean": [10, 60], "k__c": [5, 30], "kc__c": [5, 30]})
    out = completeness_intervals(table, {"x": (0.0, 1.0, 2.0)}, [Criterion("c", "score", 0.5)], n_boot=10)
    allrows = out[out["subset"] == "all"].set_index("bin")
    assert bool(allrows.loc[0, "low_n"]) and not bool(allrows.loc[1, "low_n"])
    assert allrows.loc[1, "completeness"] == 0.5


def test_bad_score_tables_are_refused(spark, tmp_path):
    cfg = CompletenessConfig.from_params({"bins": {"theta_e_arcsec": [0.5, 1.5, 2.5]}, "n_bootstrap": 5})
    df = random_scores(500, seed=4, null_frac=0.0)
    dup = pd.concat([df, df.iloc[:3]], ignore_index=True)
    dup.to_parquet(tmp_path / "dup.parquet", index=False)
    with pytest.raises(CompletenessError, match="duplicate row.*task_id"):
        measure(spark, str(tmp_path / "dup.parquet"), cfg)
    df.drop(columns=["bad_pixel_frac"]).to_parquet(tmp_path / "nocol.parquet", index=False)
    with pytest.raises(CompletenessError, match=r"missing column.*bad_pixel_frac"):
        measure(spark, str(tmp_path / "nocol.parquet"), cfg)
    df[~((df["label"] == 0) & (df["split"] == "test"))].to_parquet(tmp_path / "noctl.parquet", index=False)
    with pytest.raises(CompletenessError, match="no controls"):
        measure(spark, str(tmp_path / "noctl.parquet"), cfg)
    bad = df.copy()
    bad.loc[5, "score"] = np.nan
    bad.to_parquet(tmp_path / "nan.parquet", index=False)
    with pytest.raises(CompletenessError, match="NaN"):
        measure(spark, str(tmp_path / "nan.parquet"), cfg)


@pytest.mark.parametrize("bad, match", [
    ({"evaluation": {"fprs": [0.0]}}, "fprs"), ({"plot_fpr": 0.5}, "plot_fpr"), ({"bins": {"x": [1.0, 0.5]}}, "increasing"),
    ({"surprise": 1}, "unknown keys"), ({"eval_split": "train"}, "eval_split"), ({"surface": {"x": "a", "y": "b"}}, "surface"),
])
def test_config_errors_name_the_key(bad, match):
    bad = dict(bad)
    evaluation = bad.pop("evaluation", None)
    p = {"bins": {"theta_e_arcsec": [0.5, 1.0]}, **bad}
    with pytest.raises(ParamsError, match=match):
        CompletenessConfig.from_params(p, evaluation=evaluation)


def test_stage_writes_metrics_csvs_and_figures(tmp_path, monkeypatch):
    from stages import completeness as stage

    df = random_scores(3000, seed=6)
    (tmp_path / "scores").mkdir()
    df.to_parquet(tmp_path / "scores" / "m.parquet", index=False)
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["completeness"].update(n_bootstrap=50, spark={"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g"})
    p["completeness"]["bins"] = {"theta_e_arcsec": [0.5, 1.0, 1.5, 2.0, 2.5], "psf_r_arcsec": [0.8, 1.2, 1.6], "arc_snr": [0, 10, 40, ".inf"]}
    p["completeness"]["bins"]["arc_snr"] = [0, 10, 40, float("inf")]
    p["completeness"]["fixed_scores"] = [0.5]
    p["sensitivity"]["variables"] = ["theta_e_arcsec"]   # the whole file is checked: the sweep needs binned variables
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    rc = stage.main(["--arch", "m", "--params", str(tmp_path / "params.yaml"), "--scores", str(tmp_path / "scores"),
                     "--metrics", str(tmp_path / "metrics"), "--plots", str(tmp_path / "plots")])
    assert rc == 0
    m = json.loads((tmp_path / "metrics" / "m.json").read_text())
    names = [t["name"] for t in m["thresholds"]]
    assert names == ["fpr_0.1", "fpr_0.01", "fpr_0.001", "score_0.5"]
    n_ctl = m["rows"]["controls"]
    assert all(t["n_controls"] == n_ctl for t in m["thresholds"])
    low = {t["name"]: t["low_count"] for t in m["thresholds"]}
    assert low["fpr_0.001"] and not low["fpr_0.1"]  # 0.001 x ~1200 controls < 10
    assert any("fpr_0.001" in w for w in m["low_count_warnings"])
    h = m["headline"]["fpr_0.01"]
    assert h["overall"]["all"]["n"] == m["rows"]["injections"]
    assert h["theta_e_over_psf_ge_1"]["all"]["n"] < h["overall"]["all"]["n"]
    assert 0.5 < m["auroc"] < 1
    assert m["excluded_from_bins"]["theta_e_arcsec"]["missing"] > 0
    csv = pd.read_csv(tmp_path / "plots" / "m" / "theta_e_arcsec.csv")
    assert set(csv["subset"]) == {"all", "clean"} and csv["primary"].sum() == 2 * 4
    assert (csv["wilson_lo"] <= csv["completeness"] + 1e-12).all() and (csv["completeness"] <= csv["wilson_hi"] + 1e-12).all()
    for f in ("theta_e_arcsec.png", "psf_r_arcsec.png", "theta_e_arcsec__x__psf_r_arcsec.png", "theta_e_arcsec__x__psf_r_arcsec.csv"):
        assert (tmp_path / "plots" / "m" / f).stat().st_size > 1000


def test_threshold_uncertainty_brackets_the_completeness(spark, tmp_path):
    df = random_scores(3000, seed=12, null_frac=0.0)
    df.to_parquet(tmp_path / "s.parquet", index=False)
    cfg = CompletenessConfig.from_params({"n_bootstrap": 10, "bins": {"theta_e_arcsec": [0.5, 2.5]}}, evaluation={"fprs": [0.01]})
    res = measure(spark, str(tmp_path / "s.parquet"), cfg)
    u = res.threshold_spread["fpr_0.01"]
    t = res.thresholds["fpr_0.01"]
    k_lo, k_hi = u["controls_above_interval"]
    assert k_lo <= t.n_controls_above <= k_hi and k_hi > k_lo
    assert u["score_loose"] <= t.score <= u["score_strict"]
    c = res.table[(res.table["var"] == "overall") & (res.table["subset"] == "all") & (res.table["criterion"] == "fpr_0.01")]["completeness"].iloc[0]
    lo, hi = u["completeness_range"]
    assert lo <= c <= hi and hi > lo
    test = df[df["split"] == "test"]
    inj = test.loc[test["label"] == 1, "score"]
    assert lo == pytest.approx((inj > u["score_strict"]).mean()) and hi == pytest.approx((inj > u["score_loose"]).mean())


def test_real_data_without_optional_columns_and_null_regions(spark, tmp_path):
    from dhs.completeness import stage

    df = random_scores(1500, seed=13, null_frac=0.0).drop(columns=["arc_snr"])
    (tmp_path / "scores").mkdir()
    df.to_parquet(tmp_path / "scores" / "m.parquet", index=False)
    cfg = CompletenessConfig.from_params({"n_bootstrap": 10, "bins": {"theta_e_arcsec": [0.5, 1.5, 2.5], "arc_snr": [0, 10, 100]},
                                          "surface": {"x": "theta_e_arcsec", "y": "arc_snr"}})
    res = measure(spark, str(tmp_path / "scores" / "m.parquet"), cfg)
    assert res.skipped_variables == ["arc_snr"] and any("arc_snr" in w for w in res.warnings)
    out = stage.write_outputs("m", cfg, res, tmp_path / "metrics", tmp_path / "plots")
    assert out["skipped_variables"] == ["arc_snr"]
    assert pd.read_csv(tmp_path / "plots" / "m" / "arc_snr.csv").empty
    assert (tmp_path / "plots" / "m" / "theta_e_arcsec__x__arc_snr.png").exists()
    from dhs.completeness.sensitivity import SensitivityConfig, sweep

    with pytest.raises(CompletenessError, match="arc_snr"):
        sweep(spark, {"m": str(tmp_path / "scores" / "m.parquet")}, cfg, SensitivityConfig.from_params({"variables": ["theta_e_arcsec"]}))
    nul = random_scores(500, seed=14, null_frac=0.0)
    nul["region_id"] = nul["region_id"].astype("Int64")
    nul.loc[3, "region_id"] = pd.NA
    nul.to_parquet(tmp_path / "nul.parquet", index=False)
    with pytest.raises(CompletenessError, match="without a region_id"):
        measure(spark, str(tmp_path / "nul.parquet"), cfg)


@pytest.mark.parametrize("content", [b"", b"PAR1 this is not a parquet file"])
def test_a_broken_score_table_is_refused_by_name_before_spark_starts(tmp_path, capsys, content):
    """An empty or foreign file where the score table should be: one FAILED line naming it and what to
    rerun, exit 2, from the completeness and sensitivity stages and from every reader of score tables."""
    from stages import completeness as stage
    from stages import sensitivity as sens_stage

    from dhs.evaluation.scores import ScoresError, read_scores

    (tmp_path / "scores").mkdir()
    (tmp_path / "scores" / "small_cnn.parquet").write_bytes(content)
    out = ["--metrics", str(tmp_path / "metrics"), "--plots", str(tmp_path / "plots")]
    rc = stage.main(["--arch", "small_cnn", "--scores", str(tmp_path / "scores"), *out])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert f"completeness small_cnn: FAILED: {tmp_path / 'scores' / 'small_cnn.parquet'}: not a readable parquet file" in err
    assert "dvc repro -f infer@small_cnn" in err
    rc = sens_stage.main(["--scores", str(tmp_path / "scores"), "--metrics", str(tmp_path / "s.json"), "--plots", str(tmp_path / "sp")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "sensitivity: FAILED" in err and "not a readable parquet file" in err, err
    with pytest.raises(ScoresError, match="not a readable parquet file"):
        read_scores(tmp_path / "scores" / "small_cnn.parquet")
