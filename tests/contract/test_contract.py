"""Tests of the Phase 4c stamp contract: the stamp codec and dataset validation.

Everything here is a real computation on small real datasets written to ``tmp_path``: real
parquet shards (Hive layout ``region_split=<split>/part-*.parquet``) whose ``stamp_npz`` cells
hold real npz bytes. Nothing is mocked.
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from dhs.contract import (
    BAND_KEYS,
    StampError,
    ValidationReport,
    decode_stamp,
    encode_stamp,
    load_contract,
    validate,
)
from dhs.contract.validate import DatasetInvalid
from dhs.contract.shards import HiveShardWriter, ShardWriteError

CONTRACT = load_contract()
SIZE = 64
KEY = CONTRACT.partition_key  # "region_split"


# ----------------------------------------------------------------------------------------------
# builders
# ----------------------------------------------------------------------------------------------


def pixels(seed: int, size: int = SIZE) -> np.ndarray:
    """A (3, size, size) float32 grz stamp in nMgy: sky noise plus a round host galaxy."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    host = np.exp(-(x**2 + y**2) / (2 * 3.0**2)).astype(np.float32)
    colour = np.array([0.3, 1.0, 1.6], dtype=np.float32)[:, None, None]
    return (colour * host + rng.normal(0.0, 0.005, size=(3, size, size))).astype(np.float32)


