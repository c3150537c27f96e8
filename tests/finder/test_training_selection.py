"""What the finder is trained on: visible injections and every control, optionally balanced; the
train and val stamps normalised once; the best checkpoint picked on the same selection."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from dhs.models.checkpoint import TrainingError, load_checkpoint
from dhs.models.loader import NormalisedSplit, NormConfig, iterate_batches
from dhs.finder.rows import balance_strata, balanced_rows, host_kind_mix, host_kind_rows, training_rows
from dhs.finder.training import TrainConfig, train
from dhs.imaging.cache import open_split


def test_training_rows_keep_every_control_and_the_visible_injections():
    meta = pd.DataFrame({"arc_snr": [0.0, 0.5, 3.0, np.nan, 10.0, 0.0]})
    labels = np.array([0, 1, 1, 1, 1, 0], dtype=np.float32)
    rows, excluded = training_rows(meta, labels, 2.0)
    assert rows.tolist() == [0, 2, 4, 5]
    assert excluded == {"injection_arc_snr_below_min": 1, "injection_arc_snr_missing": 1}
    assert training_rows(meta, labels, 0.0)[0].tolist() == list(range(6))
    with pytest.raises(TrainingError, match="no arc_snr column"):
        training_rows(meta.drop(columns="arc_snr"), labels, 2.0)


def test_balanced_rows_repeat_the_injections_to_match_the_controls():
    labels = np.array([0] * 90 + [1] * 10, dtype=np.float32)
    rows = balanced_rows(np.arange(100), labels)
    assert (labels[rows] == 0).sum() == 90 and (labels[rows] == 1).sum() == 90
    assert set(rows[labels[rows] == 1]) == set(range(90, 100))


def test_balancing_per_stratum_makes_the_label_independent_of_depth_again():
    """Keeping visible arcs only makes positives rarer in shallow bricks; balanced per depth
    tercile, every tercile holds as many injections as controls, which global balancing misses."""
    rng = np.random.default_rng(0)
    n = 6000
    depth = rng.uniform(23.6, 25.6, n)
    labels = (rng.uniform(size=n) < 0.5).astype(np.float32)
    # an injection is visible (kept) with a probability rising with depth, as arc SNR does
    keep = (labels == 0) | (rng.uniform(size=n) < (depth - 23.4) / 2.5)
    rows = np.flatnonzero(keep)
    meta = pd.DataFrame({"psfdepth_r": depth, "host_r_mag": np.where(rng.uniform(size=n) < 0.01, np.nan, rng.uniform(17, 21, n))})

    def pos_fraction_by_tercile(r):
        t = np.digitize(depth[r], np.quantile(depth, [1 / 3, 2 / 3]))
        return [labels[r][t == k].mean() for k in range(3)]

    glob = pos_fraction_by_tercile(balanced_rows(rows, labels))
    assert glob[2] - glob[0] > 0.15  # the leak: positives concentrate in deep bricks
    strata = balance_strata(meta, ("psfdepth_r", "host_r_mag"))
    assert len(np.unique(strata)) == 12  # 3 x (3 + a bin for the missing host magnitudes)
    per = pos_fraction_by_tercile(balanced_rows(rows, labels, strata))
    assert max(per) - min(per) < 0.05 and all(0.42 < f < 0.58 for f in per)
    with pytest.raises(TrainingError, match="balance_by names \\['seeing'\\]"):
        balance_strata(meta, ("seeing",))


def test_normalised_split_gives_what_normalize_gives(sim_cache):
    split = open_split(sim_cache, "val")
    norm = NormConfig.from_params(dict(radial_profile_subtract=True))
    pre = NormalisedSplit(split, norm, "cpu", batch_size=7)
    rows = np.array([3, 0, 5, 1])
    a, ya, _ = next(iterate_batches(pre, rows, 4, norm))
    b, yb, _ = next(iterate_batches(split, rows, 4, norm))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert torch.equal(ya, yb)
    with pytest.raises(ValueError, match="normalisation it was built with"):
        pre.take(rows, NormConfig.from_params({}))


def test_host_kind_repeat_takes_both_labels_of_a_kind_k_times_so_the_label_stays_independent_of_it():
    kinds = np.array(["lrg", "spiral", "lrg", "ring", "spiral", "lrg", "ring", "lrg"])
    labels = np.array([0, 0, 1, 1, 1, 0, 0, 1], dtype=np.float32)
    meta = pd.DataFrame({"host_kind": kinds})
    rows = np.array([0, 1, 2, 3, 4, 6, 7])  # row 5 left out by an earlier selection stays out
    out = host_kind_rows(rows, meta, {"spiral": 3, "ring": 2})
    assert sorted(out.tolist()) == [0, 1, 1, 1, 2, 3, 3, 4, 4, 4, 6, 6, 7]
    for kind in ("lrg", "spiral", "ring"):  # the label mix within each kind is that of the split
        assert labels[out][kinds[out] == kind].mean() == labels[rows][kinds[rows] == kind].mean()
    assert host_kind_rows(rows, meta, {}) is rows
    with pytest.raises(TrainingError, match="host_kind_repeat .* needs a host_kind column"):
        host_kind_rows(rows, meta.drop(columns="host_kind"), {"ring": 2})
    # rendered batches draw the same mix: each kind's frequency times its repeat
    assert host_kind_mix({"lrg": 0.85, "spiral": 0.1, "ring": 0.05}, {"spiral": 4}) == {"lrg": 0.85, "spiral": 0.4, "ring": 0.05}


def test_training_on_visible_arcs_records_the_selection_and_picks_on_it(sim_cache, tmp_path):
    cfg = TrainConfig.from_params({"epochs": 2, "steps_per_epoch": 2, "batch_size": 16, "warmup_steps": 1, "device": "cpu",
                                   "min_arc_snr": 1.0, "balance_classes": True, "preload": "on"}, "small_cnn")
    m = train(cfg, sim_cache, tmp_path / "m", NormConfig.from_params(dict(radial_profile_subtract=True)), augment=True, progress=False)
    split = open_split(sim_cache, "train")
    rows, excluded = training_rows(split.meta, split.labels, 1.0)
    assert m["train_rows"]["used"] == len(rows) and m["train_rows"]["excluded"] == excluded
    assert m["train_rows"]["epoch_rows"] == len(balanced_rows(rows, split.labels))
    h = m["history"]
    assert all("val_loss_selected" in e for e in h)
    assert m["best"]["loss"] == min(e["val_loss_selected"] for e in h)
    # preloading changes nothing a model sees: the same run without it gives the same weights
    cfg_off = TrainConfig.from_params({"epochs": 2, "steps_per_epoch": 2, "batch_size": 16, "warmup_steps": 1, "device": "cpu",
                                       "min_arc_snr": 1.0, "balance_classes": True, "preload": "off"}, "small_cnn")
    train(cfg_off, sim_cache, tmp_path / "off", NormConfig.from_params(dict(radial_profile_subtract=True)), augment=True, progress=False)
    a = load_checkpoint(tmp_path / "m" / "checkpoint_last.pt")["model"]
    b = load_checkpoint(tmp_path / "off" / "checkpoint_last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert json.loads(load_checkpoint(tmp_path / "m" / "checkpoint_last.pt")["norm"])["radial_profile_subtract"] is True
    # look-alike hosts repeated: the epoch holds them that many times, and the run says so
    repeat = {"spiral": 3, "ring": 3}
    cfg_k = TrainConfig.from_params({"epochs": 1, "steps_per_epoch": 1, "batch_size": 16, "warmup_steps": 1, "device": "cpu",
                                     "min_arc_snr": 1.0, "balance_classes": True, "host_kind_repeat": repeat}, "small_cnn")
    assert cfg_k.params_hash(NormConfig.from_params({}), True) != dataclasses.replace(cfg_k, host_kind_repeat={}).params_hash(NormConfig.from_params({}), True)
    mk = train(cfg_k, sim_cache, tmp_path / "k", NormConfig.from_params(dict(radial_profile_subtract=True)), augment=True, progress=False)
    assert mk["train_rows"]["host_kind_repeat"] == repeat and mk["train_rows"]["used"] == len(rows)
    assert mk["train_rows"]["epoch_rows"] == len(balanced_rows(host_kind_rows(rows, split.meta, repeat), split.labels))
    assert set(split.meta["host_kind"]) & set(repeat)  # the fixture's survey has such hosts
