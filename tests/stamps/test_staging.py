"""Staging real Phase 4c data from a local directory or from S3 (a real S3 API: moto's server on
loopback), resuming after an interruption, refusing bad input, and a DVC S3 remote round trip."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dhs.contract.validate import DatasetInvalid
import yaml

from tests.conftest import REPO, SECRET, copy_repo
from dhs.stamps.staging import MANIFEST, StagingError, stage
from dhs.stamps import stage as stamps_stage



def digests(root: Path, pattern: str = "*.parquet") -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob(pattern)) if p.is_file()}


def params_for(tmp: Path, source: str, endpoint: str | None = None, **st) -> Path:
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["stamps"].update({"source": source, "s3_endpoint_url": endpoint, "staging_dir": str(tmp / "staging"), "copy_workers": 4,
                        "max_attempts": 2, "s3_timeout_s": 5, "validate_workers": 1, **st})
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def run_stage(tmp: Path, params: Path):
    return stamps_stage.run(str(params), str(tmp / "stamps"), str(tmp / "m.json"), str(tmp / "cache"), progress=False)


def upload(dataset: Path, endpoint: str, bucket: str, prefix: str) -> int:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    n = 0
    for p in sorted(dataset.rglob("*")):
        if p.is_file():
            s3.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(dataset).as_posix()}")
            n += 1
    return n


def test_local_directory_is_staged_validated_cached_and_resumed(sim_dataset, tmp_path):
    m = run_stage(tmp_path, params_for(tmp_path, str(sim_dataset)))
    assert digests(tmp_path / "stamps") == digests(sim_dataset)
    assert m["rows_read"] == 240 == m["rows_used"] and m["source"] == str(sim_dataset)
    assert sum(m["cache"]["rows_by_split"].values()) == 240
    manifest = json.loads((tmp_path / "staging" / MANIFEST).read_text())
    assert set(manifest) == set(digests(sim_dataset))
    # a rerun copies nothing
    again = stage(str(sim_dataset), tmp_path / "staging", progress=False)
    assert again.copied == 0 and again.skipped == len(manifest)


def test_s3_source_through_a_real_s3_server(sim_dataset, tmp_path, s3_server, capsys):
    upload(sim_dataset, s3_server["endpoint"], "survey", "phase4c/v3/stamps")
    # a key with an empty component must not become an absolute path on our side
    boto3.client("s3", endpoint_url=s3_server["endpoint"]).put_object(Bucket="survey", Key="phase4c/v3/stamps//tmp/dhs-escape.txt", Body=b"x")
    m = run_stage(tmp_path, params_for(tmp_path, "s3://survey/phase4c/v3/stamps", s3_server["endpoint"]))
    assert digests(tmp_path / "stamps") == digests(sim_dataset)
    assert not Path("/tmp/dhs-escape.txt").exists() and not list((tmp_path / "staging").rglob("dhs-escape.txt"))
    assert m["rows_used"] == 240 and m["source"] == "s3://survey/phase4c/v3/stamps"
    out = capsys.readouterr()
    # no credential anywhere we write or print
    for text in (out.out, out.err, (tmp_path / "m.json").read_text(), (tmp_path / "params.yaml").read_text(),
                 (tmp_path / "staging" / MANIFEST).read_text()):
        assert SECRET not in text and "dhs-test-key" not in text


@pytest.mark.slow
def test_s3_server_stopped_mid_copy_fails_clearly_and_rerun_resumes(sim_dataset, tmp_path, s3_server):
    # enough shards that the copy is still running when the server goes away
    big = tmp_path / "big"
    for i in range(6):
        for p in sim_dataset.rglob("*.parquet"):
            df = pd.read_parquet(p)
            df["task_id"] = df["task_id"] + f"-{i}"
            dest = big / p.parent.name / f"{p.stem}-{i}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            df.to_parquet(dest, index=False)
    n_files = upload(big, s3_server["endpoint"], "survey", "big")
    params = params_for(tmp_path, "s3://survey/big", s3_server["endpoint"], copy_workers=1)
    env = {**os.environ}
    cmd = [sys.executable, str(REPO / "stages" / "stamps.py"), "--params", str(params), "--out", str(tmp_path / "stamps"),
           "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--cache", str(tmp_path / "cache")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    staged = tmp_path / "staging"
    deadline = time.monotonic() + 60
    while len(list(staged.rglob("*.parquet"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "copy finished before the server could be stopped"
        time.sleep(0.005)
    s3_server["server"].stop()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "FAILED" in err and "staging s3://survey/big failed" in err and "rerun to resume" in err
    assert "not attempted" in err
    done_before = set(json.loads((staged / MANIFEST).read_text()))
    assert 2 <= len(done_before) < n_files
    assert not list(staged.rglob("*.part")) and not (tmp_path / "stamps").exists()

    from moto.server import ThreadedMotoServer

    s3_server["server"] = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_server["port"], verbose=False)
    s3_server["server"].start()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(done_before)} already staged" in res.stdout
    assert digests(tmp_path / "stamps") == digests(big)
    assert json.loads((tmp_path / "m.json").read_text())["rows_used"] == 240 * 6


def test_bad_rows_are_counted_and_bad_files_named(sim_dataset, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sim_dataset, src)
    shard = sorted((src / "region_split=train").glob("*.parquet"))[0]
    df = pd.read_parquet(shard)
    import io

    import numpy as np

    def npz(**arrays):
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    good = np.zeros((64, 64), np.float32)
    df.loc[0, "stamp_npz"] = b"\x00corrupt"
    df.loc[1, "stamp_npz"] = npz(image_g=good, image_r=good)  # no image_z
    df.loc[2, "stamp_npz"] = npz(image_g=good, image_r=np.full((64, 64), np.nan, np.float32), image_z=good)
    df.loc[3, "stamp_npz"] = npz(image_g=np.zeros((63, 64), np.float32), image_r=np.zeros((63, 64), np.float32),
                                 image_z=np.zeros((63, 64), np.float32))
    df.to_parquet(shard, index=False)
    m = run_stage(tmp_path, params_for(tmp_path, str(src), max_reject_frac=0.5))
    assert m["rejected_by_reason"] == {"corrupt_npz": 1, "missing_band": 1, "nonfinite_pixels": 1, "wrong_shape": 1}
    assert m["rows_used"] == 236 and sum(m["cache"]["rows_by_split"].values()) == 236
    # above the rejection threshold the stage fails with a summary
    with pytest.raises(stamps_stage.RejectionRateError, match="4 of 240 rows rejected"):
        run_stage(tmp_path, params_for(tmp_path, str(src), max_reject_frac=0.01))


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing_column", "required column 'psfdepth_r'"),
        ("not_parquet", "not a readable parquet file"),
        ("empty_split", "split(s) ['test'] have files but no usable row"),
    ],
)
def test_unusable_datasets_fail_with_a_message_naming_the_problem(sim_dataset, tmp_path, breakage, message):
    src = tmp_path / "src"
    shutil.copytree(sim_dataset, src)
    shard = sorted((src / "region_split=test").glob("*.parquet"))[0]
    if breakage == "missing_column":
        pd.read_parquet(shard).drop(columns=["psfdepth_r"]).to_parquet(shard, index=False)
    elif breakage == "not_parquet":
        shard.write_bytes(b"PK\x03\x04 this is a zip, not parquet")
    else:  # every row of the test split is a failed cutout
        for f in (src / "region_split=test").glob("*.parquet"):
            pd.read_parquet(f).assign(cutout_ok=0).to_parquet(f, index=False)
    res = subprocess.run([sys.executable, str(REPO / "stages" / "stamps.py"), "--params",
                          str(params_for(tmp_path, str(src), max_reject_frac=0.9)),
                          "--out", str(tmp_path / "stamps"), "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--cache", str(tmp_path / "cache")],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2
    assert message in res.stderr
    assert shard.name in res.stderr
    # messages name the user's source, never the staged copy
    assert str(src) in res.stderr and str(tmp_path / "staging") not in res.stderr
    assert not (tmp_path / "cache").exists()


def test_missing_source_and_empty_bucket_are_clear_errors(tmp_path, s3_server):
    with pytest.raises(StagingError, match="neither 'synthetic', an s3:// URL nor an existing directory"):
        stage(str(tmp_path / "nope"), tmp_path / "staging", progress=False)
    boto3.client("s3", endpoint_url=s3_server["endpoint"]).create_bucket(Bucket="empty")
    with pytest.raises(StagingError, match="s3://empty/x holds no files"):
        stage("s3://empty/x", tmp_path / "staging", endpoint_url=s3_server["endpoint"], progress=False)


@pytest.mark.slow
def test_dvc_push_and_pull_round_trip_through_an_s3_remote(tmp_path, s3_server):
    work, env = copy_repo(tmp_path / "repo", n_stamps=150)
    boto3.client("s3", endpoint_url=s3_server["endpoint"]).create_bucket(Bucket="dvc-store")

    def run(*args):
        res = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
        assert res.returncode == 0, f"{args}: {res.stdout}{res.stderr}"
        return res.stdout

    run("dvc", "repro", "stamps")
    run("dvc", "remote", "add", "-d", "store", "s3://dvc-store/dhs")
    run("dvc", "remote", "modify", "store", "endpointurl", s3_server["endpoint"])
    before = digests(work / "data", "*")
    run("dvc", "push", "stamps")
    assert boto3.client("s3", endpoint_url=s3_server["endpoint"]).list_objects_v2(Bucket="dvc-store")["KeyCount"] > 0
    shutil.rmtree(work / "data")
    shutil.rmtree(work / ".dvc" / "cache")
    run("dvc", "pull", "stamps")
    assert digests(work / "data", "*") == before
    assert SECRET not in (work / ".dvc" / "config").read_text() and SECRET not in (work / "dvc.lock").read_text()


def test_a_part_file_left_by_a_killed_copy_is_removed_and_the_file_copied_again(sim_dataset, tmp_path):
    """The state a copy killed mid-file leaves (its .part, no final file, no manifest entry)
    must not reach validation as a stray non-parquet file: the next run clears it and copies."""
    src = tmp_path / "src"
    shutil.copytree(sim_dataset, src)
    params = params_for(tmp_path, str(src))
    run_stage(tmp_path, params)
    staged = tmp_path / "staging"
    key = sorted(digests(src))[0]
    manifest = json.loads((staged / MANIFEST).read_text())
    manifest.pop(key)
    (staged / MANIFEST).write_text(json.dumps(manifest))
    data = (staged / key).read_bytes()
    (staged / key).unlink()
    (staged / (key + ".part")).write_bytes(data[: len(data) // 3])
    os.utime(src / key, ns=(time.time_ns(), time.time_ns()))  # and the source changed since
    m = run_stage(tmp_path, params)
    assert m["rows_used"] == sum(pq.ParquetFile(f).metadata.num_rows for f in src.rglob("*.parquet"))
    assert not list(staged.rglob("*.part"))
    assert digests(tmp_path / "stamps") == digests(src)


def test_only_the_stages_own_part_files_are_removed_and_a_staging_dir_inside_the_source_is_not_copied(sim_dataset, tmp_path):
    """A staging directory inside the source directory is not part of the source (it would copy
    itself into itself on the next run); a `.part` under the staging directory that is not
    `<key>.part` of a source file is someone else's: it is never deleted, and validation names it."""
    src = tmp_path / "src"
    shutil.copytree(sim_dataset, src)
    params = params_for(tmp_path, str(src), staging_dir=str(src / "staging"))   # inside the source
    run_stage(tmp_path, params)
    m = run_stage(tmp_path, params)
    staged = src / "staging"
    assert not (staged / "staging").exists()   # the staging directory did not copy itself
    assert m["rows_used"] == sum(pq.ParquetFile(f).metadata.num_rows for f in sim_dataset.rglob("*.parquet"))
    theirs = staged / "downloads" / "movie.mkv.part"
    theirs.parent.mkdir()
    theirs.write_bytes(b"half a film")
    with pytest.raises(DatasetInvalid, match=r"downloads/movie.mkv.part: \[not_parquet\]"):
        run_stage(tmp_path, params)
    assert theirs.read_bytes() == b"half a film"