def raw_npz(**arrays) -> bytes:
    """What the Phase 4c writer did: plain numpy.savez_compressed of the given arrays."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def make_rows(n: int, split: str, region_id: int, start: int = 0, size: int = SIZE) -> pd.DataFrame:
    """``n`` valid contract rows (every contract column) with real encoded stamps.

    Row k (global index ``start + k``) is a control when the index is odd, else an SIE/SIS
    injection; task ids are ``t<index>``; each row has its own host position, hosts of
    different regions are far apart.
    """
    idx = np.arange(start, start + n)
    is_control = (idx % 2).astype(np.int64)
    inj = 1.0 - is_control
    lens_model = np.where(is_control == 1, "CONTROL", np.where(idx % 4 == 0, "SIE", "SIS"))
    rows = {
        "task_id": [f"t{k:06d}" for k in idx],
        "experiment_id": "exp-contract-test",
        "selection_set_id": "sel-a",
        "ranking_mode": "z_mag",
        "selection_strategy": "stratified",
        "region_id": np.full(n, region_id, dtype=np.int64),
        KEY: split,
        "brickname": f"{150 + region_id:04d}p020",
        # hosts: 0.5 deg between regions, 36 arcsec between rows of a region
        "ra": 150.0 + 0.5 * region_id + 0.01 * np.arange(n),
        "dec": -2.0 + 0.25 * region_id + 0.0 * idx,
        "pipeline_version": "4c.1",
        "config_id": "cfg0001",
        "stamp_npz": [encode_stamp(pixels(int(k), size)) for k in idx],
        "stamp_size": np.full(n, size, dtype=np.int64),
        "bandset": "grz",
        "ab_zp_nmgy": 22.5,
        "lens_model": lens_model,
        "is_control": is_control,
        "theta_e_arcsec": inj * (0.5 + 0.1 * (idx % 5)),
        "src_dmag": inj * 1.5,
        "src_reff_arcsec": inj * 0.3,
        "psf_fwhm_used_r": 1.2 + 0.01 * (idx % 7),
        "psfsize_r": 1.25 + 0.01 * (idx % 7),
        "psfdepth_r": 24.0 + 0.0 * idx,
        "bad_pixel_frac": 0.0 * idx,
        "wise_brightmask_frac": 0.0 * idx,
        "cutout_ok": np.ones(n, dtype=np.int64),
        # a few optional columns, as real data carries them
        "src_e": inj * 0.2,
        "shear": inj * 0.03,
        "arc_snr": inj * 12.0,
    }
    return pd.DataFrame(rows)


def write_shard(root: Path, split: str | None, name: str, df: pd.DataFrame) -> Path:
    """Write ``df`` as one shard; the partition key lives in the path (Hive), not the file."""
    d = root / f"{KEY}={split}" if split is not None else root
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    pq.write_table(pa.Table.from_pandas(df.drop(columns=[KEY]), preserve_index=False), path)
    return path


def check_accounting(report: ValidationReport, expected_rows: int) -> None:
    """Every row written is read, and every row read is used or rejected for exactly one reason."""
    assert report.rows_read == expected_rows
    assert report.rows_read == report.rows_used + sum(report.rejected.values())
    for f in report.files:
        if f.reasons is not None:
            assert len(f.reasons) == f.n_rows
            assert len(f.labels) == f.n_rows
    m = report.to_metrics()
    assert m["rows_read"] == m["rows_used"] + m["rows_rejected"]
    assert m["rejected_by_reason"] == dict(sorted(report.rejected.items()))
    # the per split/label table accounts for the same rows
    used = sum(s["used"] for lab in m["by_split_label"].values() for s in lab.values())
    rej = sum(n for lab in m["by_split_label"].values() for s in lab.values() for n in s["rejected"].values())
    assert used == m["rows_used"]
    assert rej == m["rows_rejected"]


def rel(report: ValidationReport, path: Path) -> str:
    return str(path.relative_to(report.root))


def examples_for(report: ValidationReport, reason: str) -> list:
    return [p for p in report.examples if p.reason == reason]


def errors_for(report: ValidationReport, reason: str) -> list:
    return [p for p in report.errors if p.reason == reason]


# ----------------------------------------------------------------------------------------------
# codec
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", CONTRACT.stamp_sizes)
def test_codec_round_trip_is_exact_float32(size):
    img = pixels(7, size)
    # values float32 can hold that a lossy or re-typed codec would change
    img[0, 0, 0] = np.float32(1e-42)  # subnormal
    img[1, 1, 1] = np.finfo(np.float32).max
    img[2, 2, 2] = -np.finfo(np.float32).tiny
    img[2, 3, 3] = np.float32(0.1)
    out = decode_stamp(encode_stamp(img), stamp_size=size)
    assert out.dtype == np.float32
    assert out.shape == (3, size, size)
    assert out.tobytes() == img.tobytes()  # bit-exact, not merely close


def test_encoded_stamp_is_an_npz_with_float32_band_arrays():
    img = pixels(3)
    with np.load(io.BytesIO(encode_stamp(img)), allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(BAND_KEYS)
        for i, key in enumerate(BAND_KEYS):
            assert npz[key].dtype == np.float32
            assert npz[key].shape == (SIZE, SIZE)
            np.testing.assert_array_equal(npz[key], img[i])


def test_decode_reads_plain_savez_compressed_stamps():
    """Stamps written by numpy.savez_compressed upstream (not by encode_stamp) decode too."""
    img = pixels(4)
    blob = raw_npz(image_g=img[0], image_r=img[1], image_z=img[2])
    np.testing.assert_array_equal(decode_stamp(blob, stamp_size=SIZE), img)


def test_encoding_is_byte_deterministic():
    img = pixels(11)
    a = encode_stamp(img)
    b = encode_stamp(img.copy())
    c = encode_stamp(np.asfortranarray(img))  # same pixels, other memory layout
    d = encode_stamp(img.astype(np.float64))  # same values, cast to float32 on the way in
    assert a == b == c == d
    with zipfile.ZipFile(io.BytesIO(a)) as zf:
        assert {zi.date_time for zi in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert encode_stamp(pixels(12)) != a


def test_missing_band_is_reported():
    img = pixels(1)
    blob = raw_npz(image_g=img[0], image_r=img[1])
    with pytest.raises(StampError) as ei:
        decode_stamp(blob, stamp_size=SIZE)
    assert ei.value.reason == "missing_band"
    assert "image_z" in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_failed_phase4c_row_with_only_image_r_zeros_is_missing_band():
    blob = raw_npz(image_r=np.zeros((SIZE, SIZE), dtype=np.float32))
    with pytest.raises(StampError) as ei:
        decode_stamp(blob, stamp_size=SIZE)
    assert ei.value.reason == "missing_band"
    assert "image_g" in str(ei.value) and "image_z" in str(ei.value)


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(encode_stamp(pixels(2))[:5000], id="truncated"),
        pytest.param(encode_stamp(pixels(2))[:-30], id="truncated-tail"),
        pytest.param(b"this is not an npz file at all" * 4, id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(None, id="null"),
    ],
)
def test_corrupt_or_empty_bytes_are_corrupt_npz(blob):
    with pytest.raises(StampError) as ei:
        decode_stamp(blob, stamp_size=SIZE)
    assert ei.value.reason == "corrupt_npz"


def test_crc_damaged_member_is_corrupt_npz():
    blob = bytearray(encode_stamp(pixels(2)))
    for k in range(5000, 5016):  # inside image_g's compressed data
        blob[k] ^= 0xFF
    with pytest.raises(StampError) as ei:
        decode_stamp(bytes(blob), stamp_size=SIZE)
    assert ei.value.reason == "corrupt_npz"


def test_damaged_deflate_stream_is_corrupt_npz():
    blob = bytearray(encode_stamp(pixels(2)))
    for k in range(60, 76):  # the start of image_g's deflate stream
        blob[k] ^= 0xFF
    with pytest.raises(StampError) as ei:
        decode_stamp(bytes(blob), stamp_size=SIZE)
    assert ei.value.reason == "corrupt_npz"


def test_single_npy_instead_of_npz_is_corrupt_npz():
    buf = io.BytesIO()
    np.save(buf, pixels(2)[1])
    with pytest.raises(StampError) as ei:
        decode_stamp(buf.getvalue(), stamp_size=SIZE)
    assert ei.value.reason == "corrupt_npz"


def test_non_square_stamp_is_wrong_shape():
    img = pixels(5)[:, :63, :]  # (3, 63, 64)
    for blob in (encode_stamp(img), raw_npz(image_g=img[0], image_r=img[1], image_z=img[2])):
        for stamp_size in (SIZE, None):
            with pytest.raises(StampError) as ei:
                decode_stamp(blob, stamp_size=stamp_size)
            assert ei.value.reason == "wrong_shape"
            assert "(63, 64)" in str(ei.value)


def test_stamp_of_other_size_or_mixed_band_shapes_is_wrong_shape():
    with pytest.raises(StampError) as ei:
        decode_stamp(encode_stamp(pixels(5, 96)), stamp_size=64)
    assert ei.value.reason == "wrong_shape"
    big, small = pixels(5, 96), pixels(5, 64)
    with pytest.raises(StampError) as ei:
        decode_stamp(raw_npz(image_g=small[0], image_r=big[1], image_z=small[2]))
    assert ei.value.reason == "wrong_shape"
    with pytest.raises(StampError) as ei:  # 3-D band arrays
        decode_stamp(raw_npz(image_g=small[:1], image_r=small[1:2], image_z=small[2:]))
    assert ei.value.reason == "wrong_shape"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_pixels_are_reported(bad):
    img = pixels(6)
    img[2, 10, 20] = bad
    blob = encode_stamp(img)
    with pytest.raises(StampError) as ei:
        decode_stamp(blob, stamp_size=SIZE)
    assert ei.value.reason == "nonfinite_pixels"
    assert "1 NaN/Inf" in str(ei.value)
    # the check can be switched off explicitly, and the pixel comes back untouched
    out = decode_stamp(blob, stamp_size=SIZE, check_finite=False)
    assert out[2, 10, 20] == bad or (np.isnan(bad) and np.isnan(out[2, 10, 20]))


@pytest.mark.parametrize("shape", [(2, SIZE, SIZE), (4, SIZE, SIZE), (SIZE, SIZE), (3, SIZE, SIZE, 1)])
def test_encode_rejects_anything_but_three_bands(shape):
    with pytest.raises(ValueError, match="expects a \\(3, H, W\\)"):
        encode_stamp(np.zeros(shape, dtype=np.float32))


# ----------------------------------------------------------------------------------------------
# validate: a clean dataset
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("clean")
    writer = HiveShardWriter(root, rows_per_shard=5)
    writer.add(make_rows(12, "train", region_id=1, start=0))
    writer.add(make_rows(8, "train", region_id=2, start=100))
    writer.add(make_rows(6, "val", region_id=3, start=200))
    writer.add(make_rows(6, "test", region_id=4, start=300))
    writer.close()
    assert writer.rows_written == {"train": 20, "val": 6, "test": 6}
    assert len(writer.files) == 4 + 2 + 2
    return root, 32


@pytest.mark.parametrize("check_pixels", [True, False])
def test_clean_dataset_validates(clean_dataset, check_pixels):
    root, n = clean_dataset
    report = validate(root, check_pixels=check_pixels, workers=1, progress=False)
    assert report.ok, report.summary()
    assert report.errors == []
    assert report.examples == []
    assert report.rejected == Counter()
    assert report.rows_read == report.rows_used == n
    check_accounting(report, n)
    report.raise_if_errors()  # does not raise

    m = report.to_metrics()
    assert m["rows_rejected"] == 0
    assert m["rejected_by_reason"] == {}
    assert m["n_files"] == 8
    assert m["by_split_label"] == {
        "train": {"control": {"used": 10, "rejected": {}}, "injection": {"used": 10, "rejected": {}}},
        "val": {"control": {"used": 3, "rejected": {}}, "injection": {"used": 3, "rejected": {}}},
        "test": {"control": {"used": 3, "rejected": {}}, "injection": {"used": 3, "rejected": {}}},
    }
    assert m["n_regions_by_split"] == {"test": 1, "train": 2, "val": 1}
    assert report.regions_by_split() == {"test": [4], "train": [1, 2], "val": [3]}
    assert m["region_disjoint"] is True
    assert m["host_disjoint"] is True
    assert m["errors"] == []
    assert f"{n} rows read, {n} usable" in report.summary()
    for f in report.files:
        assert report.usable_mask(f.path).all()


def test_clean_dataset_same_report_with_two_workers(clean_dataset):
    root, n = clean_dataset
    one = validate(root, workers=1, progress=False)
    two = validate(root, workers=2, progress=False)
    assert two.to_metrics() == one.to_metrics()
    check_accounting(two, n)


# ----------------------------------------------------------------------------------------------
# validate: one dataset with every kind of problem planted, all reported at once
# ----------------------------------------------------------------------------------------------

TRAIN0 = f"{KEY}=train/part-00000.parquet"
TRAIN1 = f"{KEY}=train/part-00001.parquet"
TRAIN2 = f"{KEY}=train/part-00002.parquet"
VAL0 = f"{KEY}=val/part-00000.parquet"
VAL1 = f"{KEY}=val/part-00001.parquet"
TEST0 = f"{KEY}=test/part-00000.parquet"
TEST1 = f"{KEY}=test/part-00001.parquet"
HOLD0 = f"{KEY}=holdout/part-00000.parquet"
NOTES = f"{KEY}=train/notes.txt"
STRAY = "part-stray.parquet"

# (file, row, column) of every planted row problem
PLANTED_ROWS = {
    "corrupt_npz": {(TRAIN0, 2, "stamp_npz"), (TRAIN0, 3, "stamp_npz")},
    "wrong_shape": {(TRAIN0, 4, "stamp_npz")},
    "nonfinite_pixels": {(TRAIN0, 5, "stamp_npz"), (TRAIN0, 6, "stamp_npz")},
    "cutout_not_ok": {(TRAIN0, 7, "cutout_ok"), (TRAIN0, 11, "cutout_ok")},
    "label_mismatch": {(TRAIN0, 8, "lens_model")},
    "missing_band": {(TRAIN0, 9, "stamp_npz")},
    "null_required": {(TRAIN0, 10, "brickname")},
    "duplicate_task_id": {(TRAIN1, 1, "task_id"), (TRAIN1, 3, "task_id")},
}
EXPECTED_REJECTED = Counter(
    {reason: len(v) for reason, v in PLANTED_ROWS.items()}
    | {"bad_schema": 3 + 3, "unknown_split": 3 + 2}
)
BAD_ROWS_WRITTEN = 12 + 4 + 3 + 3 + 5 + 5 + 3 + 2


@pytest.fixture(scope="module")
def bad_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")

    # train/part-00000: 12 rows of region 1; rows 0 and 1 are fine, 2-11 each carry one problem
    t0 = make_rows(12, "train", region_id=1, start=0)
    good = pixels(2)
    t0.at[2, "stamp_npz"] = encode_stamp(good)[:5000]  # truncated bytes
    t0.at[3, "stamp_npz"] = b""  # empty bytes
    t0.at[4, "stamp_npz"] = encode_stamp(good[:, :63, :])  # (63, 64)
    nan = good.copy()
    nan[1, 30:32, 30:32] = np.nan
    t0.at[5, "stamp_npz"] = encode_stamp(nan)
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    t0.at[6, "stamp_npz"] = encode_stamp(inf)
    t0.at[7, "cutout_ok"] = 0
    t0.at[8, "is_control"] = 1  # still lens_model SIE: the label disagrees
    assert t0.at[8, "lens_model"] == "SIE"
    t0.at[9, "stamp_npz"] = raw_npz(image_r=np.zeros((SIZE, SIZE), np.float32))  # failed Phase 4c row
    t0.at[10, "brickname"] = None
    t0.at[11, "cutout_ok"] = 0  # and corrupt pixels too: rejected once, for the first reason
    t0.at[11, "stamp_npz"] = b"\x00garbage"
    write_shard(root, "train", "part-00000.parquet", t0)

    # train/part-00001: row 1 repeats a task_id of another file, row 3 one of its own row 2
    t1 = make_rows(4, "train", region_id=2, start=100)
    t1.at[1, "task_id"] = t0.at[0, "task_id"]
    t1.at[3, "task_id"] = t1.at[2, "task_id"]
    write_shard(root, "train", "part-00001.parquet", t1)

    # train/part-00002: a required column is missing
    write_shard(root, "train", "part-00002.parquet", make_rows(3, "train", region_id=3, start=200).drop(columns=["psfdepth_r"]))

    # val/part-00000: theta_e_arcsec written as strings
    v0 = make_rows(3, "val", region_id=4, start=300)
    v0["theta_e_arcsec"] = v0["theta_e_arcsec"].astype(str)
    write_shard(root, "val", "part-00000.parquet", v0)

    # val/part-00001: its last row is a train host (same ra, dec) in another region
    v1 = make_rows(5, "val", region_id=5, start=400)
    v1.loc[4, ["ra", "dec"]] = t0.loc[1, ["ra", "dec"]].to_numpy()
    write_shard(root, "val", "part-00001.parquet", v1)

    # test/part-00000: its last row claims train's region 1 (at a host of its own)
    te = make_rows(5, "test", region_id=6, start=500)
    te.at[4, "region_id"] = 1
    write_shard(root, "test", "part-00000.parquet", te)

    # a split the contract does not know, and a shard outside any partition
    write_shard(root, "holdout", "part-00000.parquet", make_rows(3, "holdout", region_id=7, start=600))
    write_shard(root, None, STRAY, make_rows(2, "none", region_id=8, start=700))

    # a stray text file, and a .parquet that is not parquet
    (root / NOTES).write_text("remember to re-run the cutouts\n")
    (root / TEST1).write_bytes(b"PAR1 this is not really parquet " * 8)
    return root


@pytest.fixture(scope="module")
def bad_report(bad_dataset) -> ValidationReport:
    return validate(bad_dataset, check_pixels=True, workers=1, progress=False)


def test_bad_dataset_row_accounting(bad_report):
    check_accounting(bad_report, BAD_ROWS_WRITTEN)
    assert bad_report.rejected == EXPECTED_REJECTED
    assert bad_report.rows_used == BAD_ROWS_WRITTEN - sum(EXPECTED_REJECTED.values()) == 14


def test_bad_dataset_lists_every_dataset_error(bad_report):
    assert not bad_report.ok
    got = Counter(p.reason for p in bad_report.errors)
    assert got == Counter(
        {
            "not_parquet": 1, "unreadable_file": 1, "no_partition": 1, "missing_column": 1,
            "wrong_type": 1, "region_in_two_splits": 1, "host_in_two_splits": 1,
        }
    ), bad_report.summary()

    (p,) = errors_for(bad_report, "missing_column")
    assert (p.file, p.row, p.column) == (TRAIN2, None, "psfdepth_r")
    assert TRAIN2 in str(p) and "psfdepth_r" in str(p)

    (p,) = errors_for(bad_report, "wrong_type")
    assert (p.file, p.column) == (VAL0, "theta_e_arcsec")
    assert "expected float" in p.message and "string" in p.message

    (p,) = errors_for(bad_report, "not_parquet")
    assert p.file == NOTES and NOTES in str(p)

    (p,) = errors_for(bad_report, "unreadable_file")
    assert p.file == TEST1 and TEST1 in str(p)
    assert "not a readable parquet file" in p.message

    (p,) = errors_for(bad_report, "no_partition")
    assert p.file == STRAY and KEY in p.message

    (p,) = errors_for(bad_report, "region_in_two_splits")
    assert p.column == "region_id"
    assert "region_id 1 " in p.message and "['test', 'train']" in p.message

    (p,) = errors_for(bad_report, "host_in_two_splits")
    assert p.column == "ra,dec"
    assert "['train', 'val']" in p.message


def test_bad_dataset_names_file_row_and_column_of_every_rejected_row(bad_report):
    for reason, where in PLANTED_ROWS.items():
        got = {(p.file, p.row, p.column) for p in examples_for(bad_report, reason)}
        assert got == where, reason
    (dup, other) = sorted(examples_for(bad_report, "duplicate_task_id"), key=lambda p: p.row)
    assert "'t000000'" in dup.message and "'t000102'" in other.message
    assert "image_g" in examples_for(bad_report, "missing_band")[0].message
    assert "(63, 64)" in examples_for(bad_report, "wrong_shape")[0].message
    assert "'SIE'" in examples_for(bad_report, "label_mismatch")[0].message

    (p,) = examples_for(bad_report, "unknown_split")
    assert (p.file, p.row, p.column) == (HOLD0, None, KEY)
    assert "'holdout'" in p.message

    # per-row reasons of the file with the row problems: first reason wins, one per row
    t0 = next(f for f in bad_report.files if f.path.endswith(TRAIN0))
    assert list(t0.reasons) == [
        "", "", "corrupt_npz", "corrupt_npz", "wrong_shape", "nonfinite_pixels", "nonfinite_pixels",
        "cutout_not_ok", "label_mismatch", "missing_band", "null_required", "cutout_not_ok",
    ]
    np.testing.assert_array_equal(bad_report.usable_mask(t0.path), [True, True] + [False] * 10)
    # the first occurrence of a duplicated task_id is kept
    t1 = next(f for f in bad_report.files if f.path.endswith(TRAIN1))
    assert list(t1.reasons) == ["", "duplicate_task_id", "", "duplicate_task_id"]
    # schema failures reject the whole file, once
    for name in (TRAIN2, VAL0):
        f = next(f for f in bad_report.files if f.path.endswith(name))
        assert list(f.reasons) == ["bad_schema"] * 3
    # the unreadable file is listed, with no rows
    f = next(f for f in bad_report.files if f.path.endswith(TEST1))
    assert f.n_rows == 0 and f.reasons is None


def test_bad_dataset_metrics_and_summary(bad_report):
    m = bad_report.to_metrics()
    assert m["region_disjoint"] is False
    assert m["host_disjoint"] is False
    assert m["n_files"] == 9  # every .parquet, readable or not
    assert m["rows_read"] == BAD_ROWS_WRITTEN
    assert m["rejected_by_reason"] == dict(sorted(EXPECTED_REJECTED.items()))
    assert len(m["errors"]) == 7
    sbl = m["by_split_label"]
    assert sbl["train"]["injection"] == {
        "used": 3,
        "rejected": {"corrupt_npz": 1, "wrong_shape": 1, "nonfinite_pixels": 1, "null_required": 1},
    }
    assert sbl["train"]["control"] == {
        "used": 1,
        "rejected": {"corrupt_npz": 1, "nonfinite_pixels": 1, "cutout_not_ok": 2, "label_mismatch": 1,
                     "missing_band": 1, "duplicate_task_id": 2},
    }
    assert sbl["train"]["unknown"] == {"used": 0, "rejected": {"bad_schema": 3}}
    assert sbl["val"]["unknown"] == {"used": 0, "rejected": {"bad_schema": 3}}
    assert sbl["holdout"]["control"]["rejected"] == {"unknown_split": 1}
    assert sbl["holdout"]["injection"]["rejected"] == {"unknown_split": 2}
    assert sum(s["rejected"].get("unknown_split", 0) for s in sbl["unknown"].values()) == 2  # the stray shard

    text = bad_report.summary(max_lines=100)
    for reason, n in EXPECTED_REJECTED.items():
        assert f"rejected {reason}: {n}" in text
    for p in bad_report.errors:
        assert f"ERROR {p}" in text
    with pytest.raises(DatasetInvalid, match="does not meet the stamp contract"):
        bad_report.raise_if_errors()


def test_bad_dataset_without_pixel_checks_skips_only_the_codec_reasons(bad_dataset):
    report = validate(bad_dataset, check_pixels=False, workers=1, progress=False)
    check_accounting(report, BAD_ROWS_WRITTEN)
    codec = {"corrupt_npz", "wrong_shape", "nonfinite_pixels", "missing_band"}
    assert report.rejected == Counter({r: n for r, n in EXPECTED_REJECTED.items() if r not in codec})
    assert report.rows_used == 14 + 6
    assert len(report.errors) == 7


def test_bad_dataset_same_report_with_two_workers(bad_dataset, bad_report):
    two = validate(bad_dataset, check_pixels=True, workers=2, progress=False)
    check_accounting(two, BAD_ROWS_WRITTEN)
    assert two.rejected == bad_report.rejected
    assert two.to_metrics() == bad_report.to_metrics()
    assert two.errors == bad_report.errors
    assert two.examples == bad_report.examples
    for a, b in zip(two.files, bad_report.files, strict=True):
        assert a.path == b.path
        assert (a.reasons is None and b.reasons is None) or list(a.reasons) == list(b.reasons)


# ----------------------------------------------------------------------------------------------
# validate: empty or absent datasets
# ----------------------------------------------------------------------------------------------


def test_empty_dataset_is_an_error(tmp_path):
    report = validate(tmp_path, workers=1, progress=False)
    assert not report.ok
    (p,) = report.errors
    assert p.reason == "empty_dataset" and p.file == str(tmp_path)
    check_accounting(report, 0)
    assert report.to_metrics()["n_files"] == 0
    with pytest.raises(DatasetInvalid):
        report.raise_if_errors()


def test_dataset_with_only_empty_partitions_and_a_stray_file(tmp_path):
    (tmp_path / f"{KEY}=train").mkdir()
    (tmp_path / f"{KEY}=val").mkdir()
    (tmp_path / f"{KEY}=val" / "README.md").write_text("x")
    report = validate(tmp_path, workers=2, progress=False)
    assert Counter(p.reason for p in report.errors) == Counter({"empty_dataset": 1, "not_parquet": 1})
    assert errors_for(report, "not_parquet")[0].file == f"{KEY}=val/README.md"
    check_accounting(report, 0)


def test_missing_dataset_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        validate(tmp_path / "nope", progress=False)


# ----------------------------------------------------------------------------------------------
# regressions: damaged streams, null keys, duplicates of rejected rows, out-of-range labels
# ----------------------------------------------------------------------------------------------


def _two_split_dataset(root: Path, train: pd.DataFrame) -> int:
    write_shard(root, "train", "part-00000.parquet", train)
    write_shard(root, "val", "part-00000.parquet", make_rows(4, "val", region_id=2, start=100))
    return len(train) + 4


def test_validate_survives_a_damaged_deflate_stream(tmp_path):
    train = make_rows(4, "train", region_id=1)
    blob = bytearray(train.at[2, "stamp_npz"])
    for k in range(60, 76):
        blob[k] ^= 0xFF
    train.at[2, "stamp_npz"] = bytes(blob)
    n = _two_split_dataset(tmp_path, train)
    report = validate(tmp_path, progress=False)
    assert report.rejected == Counter({"corrupt_npz": 1})
    check_accounting(report, n)


def test_null_region_id_is_a_rejected_row_not_a_crash(tmp_path):
    train = make_rows(4, "train", region_id=1)
    train["region_id"] = train["region_id"].astype("Int64")
    train.loc[2, "region_id"] = pd.NA
    n = _two_split_dataset(tmp_path, train)
    report = validate(tmp_path, progress=False)
    assert report.rejected == Counter({"null_required": 1})
    assert {(p.row, p.column) for p in examples_for(report, "null_required")} == {(2, "region_id")}
    check_accounting(report, n)


def test_duplicate_of_a_rejected_row_keeps_the_usable_copy(tmp_path):
    n = _two_split_dataset(tmp_path, make_rows(4, "train", region_id=1, start=0))
    # 'holdout' sorts before 'train': these rows come first and are rejected as unknown_split
    write_shard(tmp_path, "holdout", "part-00000.parquet", make_rows(2, "holdout", region_id=9, start=0))
    report = validate(tmp_path, progress=False)
    check_accounting(report, n + 2)
    assert report.rejected == Counter({"unknown_split": 2})


def test_is_control_outside_0_1_is_a_label_mismatch(tmp_path):
    train = make_rows(4, "train", region_id=1)
    assert train.at[0, "lens_model"] == "SIE"
    train.at[0, "is_control"] = 2
    n = _two_split_dataset(tmp_path, train)
    report = validate(tmp_path, progress=False)
    check_accounting(report, n)
    assert report.rejected == Counter({"label_mismatch": 1})


# --- the stored layout the simulator writes: spliced on encode, read in place on decode
@pytest.mark.parametrize("size", [SIZE, 64, 96])
def test_stored_encoding_is_the_zipfile_writers_bytes_and_numpy_reads_it(size):
    from dhs.contract.codec import _zip_stamp

    rng = np.random.default_rng(size)
    for img in (rng.normal(size=(3, size, size)).astype(np.float32), np.zeros((3, size, size), np.float32),
                np.full((3, size, size), np.float32(-3.4e38))):
        blob = encode_stamp(img, compress=False)
        assert blob == _zip_stamp(img, compress=False)
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            np.testing.assert_array_equal(np.stack([npz[k] for k in BAND_KEYS]), img)
        np.testing.assert_array_equal(decode_stamp(blob, stamp_size=size), img)


def test_stored_stamps_damaged_anywhere_read_as_numpy_reads_them():
    """A flipped bit in any header byte, pixel or CRC of a stored stamp: the in-place reader gives
    exactly what numpy's reader gives (the same error reason, or the same pixels), never an image
    numpy would not. (numpy itself accepts a few header bytes: timestamps, versions, and lengths
    that make it stop before the CRC check.)"""
    img = pixels(3)
    blob = encode_stamp(img, compress=False)
    rng = np.random.default_rng(0)
    # every byte but the bands' pixels (each member: zip local header, npy header, pixels); the
    # pixels are what the random picks below hit
    pixel_bytes = set()
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for info in zf.infolist():
            data0 = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
            pixel_bytes.update(range(data0 + info.compress_size - SIZE * SIZE * 4, data0 + info.compress_size))
    assert len(pixel_bytes) == 3 * SIZE * SIZE * 4
    header_bytes = [i for i in range(len(blob)) if i not in pixel_bytes]
    n_rejected = 0
    for i in header_bytes + rng.integers(0, len(blob), 200).tolist():
        bad = bytearray(blob)
        bad[i] ^= 0x10
        got, ref = [], []
        for out, size in ((got, SIZE), (ref, None)):  # stamp_size None: numpy's reader only
            try:
                out.append(decode_stamp(bytes(bad), stamp_size=size))
            except StampError as exc:
                out.append(exc.reason)
        if isinstance(ref[0], str):
            assert got == ref, i
            n_rejected += 1
        else:
            assert not isinstance(got[0], str) and got[0].tobytes() == ref[0].tobytes() or ref[0].shape != (3, SIZE, SIZE), i
    assert n_rejected > len(header_bytes) // 2


def test_stored_stamp_with_nan_is_nonfinite_and_another_size_goes_through_numpy():
    img = pixels(4)
    img[1, 2, 3] = np.nan
    with pytest.raises(StampError) as e:
        decode_stamp(encode_stamp(img, compress=False), stamp_size=SIZE)
    assert e.value.reason == "nonfinite_pixels"
    with pytest.raises(StampError) as e:  # a 96 px blob read as SIZE px: numpy's path names the shape
        decode_stamp(encode_stamp(np.zeros((3, 96, 96), np.float32), compress=False), stamp_size=SIZE)
    assert e.value.reason == "wrong_shape"


# --- whole columns: encoded into one Arrow buffer, decoded in place from it
def test_stamp_column_is_the_per_stamp_encoding_byte_for_byte():
    from dhs.contract.codec import failed_cutout_blob, stamp_column

    rng = np.random.default_rng(7)
    imgs = rng.normal(size=(9, 3, SIZE, SIZE)).astype(np.float32)
    column = stamp_column(imgs)
    assert column.type == pa.binary() and column.to_pylist() == [encode_stamp(i, compress=False) for i in imgs]
    ok = np.ones(9, bool)
    ok[[0, 4]] = False
    with_failed = stamp_column(imgs, ok).to_pylist()
    assert with_failed[0] == with_failed[4] == failed_cutout_blob(SIZE)
    assert [b for b, g in zip(with_failed, ok) if g] == [encode_stamp(i, compress=False) for i, g in zip(imgs, ok) if g]
    with pytest.raises(StampError) as e:  # what a failed Phase 4c row holds
        decode_stamp(with_failed[4], stamp_size=SIZE)
    assert e.value.reason == "missing_band"
    deflated = stamp_column(imgs[:3], compress=True).to_pylist()
    assert all(np.array_equal(decode_stamp(b, stamp_size=SIZE), i) for b, i in zip(deflated, imgs[:3]))


def test_decode_stamps_reads_exactly_the_blobs_the_per_stamp_reader_reads_in_place():
    """Every row decode_stamps marks decoded holds what decode_stamp reads; every other row
    (a flipped byte in a header, a pixel or a CRC; another length; deflate; null) is marked
    and holds zeros, for decode_stamp to decode or explain."""
    from dhs.contract.codec import decode_stamps, encode_stamps

    rng = np.random.default_rng(8)
    imgs = rng.normal(size=(6, 3, SIZE, SIZE)).astype(np.float32)
    blobs = encode_stamps(imgs).to_pylist()
    damaged = []
    for i in (0, 20, 41 + 128 + 5, len(blobs[0]) - 3, len(blobs[0]) - 30):   # zip header, npy header, a pixel, the end records
        bad = bytearray(blobs[1])
        bad[i] ^= 0x10
        damaged.append(bytes(bad))
    rows = [blobs[0], *damaged, blobs[2] + b"x", encode_stamp(imgs[3], compress=True), None, blobs[4], blobs[5]]
    column = pa.array(rows, pa.binary())
    out, ok = decode_stamps(column, SIZE)
    assert ok.tolist() == [True] + [False] * 5 + [False, False, False, True, True]
    for k in np.flatnonzero(ok):
        np.testing.assert_array_equal(out[k], decode_stamp(rows[k], stamp_size=SIZE))
    assert not out[~ok].any()
    np.testing.assert_array_equal(decode_stamp(rows[7], stamp_size=SIZE), imgs[3])   # deflate: the per-stamp reader's job
    for part in (column.slice(9), pa.chunked_array([column.slice(0, 1), column.slice(9)]), column.cast(pa.large_binary())):
        got, good = decode_stamps(part, SIZE)
        assert good.tolist() == ([True, True] if len(part) == 2 else [True, True, True] if len(part) == 3 else ok.tolist())
    got, good = decode_stamps(pa.chunked_array([column.slice(0, 1), column.slice(9)]), SIZE)
    np.testing.assert_array_equal(got, imgs[[0, 4, 5]])


def test_shard_writer_keeps_arrow_columns_aligned_with_their_rows_across_splits_and_shards(tmp_path):
    """Stamps handed over as an Arrow column land beside their own rows, whatever the split mix
    of each batch and wherever a shard boundary falls inside a batch; the files are what a
    DataFrame with a bytes column would have given."""
    from dhs.contract.codec import encode_stamps

    rng = np.random.default_rng(3)
    frames, blobs_all = [], []
    for b in range(4):
        n = 7 + b
        df = pd.DataFrame({"task_id": [f"t{b}-{i}" for i in range(n)], KEY: rng.choice(["train", "val", "test"], n)})
        column = encode_stamps(rng.normal(size=(n, 3, 8, 8)).astype(np.float32))
        frames.append(df)
        blobs_all += column.to_pylist()
    a, b = tmp_path / "arrow", tmp_path / "pandas"
    w_arrow, w_pandas = HiveShardWriter(a, rows_per_shard=5), HiveShardWriter(b, rows_per_shard=5)
    start = 0
    for df in frames:
        col = pa.array(blobs_all[start:start + len(df)], pa.binary())
        w_arrow.add(df, {"stamp_npz": col})
        w_pandas.add(df.assign(stamp_npz=blobs_all[start:start + len(df)]))
        start += len(df)
    w_arrow.close()
    w_pandas.close()
    assert w_arrow.rows_written == w_pandas.rows_written and len(w_arrow.files) == len(w_pandas.files) > 4
    by_task = dict(zip(pd.concat(frames)["task_id"], blobs_all))
    for fa, fb in zip(w_arrow.files, w_pandas.files):
        ta, tb = pq.read_table(fa), pq.read_table(fb)
        assert ta.column_names == tb.column_names == ["task_id", "stamp_npz"]
        assert ta.equals(tb.cast(ta.schema))
        assert all(by_task[t] == s for t, s in zip(ta.column("task_id").to_pylist(), ta.column("stamp_npz").to_pylist()))
    with pytest.raises(ValueError, match="has 2 values for 3 rows"):
        HiveShardWriter(tmp_path / "x").add(frames[0].iloc[:3], {"stamp_npz": pa.array([b"a", b"b"])})


def test_stored_stamps_are_validated_as_deflated_ones_are(tmp_path):
    """The validator reads stored stamps a batch at a time and explains only the rows it flags:
    the same planted problems, stored or deflated, give the same reasons row by row and the
    same messages."""
    def planted(compress: bool) -> pd.DataFrame:
        t = make_rows(14, "train", region_id=1, start=0)
        t["stamp_npz"] = [encode_stamp(pixels(k), compress=compress) for k in range(14)]
        good = pixels(2)
        nan, inf, blank = good.copy(), good.copy(), good.copy()
        nan[1, 30:32, 30:32] = np.nan
        inf[0, 0, 0] = np.inf
        blank[2] = 0.0
        t.at[2, "stamp_npz"] = encode_stamp(good, compress=compress)[:5000]
        t.at[3, "stamp_npz"] = encode_stamp(nan, compress=compress)
        t.at[4, "stamp_npz"] = encode_stamp(inf, compress=compress)
        t.at[5, "stamp_npz"] = encode_stamp(blank, compress=compress)
        t.at[6, "cutout_ok"] = 0
        t.at[7, "lens_model"] = "SIE"      # index 7 is a control
        t.at[8, "ra"] = 400.0
        t.at[9, "theta_e_arcsec"] = 0.0    # a control with theta_E 0: fine
        t.at[10, "theta_e_arcsec"] = -1.0  # an injection with theta_E < 0
        t.at[11, "stamp_size"] = 48
        t.at[12, "stamp_npz"] = encode_stamp(pixels(12, 96), compress=compress)
        return t

    reports = []
    for compress in (False, True):
        root = tmp_path / ("deflate" if compress else "stored")
        write_shard(root, "train", "part-00000.parquet", planted(compress))
        write_shard(root, "val", "part-00000.parquet", make_rows(2, "val", region_id=2, start=100))
        reports.append(validate(root, progress=False))
    stored, deflated = ([f for f in r.files if f.split == "train"][0] for r in reports)
    assert stored.reasons.tolist() == deflated.reasons.tolist()
    assert stored.reasons.tolist() == ["", "", "corrupt_npz", "nonfinite_pixels", "nonfinite_pixels", "blank_stamp", "cutout_not_ok",
                                       "label_mismatch", "bad_position", "", "bad_theta_e", "wrong_shape", "wrong_shape", ""]
    assert stored.labels.tolist() == deflated.labels.tolist()
    msgs = [[(p.row, p.column, p.reason, p.message) for p in r.examples if "train" in p.file] for r in reports]
    assert [m[:3] for m in msgs[0]] == [m[:3] for m in msgs[1]]
    assert [m[3] for m in msgs[0] if m[2] not in ("corrupt_npz", "wrong_shape")] == \
        [m[3] for m in msgs[1] if m[2] not in ("corrupt_npz", "wrong_shape")]


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def _stamp_frames(n_frames=5, size=8, seed=4):
    """Frames of several sizes with rows of every split mixed, some failed cutouts, and their pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_frames):
        n = 6 + 3 * b
        df = pd.DataFrame({"task_id": [f"t{b}-{i}" for i in range(n)], KEY: rng.choice(["train", "val", "test"], n),
                           "cutout_ok": (rng.uniform(size=n) > 0.2).astype(np.int64)})
        out.append((df, rng.normal(size=(n, 3, size, size)).astype(np.float32)))
    return out


