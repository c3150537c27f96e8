"""Damaged shards and implausible rows: real parquet files with flipped bytes (footer intact) in
a data page, a dictionary page and a column outside the contract; rows with impossible
positions, theta_E or pixels; optional columns stored with Arrow type null. Each ends in a
counted rejection naming file, row (group) and column, never a raw decode traceback and never a
silently changed value where a checksum or a range can tell."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dhs.contract import encode_stamp, validate
from dhs.contract.shards import HiveShardWriter
from dhs.imaging.cache import build_cache, open_split
from tests.contract.test_contract import KEY, check_accounting, examples_for, make_rows, pixels

GROUP = 4  # rows per row group in these files


def write(path: Path, df: pd.DataFrame, crc: bool = True, compression: str = "zstd") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df.drop(columns=[KEY]), preserve_index=False), path, row_group_size=GROUP,
                   compression=compression, write_page_checksum=crc)
    return path


def chunk(path: Path, group: int, column: str):
    rg = pq.ParquetFile(path).metadata.row_group(group)
    return next(rg.column(j) for j in range(rg.num_columns) if rg.column(j).path_in_schema == column)


def data_page(path: Path, group: int, column: str) -> tuple[int, int]:
    """(offset, length) of a column chunk's data page(s): the chunk after its dictionary page."""
    c = chunk(path, group, column)
    start = c.dictionary_page_offset if c.has_dictionary_page else c.data_page_offset
    return c.data_page_offset, start + c.total_compressed_size - c.data_page_offset


def flip(path: Path, offset: int, n: int = 1) -> None:
    b = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def dataset(root: Path, crc: bool = True, compression: str = "zstd", extra: bool = False) -> tuple[Path, int]:
    """train: 12 rows in 3 row groups (the file the tests damage); val and test: 4 rows each."""
    train = make_rows(12, "train", region_id=1)
    if extra:  # a column the contract does not know, as real data carries them
        train["notes"] = [f"host {i} looks fine" for i in range(12)]
    target = write(root / f"{KEY}=train" / "part-00000.parquet", train, crc, compression)
    write(root / f"{KEY}=val" / "part-00000.parquet", make_rows(4, "val", region_id=2, start=100))
    write(root / f"{KEY}=test" / "part-00000.parquet", make_rows(4, "test", region_id=3, start=200))
    return target, 20


TRAIN0 = f"{KEY}=train/part-00000.parquet"


@pytest.mark.parametrize("column, where, n", [
    ("ra", "header", 64),        # the page header: "Couldn't deserialize thrift"
    ("ra", "payload", 2),        # the ZSTD frame: "ZSTD decompression failed" or the CRC
    ("stamp_npz", "header", 64),
    ("notes", "header", 16),     # a column outside the contract, read later by the cache build
])
def test_a_damaged_data_page_rejects_its_row_group_naming_file_group_and_column(tmp_path, column, where, n):
    target, total = dataset(tmp_path, extra=True)
    offset, length = data_page(target, 1, column)
    if where == "header":
        flip(target, offset, min(n, length))
    else:  # the page's last bytes: its compressed values
        flip(target, offset + length - n, n)
    report = validate(tmp_path, progress=False)
    assert report.ok, report.summary()
    check_accounting(report, total)
    assert report.rejected == Counter({"corrupt_parquet": GROUP})
    f = next(f for f in report.files if f.path.endswith(TRAIN0))
    assert list(f.reasons) == [""] * 4 + ["corrupt_parquet"] * 4 + [""] * 4  # only row group 1
    (p,) = examples_for(report, "corrupt_parquet")
    assert (p.file, p.row, p.column) == (TRAIN0, 4, column)
    assert "row group 1 (rows 4-7) does not decode" in p.message and "its 4 rows are rejected" in p.message
    assert "\n" not in p.message
    # the cache build reads only what validation accepted: no crash after a full pass
    summary = build_cache(report, tmp_path / "cache", progress=False)
    assert summary.counts == {"train": 8, "val": 4, "test": 4}
    kept = open_split(tmp_path / "cache", "train").meta
    assert list(kept["source_row"]) == [0, 1, 2, 3, 8, 9, 10, 11]
    if column == "notes":
        assert kept["notes"].tolist() == [f"host {i} looks fine" for i in (0, 1, 2, 3, 8, 9, 10, 11)]


def _last_byte_of_dictionary(path: Path, column: str) -> int:
    c = chunk(path, 0, column)
    assert c.has_dictionary_page
    return c.data_page_offset - 1  # the dictionary's last value's last byte (little-endian: the sign of a double)


def test_a_flipped_dictionary_byte_is_caught_by_the_page_checksum(tmp_path):
    target, total = dataset(tmp_path, crc=True, compression="none")
    flip(target, _last_byte_of_dictionary(target, "ra"))
    assert pq.read_table(target)["ra"][3].as_py() < 0  # read without verification, a value changes silently
    report = validate(tmp_path, progress=False)
    check_accounting(report, total)
    assert report.rejected == Counter({"corrupt_parquet": GROUP})
    (p,) = examples_for(report, "corrupt_parquet")
    assert (p.file, p.row, p.column) == (TRAIN0, 0, "ra") and "CRC" in p.message


