"""The Phase 4d proxy sweep: proxy completeness by direct count, its by-construction zeros, and
the stage beside two archs' model curves."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from dhs.measurement.counts import CompletenessError
from dhs.measurement.measure import CompletenessConfig
from dhs.completeness.sensitivity import SensitivityConfig, sweep
from dhs.params import ParamsError
from tests.conftest import REPO
from tests.completeness.test_completeness import random_scores


def test_proxy_matches_direct_count_and_is_zero_where_unresolvable(spark, tmp_path):
    df = random_scores(3000, seed=8, null_frac=0.03)
    path = tmp_path / "a.parquet"
    df.to_parquet(path, index=False)
    cfg = CompletenessConfig.from_params({"n_bootstrap": 20,
                                          "bins": {"theta_e_arcsec": [0.3, 0.45, 1.0, 2.7], "theta_e_over_psf": [0.0, 1.0, 4.0]}},
                                         evaluation={"fprs": [0.01]})
    sens = SensitivityConfig.from_params({"theta_psf_thresholds": [0.6, 0.8], "snr_min": 5.0})
    table, metrics = sweep(spark, {"a": str(path)}, cfg, sens)
    inj = df[(df["split"] == "test") & (df["label"] == 1)]
    snr, ratio = inj["arc_snr"].astype(float), inj["theta_e_over_psf"].astype(float)
    for t in (0.6, 0.8):
        direct = ((snr >= 5.0) & (ratio >= t)).fillna(False)  # NULL/NaN: not recovered
        m = metrics["proxy"][f"proxy_theta_psf_{t:g}"]["all"]
        assert m["n"] == len(inj) and m["k"] == int(direct.sum())
    # theta_E in [0.3, 0.45) with PSF >= 0.8 arcsec: theta_E/PSF < 0.57 < 0.6: no proxy recovery at all
    first = table[(table["var"] == "theta_e_arcsec") & (table["bin"] == 0) & (table["kind"] == "proxy") & (table["subset"] == "all")]
    assert (first["n"] > 0).all() and (first["k"] == 0).all()
    assert metrics["proxy"]["proxy_theta_psf_0.6"]["all"]["k"] >= metrics["proxy"]["proxy_theta_psf_0.8"]["all"]["k"]
    assert "a" in metrics["model"] and "fpr_0.01" in metrics["model"]["a"]


def test_sensitivity_config_refuses_unknown_and_unbinned():
    with pytest.raises(ParamsError, match="unknown keys"):
        SensitivityConfig.from_params({"thresholds": [0.8]})
    cfg = CompletenessConfig.from_params({"bins": {"theta_e_arcsec": [0.5, 1.0]}})
    with pytest.raises(CompletenessError, match="no bins"):
        SensitivityConfig.from_params({"variables": ["theta_e_over_psf"]}).restrict(cfg)


def test_stage_draws_proxies_beside_every_arch(tmp_path):
    from stages import sensitivity as stage

    (tmp_path / "scores").mkdir()
    base = random_scores(2000, seed=9, null_frac=0.0)
    base.to_parquet(tmp_path / "scores" / "small_cnn.parquet", index=False)
    other = base.copy()
    other["score"] = np.clip(other["score"] + 0.1 * other["label"], 0, 1)
    other.to_parquet(tmp_path / "scores" / "resnet18.parquet", index=False)
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["train"]["archs"] = p["finders"]["measure"] = ["small_cnn", "resnet18"]   # the finders measured
    p["completeness"].update(n_bootstrap=20, spark={"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    rc = stage.main(["--params", str(tmp_path / "params.yaml"), "--scores", str(tmp_path / "scores"),
                     "--metrics", str(tmp_path / "sens.json"), "--plots", str(tmp_path / "plots")])
    assert rc == 0
    m = json.loads((tmp_path / "sens.json").read_text())
    assert sorted(m["proxy"]) == [f"proxy_theta_psf_{t}" for t in ("0.6", "0.7", "0.8", "0.9")]
    assert sorted(m["model"]) == ["resnet18", "small_cnn"]
    csv = pd.read_csv(tmp_path / "plots" / "theta_e_arcsec.csv")
    assert set(csv["curve"]) == {*m["proxy"], "small_cnn fpr_0.01", "resnet18 fpr_0.01"}
    assert (tmp_path / "plots" / "theta_e_over_psf.png").stat().st_size > 1000