@pytest.mark.parametrize("compress", [False, True])
def test_shards_encoded_and_written_in_worker_processes_are_the_bytes_written_here(tmp_path, compress):
    """Raw pixel columns encoded where the shard is written, here or in 2 writer processes, give
    the same files, byte for byte, as columns encoded before they are added: the rows of each
    shard and the chunks of each column are decided in the calling process whatever writes them."""
    from functools import partial

    from dhs.contract.codec import stamp_column
    from dhs.simulate.dataset import encode_stamp_rows

    frames = _stamp_frames()
    encode = partial(encode_stamp_rows, compress=compress)
    before = HiveShardWriter(tmp_path / "before", rows_per_shard=5)
    for df, images in frames:
        before.add(df, {"stamp_npz": stamp_column(images, df["cutout_ok"].to_numpy() == 1, compress=compress)})
    before.close()
    trees = {}
    for workers in (0, 2):
        w = HiveShardWriter(tmp_path / f"w{workers}", rows_per_shard=5, encoders={"stamp_npz": encode}, workers=workers)
        for df, images in frames:
            w.add(df, raw_columns={"stamp_npz": images})
        w.close()
        assert w.files == [tmp_path / f"w{workers}" / f.relative_to(tmp_path / "before") for f in before.files]
        assert w.rows_written == before.rows_written
        assert sorted(p.name for p in (tmp_path / f"w{workers}").iterdir()) == sorted(f"{KEY}={s}" for s in w.rows_written)  # no scratch left
        trees[workers] = _tree_bytes(tmp_path / f"w{workers}")
    reference = _tree_bytes(tmp_path / "before")
    assert len(reference) > 6 and trees[0] == reference and trees[2] == reference
    # and the stamps decode to the pixels that were added (failed cutouts hold the failed-cutout blob)
    pixels = {t: img for df, images in frames for t, img, ok in zip(df["task_id"], images, df["cutout_ok"]) if ok == 1}
    got = pads.dataset(tmp_path / "w2", partitioning="hive").to_table().to_pandas()
    checked = 0
    for t, blob in zip(got["task_id"], got["stamp_npz"]):
        if t in pixels:
            np.testing.assert_array_equal(decode_stamp(blob, stamp_size=8), pixels[t])
            checked += 1
    assert checked == len(pixels) > 0