def test_without_checksums_a_flipped_dictionary_byte_is_caught_by_the_position_range(tmp_path):
    """A foreign writer without page checksums: the flipped sign bit makes ra negative, which
    the plausibility check rejects (a change inside the range cannot be told)."""
    target, total = dataset(tmp_path, crc=False, compression="none")
    flip(target, _last_byte_of_dictionary(target, "ra"))
    report = validate(tmp_path, progress=False)
    check_accounting(report, total)
    assert report.rejected == Counter({"bad_position": 1})
    (p,) = examples_for(report, "bad_position")
    assert (p.file, p.row, p.column) == (TRAIN0, 3, "ra") and "[0, 360)" in p.message


def test_the_shard_writer_stores_page_checksums(tmp_path):
    writer = HiveShardWriter(tmp_path, rows_per_shard=8)
    writer.add(make_rows(8, "train", region_id=1))
    writer.add(make_rows(4, "val", region_id=2, start=100))
    writer.add(make_rows(4, "test", region_id=3, start=200))
    writer.close()
    target = tmp_path / TRAIN0
    c = chunk(target, 0, "psfsize_r")
    flip(target, c.data_page_offset - 2)  # inside the (compressed) dictionary page
    report = validate(tmp_path, progress=False)
    assert report.rejected == Counter({"corrupt_parquet": 8})
    assert "CRC" in examples_for(report, "corrupt_parquet")[0].message


def test_the_stage_counts_damaged_rows_and_fails_above_the_limit_naming_the_file(tmp_path):
    from tests.stamps.test_staging import params_for
    from dhs.stamps import stage as stamps_stage
    from dhs.stamps.stage import RejectionRateError

    src = tmp_path / "src"
    target, total = dataset(src)
    flip(target, chunk(target, 2, "dec").data_page_offset, 64)
    m = stamps_stage.run(str(params_for(tmp_path, str(src), max_reject_frac=0.5)), str(tmp_path / "stamps"),
                         str(tmp_path / "m.json"), str(tmp_path / "cache"), progress=False)
    assert m["rows_read"] == total and m["rejected_by_reason"] == {"corrupt_parquet": 4} and m["rows_used"] == 16
    (ex,) = m["rejected_examples"]
    assert (ex["file"], ex["row"], ex["column"], ex["reason"]) == (TRAIN0, 8, "dec", "corrupt_parquet")
    with pytest.raises(RejectionRateError) as e:
        stamps_stage.run(str(params_for(tmp_path, str(src), max_reject_frac=0.1)), str(tmp_path / "stamps"),
                         str(tmp_path / "m.json"), str(tmp_path / "cache"), progress=False)
    assert f"{TRAIN0} row 8 column 'dec': [corrupt_parquet] row group 2" in str(e.value)
    assert str(src) in str(e.value) and "staging" not in str(e.value)


# --------------------------------------------------------------------------- plausibility

def test_implausible_rows_are_rejected_with_a_reason_each(tmp_path):
    train = make_rows(16, "train", region_id=1)
    inj = np.flatnonzero(train["is_control"] == 0)
    ctl = np.flatnonzero(train["is_control"] == 1)
    plant = {
        (inj[0], "ra"): np.nan, (inj[1], "ra"): -0.149, (ctl[0], "ra"): 360.0, (ctl[1], "dec"): 95.0,
        (inj[2], "theta_e_arcsec"): np.nan, (inj[3], "theta_e_arcsec"): -0.5, (inj[4], "theta_e_arcsec"): 0.0,
        (ctl[2], "theta_e_arcsec"): 2.0, (ctl[3], "theta_e_arcsec"): np.inf,
    }
    for (i, col), v in plant.items():
        train.at[i, col] = v
    blank = pixels(1)
    blank[:] = 0.0
    train.at[inj[5], "stamp_npz"] = encode_stamp(blank)                 # all-zero grz with cutout_ok = 1
    one = pixels(2)
    one[2] = 0.0
    train.at[inj[6], "stamp_npz"] = encode_stamp(one)                   # a band with no data
    train.at[ctl[4], "theta_e_arcsec"] = np.nan                          # a control without theta_E: fine
    # NaN as a value, as Spark writes it (pandas' writer would turn it into a null)
    table = pa.Table.from_pandas(train.drop(columns=[KEY]), preserve_index=False)
    for col in ("ra", "dec", "theta_e_arcsec"):
        table = table.set_column(table.schema.get_field_index(col), col, pa.array(train[col].to_numpy(float), from_pandas=False))
    assert table["ra"].null_count == 0 and np.isnan(table["ra"][int(inj[0])].as_py())
    (tmp_path / TRAIN0).parent.mkdir(parents=True)
    pq.write_table(table, tmp_path / TRAIN0)
    write(tmp_path / f"{KEY}=val" / "part-00000.parquet", make_rows(4, "val", region_id=2, start=100))
    report = validate(tmp_path, progress=False)
    assert report.ok, report.summary()
    check_accounting(report, 20)
    assert report.rejected == Counter({"bad_position": 4, "bad_theta_e": 5, "blank_stamp": 2})
    got = {(p.row, p.column, p.reason) for p in report.examples}
    assert got == {(inj[0], "ra", "bad_position"), (inj[1], "ra", "bad_position"), (ctl[0], "ra", "bad_position"),
                   (ctl[1], "dec", "bad_position"), (inj[2], "theta_e_arcsec", "bad_theta_e"),
                   (inj[3], "theta_e_arcsec", "bad_theta_e"), (inj[4], "theta_e_arcsec", "bad_theta_e"),
                   (ctl[2], "theta_e_arcsec", "bad_theta_e"), (ctl[3], "theta_e_arcsec", "bad_theta_e"),
                   (inj[5], "stamp_npz", "blank_stamp"), (inj[6], "stamp_npz", "blank_stamp")}
    assert "['z']" in next(p.message for p in report.examples if p.row == inj[6])
    # a rejected NaN-ra row takes no part in the host check, and the examples reach the metrics, bounded
    ex = report.to_metrics()["rejected_examples"]
    assert len(ex) == 11 and {e["reason"] for e in ex} == {"bad_position", "bad_theta_e", "blank_stamp"}
    assert all(set(e) == {"file", "row", "column", "reason", "message"} and e["file"] == TRAIN0 for e in ex)


