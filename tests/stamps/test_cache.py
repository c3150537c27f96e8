"""The decoded cache: every usable row aligned with its metadata, rejected rows excluded, an
empty split refused, the stored normalisation statistics equal to computing them, and a cache
filled from the pixels validation kept equal, byte for byte, to one that decodes again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import torch

from dhs import atomic
from dhs.contract import decode_stamp, encode_stamp, validate
from dhs.contract.validate import DecodeInto
from dhs.models.loader import NormConfig, iterate_batches, normalize
from dhs.imaging.cache import CacheError, build_cache, open_split
from dhs.contract.norm_stats import STATS_ANNULUS, STATS_COLUMNS, annulus_mask_np, annulus_stats


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
        cfg = NormConfig.from_params(dict(mode=mode))
        stored = torch.cat([x for x, _, _ in iterate_batches(split, rows, 32, cfg)])
        fresh = normalize(torch.from_numpy(np.asarray(split.images, dtype=np.float32)), cfg)
        np.testing.assert_allclose(stored.numpy(), fresh.numpy(), rtol=1e-4, atol=1e-4)
    # another annulus: the stored stats do not apply and are not used
    other = NormConfig.from_params(dict(annulus_inner_frac=0.5))
    assert split.norm_stats(0.5, 1.0) is None
    got = torch.cat([x for x, _, _ in iterate_batches(split, rows, 32, other)])
    np.testing.assert_allclose(got.numpy(), normalize(torch.from_numpy(np.asarray(split.images, dtype=np.float32)), other).numpy(), atol=1e-5)


def _damaged_copy(sim_dataset, tmp_path):
    """sim_dataset with, in one train shard: a corrupt stamp, a failed cutout, a deflated stamp
    (outside the stored layout, decoded one by one), a saturated pixel (float16 clipped) and a
    task_id that another shard holds too."""
    root = tmp_path / "ds"
    shutil.copytree(sim_dataset, root)
    shards = sorted((root / "region_split=train").glob("*.parquet"))
    df = pd.read_parquet(shards[0])
    df.loc[0, "stamp_npz"] = b"not an npz"
    df.loc[1, "cutout_ok"] = 0
    img = decode_stamp(df.loc[2, "stamp_npz"])
    df.loc[2, "stamp_npz"] = encode_stamp(img, compress=True)
    img = decode_stamp(df.loc[3, "stamp_npz"])
    img[1, 5, 5] = 1.0e6
    df.loc[3, "stamp_npz"] = encode_stamp(img, compress=False)
    df.loc[4, "task_id"] = pd.read_parquet(shards[1]).task_id.iloc[0]
    df.to_parquet(shards[0], index=False)
    return root


def _tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_a_cache_from_the_pixels_validation_kept_is_byte_identical_to_decoding_again(sim_dataset, tmp_path, dtype):
    root = _damaged_copy(sim_dataset, tmp_path)
    plain_report = validate(root, progress=False)
    assert plain_report.rejected == {"corrupt_npz": 1, "cutout_not_ok": 1, "duplicate_task_id": 1}
    build_cache(plain_report, tmp_path / "plain", dtype=dtype, progress=False)
    with atomic.scratch_dir(tmp_path / "kept", "decoded") as scratch:
        report = validate(root, workers=2, progress=False, decode_into=DecodeInto(str(scratch), dtype))
        assert report.rejected == plain_report.rejected
        held = {Path(f.path).name: f for f in report.files if f.split == "train"}
        # every usable row's pixels were kept (the deflated one too), the rejected rows' were not
        for f in report.files:
            assert (f.held[f.reasons == ""]).all()
        first = held[sorted(held)[0]]
        assert not first.held[0] and not first.held[1] and first.held[2]
        assert first.clipped[3] == (dtype == "float16")
        summary = build_cache(report, tmp_path / "kept", dtype=dtype, progress=False, release_kept=True)
        # each kept file went once copied (the disk never holds the kept copy and the cache in full) ...
        assert not list(scratch.rglob("*.npy"))
        # ... and the same report then builds the cache by decoding again
        build_cache(report, tmp_path / "again", dtype=dtype, progress=False)
    assert not scratch.exists()
    assert summary.stamps_clipped == (1 if dtype == "float16" else 0)
    assert _tree_bytes(tmp_path / "kept") == _tree_bytes(tmp_path / "plain") == _tree_bytes(tmp_path / "again")


def test_the_cache_copies_the_kept_pixels_and_decodes_again_only_without_them(sim_dataset, tmp_path):
    with atomic.scratch_dir(tmp_path / "c", "decoded") as scratch:
        report = validate(sim_dataset, progress=False, decode_into=DecodeInto(str(scratch), "float16"))
        # the kept pixels, not the parquet, fill the cache: a stamp changed there shows in the cache
        f = next(f for f in report.files if f.split == "test")
        kept = np.load(f.decoded_path, mmap_mode="r+")
        kept[0] = 7.0
        kept.flush()
        build_cache(report, tmp_path / "c", progress=False)
        test = open_split(tmp_path / "c", "test")
        row = int(np.flatnonzero(test.meta.source_file.str.endswith(Path(f.path).name) & (test.meta.source_row == 0))[0])
        assert (np.asarray(test.images[row]) == 7.0).all() and test.meta.norm_mad_pooled.iloc[row] > 0
        # kept in another dtype than the cache's: the cache decodes the parquet again, same bytes as without keeping
        build_cache(report, tmp_path / "f32", dtype="float32", progress=False)
    build_cache(validate(sim_dataset, progress=False), tmp_path / "plain32", dtype="float32", progress=False)
    assert _tree_bytes(tmp_path / "f32") == _tree_bytes(tmp_path / "plain32")


def test_a_second_validation_into_the_same_place_leaves_the_first_reports_pixels_alone(sim_dataset, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(sim_dataset, changed)
    for shard in (changed / "region_split=test").glob("*.parquet"):
        df = pd.read_parquet(shard)
        df["stamp_npz"] = [encode_stamp(decode_stamp(b) * 2.0, compress=False) for b in df.stamp_npz]
        df.to_parquet(shard, index=False)
    with atomic.scratch_dir(tmp_path / "c", "decoded") as scratch:
        first = validate(sim_dataset, progress=False, decode_into=DecodeInto(str(scratch)))
        second = validate(changed, progress=False, decode_into=DecodeInto(str(scratch)))   # same relative paths, other pixels
        build_cache(first, tmp_path / "c", progress=False, release_kept=True)
        # the first report's kept files are released, the second's are its own and stay
        assert all(f.decoded_path is None for f in first.files)
        assert all(Path(f.decoded_path).is_file() for f in second.files)
    build_cache(validate(sim_dataset, progress=False), tmp_path / "plain", progress=False)
    assert _tree_bytes(tmp_path / "c") == _tree_bytes(tmp_path / "plain")


def test_stored_stats_are_the_lower_medians_of_the_stored_pixels(sim_cache):
    split = open_split(sim_cache, "val")
    x = torch.from_numpy(np.asarray(split.images[:16], dtype=np.float32))
    ring = x[:, :, torch.from_numpy(annulus_mask_np(x.shape[-1], *STATS_ANNULUS))]
    med = ring.median(dim=2).values
    dev = (ring - med[..., None]).abs()
    want = torch.cat([med, dev.flatten(1).median(dim=1).values[:, None], dev.median(dim=2).values], dim=1)
    np.testing.assert_array_equal(split.meta[list(STATS_COLUMNS)].to_numpy()[:16], want.double().numpy())


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("annulus", [STATS_ANNULUS, (0.3, 0.6)])
def test_annulus_stats_are_torch_lower_medians_for_any_annulus_dtype_and_layout(dtype, annulus):
    rng = np.random.default_rng(3)
    imgs = (rng.normal(0.0, 0.01, (12, 3, 48, 48)) + rng.normal(0.0, 1.0, (12, 3, 1, 1))).astype(dtype)
    mask = annulus_mask_np(48, *annulus)
    x = torch.from_numpy(imgs.astype(np.float32))
    ring = x[:, :, torch.from_numpy(mask)]
    med = ring.median(dim=2).values
    dev = (ring - med[..., None]).abs()
    want = torch.cat([med, dev.flatten(1).median(dim=1).values[:, None], dev.median(dim=2).values], dim=1).numpy()
    np.testing.assert_array_equal(annulus_stats(imgs, mask), want)
    # a strided view (every other stamp) gives the rows of a contiguous copy, and the input is left as it was
    before = imgs.copy()
    np.testing.assert_array_equal(annulus_stats(imgs[::2], mask), want[::2])
    np.testing.assert_array_equal(imgs, before)