def test_s3_errors_keep_the_slash_between_prefix_and_key(sim_dataset, tmp_path, s3_server):
    upload(sim_dataset, s3_server["endpoint"], "survey", "phase4c/v3")
    from dhs.stamps.staging import _S3, RemoteFile

    s3 = _S3("s3://survey/phase4c/v3", s3_server["endpoint"], 1, 5.0)
    with pytest.raises(StagingError, match=r"copying s3://survey/phase4c/v3/region_split=train/nope\.parquet failed"):
        s3.fetch(RemoteFile("region_split=train/nope.parquet", 10, "x"), tmp_path / "x.part", lambda n: None)


def test_an_evaluation_only_dataset_is_staged_and_cached_and_train_refuses_naming_the_split(sim_dataset, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sim_dataset / "region_split=test", src / "region_split=test")
    res = subprocess.run([sys.executable, str(REPO / "stages" / "stamps.py"), "--params", str(params_for(tmp_path, str(src))),
                          "--out", str(tmp_path / "stamps"), "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--cache", str(tmp_path / "cache")],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "the dataset has no ['train', 'val'] split(s): cached ['test'] only" in res.stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["splits_missing"] == ["train", "val"] and list(m["cache"]["rows_by_split"]) == ["test"]
    assert m["rows_used"] == m["cache"]["rows_by_split"]["test"] > 0
    res = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--arch", "small_cnn", "--params",
                          str(params_for(tmp_path, str(src))), "--cache", str(tmp_path / "cache"), "--models", str(tmp_path / "models")],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("train small_cnn: FAILED: train@small_cnn needs split(s) ['train', 'val'] but the stamp dataset "
                           "(stamps.source) has no region_split=train/val partition")
    assert not (tmp_path / "models").exists()
