"""benchmarks/arc_survival.py: its measure of what the host's removal leaves of an arc is right on
stamps whose answer is known (a compact image far out is kept whole, an Einstein ring is taken
with the host, since no median over an annulus can tell a ring from the host's profile), and on
the default survey it prints the physics: arcs unresolved by the PSF are removed with the host,
resolved ones largely kept."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from dhs.evaluation.scores import sigmoid
from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("arc_survival", REPO / "benchmarks" / "arc_survival.py")
arc_survival = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(arc_survival)

N = 64


def _gauss(cy: float, cx: float, sigma: float, amp: float) -> torch.Tensor:
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2.0
    return torch.from_numpy(amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))).float()


def test_kept_fraction_is_one_for_a_compact_image_far_out_and_near_zero_for_a_ring():
    from dhs.models.loader import NormConfig

    rng = np.random.default_rng(0)
    host = _gauss(0.3, -0.2, 3.0, 2.0).expand(2, 3, N, N).clone()
    noise = torch.from_numpy(rng.normal(0.0, 0.004, host.shape)).float()
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2.0
    ring = torch.from_numpy(0.05 * np.exp(-((np.hypot(yy - 0.3, xx + 0.2) - 6.0) ** 2) / 2.0)).float()
    arcs = torch.stack([_gauss(-12.0, 9.0, 1.5, 0.05).expand(3, N, N), ring.expand(3, N, N)])
    norm = NormConfig.from_params(dict(radial_profile_subtract=True, radial_profile_shape="ellipse", residual_noise_scale=True))
    kept, peak = arc_survival.arc_as_received(host + noise + arcs, arcs, norm)
    assert kept[0] > 0.95 and peak[0] > 0.95
    assert abs(kept[1]) < 0.1


def test_on_the_default_survey_unresolved_arcs_go_with_the_host_and_resolved_ones_stay():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "arc_survival.py"), "--n", "300", "--min-snr", "5"], cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "theta_e/psf")
    stop = next(i for i, line in enumerate(lines) if line.strip() == "host r")
    theta = {}
    for line in lines[start + 1: stop]:
        parts = line.split()
        if len(parts) == 7 and parts[2].isdigit():  # "[0.5, 0.75)  n  q25 median q75 peak"
            theta[parts[0] + parts[1]] = (int(parts[2]), *(float(v) for v in parts[3:]))
    header = next(line for line in res.stdout.splitlines() if "injections with arc SNR" in line)
    assert sum(v[0] for v in theta.values()) == int(header.split()[0])
    unresolved = theta["[0.0,0.5)"]
    resolved = [v for k, v in theta.items() if float(k[1:].split(",")[0]) >= 0.75]
    assert unresolved[2] < 0.2
    assert np.mean([v[2] for v in resolved]) > 0.4 > unresolved[2]
    for n, q25, median, q75, _ in theta.values():
        assert q25 <= median <= q75


def test_found_by_bin_counts_saturated_scores_as_the_completeness_stage_does(tmp_path, capsys):
    """Far out in the tail the stored (float64) scores saturate: logits 38, 40 and 45 all store score
    1.0. The completeness stage counts score > threshold, so a tie is not found, whatever the logits say."""
    rows = [("test", 0, 40.0, 30.0, 1.1, 19.0), ("test", 0, 45.0, 30.0, 1.1, 19.0), ("test", 1, 38.0, 0.0, 0.0, 19.0)]
    table = pd.DataFrame(rows, columns=["split", "is_control", "logit", "arc_snr", "theta_e_over_psf", "host_r_mag"])
    assert (sigmoid(table.logit) == 1.0).all()
    scores = tmp_path / "s.parquet"
    table.assign(host_reff_arcsec=1.0, score=sigmoid(table.logit)).to_parquet(scores)
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"eval_split": "test", "thresholds": [
        {"name": "fpr_0.001", "logit": 38.0, "score": 1.0, "n_controls": 1}]}))
    arc_survival.found_by_bin(str(scores), str(metrics), 0.001, 8.0)
    lines = {line.split(")")[0] + ")": line.split(")")[1].split() for line in capsys.readouterr().out.splitlines() if line.startswith("[")}
    assert lines["[1.0, 1.25)"] == ["2", "0.000", "2", "0.000"]


def test_found_by_bin_counts_the_completeness_stage_split_at_its_threshold(tmp_path, capsys):
    rows = [  # split, is_control, logit, arc_snr, theta_e_over_psf, host_r_mag
        ("test", 0, 3.0, 25.0, 0.3, 20.5), ("test", 0, 1.0, 25.0, 0.3, 20.5), ("test", 0, 2.5, 10.0, 0.3, 17.0),   # [0, 0.5): 2 of 3 at SNR >= 8
        ("test", 0, 2.0, 30.0, 1.1, 17.0), ("test", 0, 5.0, 3.0, 1.1, 17.0),          # [1, 1.25): 0 of 1 (the SNR 3 one is out)
        ("val", 0, 9.0, 30.0, 1.1, 17.0), ("test", 1, 9.0, 0.0, 0.0, 17.0),           # other split, a control: not counted
    ]
    scores = tmp_path / "s.parquet"
    table = pd.DataFrame(rows, columns=["split", "is_control", "logit", "arc_snr", "theta_e_over_psf", "host_r_mag"])
    table.assign(host_reff_arcsec=1.0, score=sigmoid(table.logit)).to_parquet(scores)
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"eval_split": "test", "thresholds": [
        {"name": "fpr_0.01", "logit": 2.0, "score": float(sigmoid([2.0])[0]), "n_controls": 1}]}))
    arc_survival.found_by_bin(str(scores), str(metrics), 0.01, 8.0)
    lines = {line.split(")")[0] + ")": line.split(")")[1].split() for line in capsys.readouterr().out.splitlines() if line.startswith("[")}
    assert lines["[0.0, 0.5)"] == ["3", "0.667", "2", "0.500"]
    assert lines["[1.0, 1.25)"] == ["1", "0.000", "1", "0.000"]   # logit 2.0 is not above the threshold 2.0
    assert lines["[-inf, 18.0)"] == ["2", "0.500", "1", "0.000"]   # by host r: SNR 10 found, SNR 30 not
    assert lines["[20.0, inf)"] == ["2", "0.500", "2", "0.500"]
    with pytest.raises(SystemExit, match="no threshold named 'fpr_0.001'"):
        arc_survival.found_by_bin(str(scores), str(metrics), 0.001, 8.0)
    # a table without the host's size (not a contract column: real Phase 4c data may lack it) fits
    # the other terms and says so; one without a binning column is refused, naming it
    pd.read_parquet(scores).drop(columns=["host_reff_arcsec"]).to_parquet(scores)
    arc_survival.found_by_bin(str(scores), str(metrics), 0.01, 8.0)
    assert "joint fit: without ['host r_eff']" in capsys.readouterr().out
    pd.read_parquet(scores).drop(columns=["host_r_mag"]).to_parquet(scores)
    with pytest.raises(SystemExit, match=r"no column\(s\) \['host_r_mag'\]"):
        arc_survival.found_by_bin(str(scores), str(metrics), 0.01, 8.0)


def test_the_joint_fit_separates_theta_e_from_the_host_it_grows_with(capsys):
    """theta_E and host brightness correlated, as in the physical population: binned alone, both seem
    to lower the logit; the joint fit gives each its own effect and none to a term without one."""
    rng = np.random.default_rng(3)
    n = 4000
    host_r = rng.normal(19.5, 1.0, n)
    theta = 1.0 - 0.3 * (host_r - 19.5) + rng.normal(0, 0.2, n)       # brighter hosts, larger theta_E
    inj = pd.DataFrame({"theta_e_over_psf": theta, "host_r_mag": host_r, "host_reff_arcsec": rng.uniform(0.5, 2.0, n),
                        "arc_snr": rng.uniform(8, 60, n)})
    inj["logit"] = 1.0 + 0.8 * (host_r - 19.5) + rng.normal(0, 0.3, n)  # only the host matters
    assert np.corrcoef(inj.theta_e_over_psf, inj.logit)[0, 1] < -0.5     # binned alone, theta_E seems to
    eff = arc_survival.joint_effects(inj, 8.0)
    assert abs(eff["theta_e/psf"]) < 0.05 and abs(eff["host r_eff"]) < 0.05 and abs(eff["ln arc SNR"]) < 0.05
    assert eff["host r"] == pytest.approx(0.8 * host_r.std(), rel=0.05)
    assert "joint fit of the logit on 4000 arcs" in capsys.readouterr().out
    assert arc_survival.joint_effects(inj.head(4), 8.0) == {}
    with_zero = pd.concat([inj, inj.head(1).assign(arc_snr=0.0)])   # no logarithm: left out and counted
    assert arc_survival.joint_effects(with_zero, 0.0) == pytest.approx(eff)
    assert "1 arcs left out" in capsys.readouterr().out
