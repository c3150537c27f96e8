"""The decoded cache: every usable row aligned with its metadata, rejected rows excluded, an
empty split refused, and the stored normalisation statistics equal to computing them."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import torch

from dhs.contract import decode_stamp, validate
from dhs.finder.loader import NormConfig, iterate_batches, normalize
from dhs.stamps.cache import CacheError, build_cache, open_split


def read_all(root):
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_cache_holds_every_usable_row_aligned_with_its_metadata(sim_dataset, tmp_path, dtype):
    report = validate(sim_dataset, progress=False)
    summary = build_cache(report, tmp_path / "cache", dtype=dtype, progress=False)
    src = read_all(sim_dataset).set_index("task_id")
    assert sum(summary.counts.values()) == report.rows_used == len(src)
    for split in ("train", "val", "test"):
        cs = open_split(tmp_path / "cache", split)
        assert cs.images.dtype == np.dtype(dtype) and cs.images.shape[1:] == (3, 64, 64)
        assert (cs.meta.region_split == split).all()
        for i in [0, len(cs) // 2, len(cs) - 1]:
            tid = cs.meta.task_id.iloc[i]
            truth = decode_stamp(src.loc[tid, "stamp_npz"])
            if dtype == "float32":
                np.testing.assert_array_equal(cs.images[i], truth)
            else:  # float16: relative rounding 2^-11, far below the sky noise
                np.testing.assert_allclose(cs.images[i].astype(np.float32), truth, rtol=2**-10, atol=1e-7)
            assert cs.meta.is_control.iloc[i] == src.loc[tid, "is_control"]
        np.testing.assert_array_equal(cs.labels, (cs.meta.is_control == 0).astype(np.float32))


def test_cache_excludes_rejected_rows_and_refuses_an_empty_split(sim_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(sim_dataset, root)
    # break one stamp and flag one failed cutout in a train shard
    shard = sorted((root / "region_split=train").glob("*.parquet"))[0]
    df = pd.read_parquet(shard)
    df.loc[0, "stamp_npz"] = b"not an npz"
    df.loc[1, "cutout_ok"] = 0
    bad_ids = set(df.task_id.iloc[:2])
    df.to_parquet(shard, index=False)
    report = validate(root, progress=False)
    assert report.rejected == {"corrupt_npz": 1, "cutout_not_ok": 1}
    build_cache(report, tmp_path / "cache", progress=False)
    train = open_split(tmp_path / "cache", "train")
    assert not bad_ids & set(train.meta.task_id)
    assert sum(len(open_split(tmp_path / "cache", s)) for s in ("train", "val", "test")) == report.rows_used
    # a split whose files hold no usable row is an error naming the split and its rejections
    for shard in (root / "region_split=val").glob("*.parquet"):
        df = pd.read_parquet(shard)
        df["cutout_ok"] = 0
        df.to_parquet(shard, index=False)
    with pytest.raises(CacheError, match=r"split\(s\) \['val'\] have files but no usable row") as e:
        build_cache(validate(root, progress=False), tmp_path / "cache2", progress=False)
    assert "'cutout_not_ok'" in str(e.value) and "region_split=val/part-" in str(e.value)
    assert "metrics/stamps.json" not in str(e.value)  # it names what it found, not a file this path never wrote
    assert not (tmp_path / "cache2").exists()


def test_an_evaluation_only_dataset_caches_its_splits_and_names_the_missing_ones(sim_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(sim_dataset, root)
    shutil.rmtree(root / "region_split=train")
    shutil.rmtree(root / "region_split=val")
    report = validate(root, progress=False)
    report.raise_if_errors()  # validation accepts it ...
    summary = build_cache(report, tmp_path / "cache", progress=False)  # ... and so does the cache
    assert list(summary.counts) == ["test"] and summary.counts["test"] == report.rows_used
    assert summary.missing_splits == ["train", "val"]
    assert len(open_split(tmp_path / "cache", "test")) == report.rows_used
    with pytest.raises(CacheError, match=r"needs split\(s\) \['train'\] but the stamp dataset \(stamps.source\) has no "
                                         r"region_split=train partition") as e:
        open_split(tmp_path / "cache", "train")
    assert "holds ['test'] only" in str(e.value)


def test_stored_normalisation_stats_give_the_same_tensors_as_computing_them(sim_dataset, tmp_path):
    build_cache(validate(sim_dataset, progress=False), tmp_path / "cache", progress=False)
    split = open_split(tmp_path / "cache", "train")
    rows = np.arange(len(split))
    for mode in ("annulus_common", "annulus_per_band"):
        cfg = NormConfig(mode=mode)
        stored = torch.cat([x for x, _, _ in iterate_batches(split, rows, 32, cfg)])
        fresh = normalize(torch.from_numpy(np.asarray(split.images, dtype=np.float32)), cfg)
        np.testing.assert_allclose(stored.numpy(), fresh.numpy(), rtol=1e-4, atol=1e-4)
    # another annulus: the stored stats do not apply and are not used
    other = NormConfig(annulus_inner_frac=0.5)
    assert split.norm_stats(0.5, 1.0) is None
    got = torch.cat([x for x, _, _ in iterate_batches(split, rows, 32, other)])
    np.testing.assert_allclose(got.numpy(), normalize(torch.from_numpy(np.asarray(split.images, dtype=np.float32)), other).numpy(), atol=1e-5)