def test_rejected_examples_in_the_metrics_are_bounded_and_cover_every_reason(tmp_path):
    train = make_rows(60, "train", region_id=1)
    train["cutout_ok"] = np.where(np.arange(60) < 40, 0, 1)
    train.at[45, "ra"] = -1.0
    write(tmp_path / TRAIN0, train)
    ex = validate(tmp_path, progress=False).to_metrics()["rejected_examples"]
    assert len(ex) == 20 and Counter(e["reason"] for e in ex) == Counter({"cutout_not_ok": 19, "bad_position": 1})


def test_an_optional_column_of_arrow_type_null_is_an_absent_value(tmp_path):
    train = make_rows(8, "train", region_id=1)
    train["arc_snr"] = None          # optional, all missing: pandas writes Arrow type null
    train["psfsize_r"] = None        # required but nullable
    train["survey_note"] = None      # outside the contract
    path = write(tmp_path / TRAIN0, train)
    assert pa.types.is_null(pq.read_schema(path).field("arc_snr").type)
    write(tmp_path / f"{KEY}=val" / "part-00000.parquet", make_rows(4, "val", region_id=2, start=100))
    report = validate(tmp_path, progress=False)
    assert report.ok and report.rejected == Counter() and report.rows_used == 12, report.summary()
    build_cache(report, tmp_path / "cache", progress=False)
    meta = open_split(tmp_path / "cache", "train").meta
    assert meta["arc_snr"].dtype == np.float64 and meta["arc_snr"].isna().all()
    assert meta["psfsize_r"].isna().all() and meta["survey_note"].isna().all()


def test_a_required_column_of_arrow_type_null_is_a_clear_dataset_error(tmp_path):
    train = make_rows(4, "train", region_id=1)
    train["brickname"] = None
    write(tmp_path / TRAIN0, train)
    report = validate(tmp_path, progress=False)
    (p,) = [p for p in report.errors if p.reason == "wrong_type"]
    assert (p.file, p.column) == (TRAIN0, "brickname") and "holds no values (Arrow type null)" in p.message


def test_split_overlaps_name_the_files_rows_and_host_position(tmp_path):
    train = make_rows(4, "train", region_id=1)
    val = make_rows(4, "val", region_id=2, start=100)
    val.loc[2, ["ra", "dec"]] = [150.75, -1.25]      # train's row 0 host? no: a position of its own ...
    train.loc[3, ["ra", "dec"]] = [150.75, -1.25]    # ... shared with train row 3
    val.at[3, "region_id"] = 1                        # and val row 3 claims train's region
    write(tmp_path / TRAIN0, train)
    write(tmp_path / f"{KEY}=val" / "part-00000.parquet", val)
    report = validate(tmp_path, progress=False)
    (region,) = [p for p in report.errors if p.reason == "region_in_two_splits"]
    assert "region_id 1 appears in splits ['train', 'val']" in region.message
    assert f"train: {TRAIN0} row 0" in region.message and f"val: {KEY}=val/part-00000.parquet row 3" in region.message
    (host,) = [p for p in report.errors if p.reason == "host_in_two_splits"]
    assert "host at ra=150.75000 dec=-1.25000 deg" in host.message
    assert f"train: {TRAIN0} row 3" in host.message and f"val: {KEY}=val/part-00000.parquet row 2" in host.message