def _failing_encoder(images, rows):
    if (rows["task_id"] == "t2-3").any():
        raise ValueError("this chunk cannot be encoded")
    from dhs.simulate.dataset import encode_stamp_rows
    return encode_stamp_rows(images, rows)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_shard_that_fails_in_a_writer_names_its_file_and_stops_the_writers(tmp_path, workers):
    w = HiveShardWriter(tmp_path / "w", rows_per_shard=5, encoders={"stamp_npz": _failing_encoder}, workers=workers)
    with pytest.raises((ShardWriteError, ValueError), match="this chunk cannot be encoded") as err:
        for df, images in _stamp_frames():
            w.add(df, raw_columns={"stamp_npz": images})
        w.close()
    if workers:
        assert err.type is ShardWriteError and "part-" in str(err.value) and ".parquet" in str(err.value)
    w.abort()
    assert w._pool is None


def test_raw_columns_are_checked_when_added(tmp_path):
    df, images = _stamp_frames(1)[0]
    with pytest.raises(ValueError, match="raw column\\(s\\) \\['stamp_npz'\\] have no encoder"):
        HiveShardWriter(tmp_path / "a").add(df, raw_columns={"stamp_npz": images})
    with pytest.raises(ValueError, match="raw column 'stamp_npz' has 5 values for 6 rows"):
        HiveShardWriter(tmp_path / "b", encoders={"stamp_npz": _failing_encoder}).add(df, raw_columns={"stamp_npz": images[:5]})
    with pytest.raises(ValueError, match="workers must be >= 0"):
        HiveShardWriter(tmp_path / "c", workers=-1)


def test_results_made_where_shards_were_written_are_taken_and_checked_to_be_shards(sim_dataset, tmp_path):
    """``validate(done=...)``: a shard's result made elsewhere (a writer process) stands for that
    shard, the cross-file checks still see every shard, and a result for a file that is not a
    shard of the dataset is refused."""
    from dhs.contract.validate import list_shards, validate_file

    shards = list_shards(sim_dataset)
    first = validate_file(str(shards[0]), str(sim_dataset))
    first.reasons[:] = "made_elsewhere"   # marks the result given (a real writer's result equals the validator's)
    report = validate(sim_dataset, progress=False, done={str(shards[0]): first})
    assert report.files[0] is first and report.rejected.get("made_elsewhere") == first.n_rows
    assert report.rows_read == validate(sim_dataset, progress=False).rows_read
    with pytest.raises(ValueError, match="not shards of"):
        validate(sim_dataset, progress=False, done={str(tmp_path / "other.parquet"): first})


def test_writer_processes_hold_at_most_the_shared_memory_budget_and_write_the_same_files(tmp_path, monkeypatch):
    """Shards in flight are bounded by SLOT_MEMORY_BYTES as well as by the writers: with room for
    one shard only, two writers take turns and the files are still those one process writes."""
    from functools import partial

    import dhs.contract.shards as shards
    from dhs.simulate.dataset import encode_stamp_rows

    frames = _stamp_frames()
    monkeypatch.setattr(shards, "SLOT_MEMORY_BYTES", 5 * 3 * 8 * 8 * 4)   # one 5-row shard of 8 px float32 stamps
    trees = {}
    for workers in (0, 2):
        w = HiveShardWriter(tmp_path / f"w{workers}", rows_per_shard=5, encoders={"stamp_npz": partial(encode_stamp_rows)},
                            workers=workers)
        for df, images in frames:
            w.add(df, raw_columns={"stamp_npz": images})
            if workers:
                assert len(shards._SLOTS) <= 1
        w.close()
        trees[workers] = _tree_bytes(tmp_path / f"w{workers}")
    assert len(trees[0]) > 6 and trees[2] == trees[0]


def test_a_shard_larger_than_its_shared_buffer_travels_through_the_pipe_and_is_the_same(tmp_path):
    """The shared buffers are sized from the first shard's rows; stamps of another size later
    (more bytes a row) are handed over through the pool's pipe instead, and written the same."""
    from functools import partial

    from dhs.simulate.dataset import encode_stamp_rows

    small, large = _stamp_frames(2, size=8, seed=5), _stamp_frames(2, size=16, seed=6)
    trees = {}
    for workers in (0, 2):
        w = HiveShardWriter(tmp_path / f"w{workers}", rows_per_shard=5, encoders={"stamp_npz": partial(encode_stamp_rows)},
                            workers=workers)
        for df, images in (*small, *[(d.assign(task_id="L" + d["task_id"]), im) for d, im in large]):
            w.add(df, raw_columns={"stamp_npz": images})
        w.close()
        trees[workers] = _tree_bytes(tmp_path / f"w{workers}")
    assert len(trees[0]) > 4 and trees[2] == trees[0]
    sizes = {len(decode_stamp(b)[0]) for f in (tmp_path / "w2").rglob("*.parquet") for b in pq.read_table(f).column("stamp_npz").to_pylist()
             if len(b) > 1000}
    assert sizes == {8, 16}
