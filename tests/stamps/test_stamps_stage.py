"""The `stamps` stage end to end: determinism, row accounting, atomic output, bad params, real DVC."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dhs.contract import decode_stamp
from tests.conftest import REPO, copy_repo
from dhs.stamps import stage as stamps_stage



def small_params(tmp: Path, n: int = 240, name: str = "params.yaml", **sim) -> Path:
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["simulate"].update({"n_stamps": n, "n_regions": 12, "failed_cutout_fraction": 0.02, "device": "cpu", **sim})
    p["stamps"]["rows_per_shard"] = 50
    path = tmp / name
    path.write_text(yaml.safe_dump(p))
    return path


def n_rows(params: Path) -> int:
    """The rows the simulated survey of ``params`` holds: n_stamps and the control-only stamps."""
    from dhs.simulate.config import SimConfig
    from dhs.simulate.population import sample_population

    return len(sample_population(SimConfig.from_params(yaml.safe_load(params.read_text())["simulate"])))


def _with_stamps(params: Path, **stamps) -> Path:
    """``params`` with these ``stamps`` settings, rewritten in place."""
    p = yaml.safe_load(params.read_text())
    p["stamps"].update(stamps)
    params.write_text(yaml.safe_dump(p))
    return params


def tree_digest(root: Path) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(root.rglob("*")) if f.is_file()}


def test_stage_is_deterministic_and_accounts_for_every_row(tmp_path):
    params = small_params(tmp_path)
    m1 = stamps_stage.run(str(params), str(tmp_path / "a"), str(tmp_path / "m1.json"), str(tmp_path / "ca"), progress=False)
    m2 = stamps_stage.run(str(params), str(tmp_path / "b"), str(tmp_path / "m2.json"), str(tmp_path / "cb"), progress=False)
    d1, d2 = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert d1 == d2 and len(d1) >= 5  # byte-identical shards, several per split
    assert tree_digest(tmp_path / "ca") == tree_digest(tmp_path / "cb")  # and cache
    assert all(k.startswith("region_split=") and k.endswith(".parquet") for k in d1)
    assert m1 == m2
    n = n_rows(params)
    assert n > 240   # the test split's control-only stamps (simulate.extra_controls)
    assert m1["rows_read"] == n == m1["rows_used"] + m1["rows_rejected"]
    assert m1["rejected_by_reason"] == {"cutout_not_ok": m1["rows_rejected"]} and m1["rows_rejected"] > 0
    per_split = sum(v["used"] + sum(v["rejected"].values()) for s in m1["by_split_label"].values() for v in s.values())
    assert per_split == n
    assert m1["region_disjoint"] and m1["host_disjoint"]
    assert set(m1["n_regions_by_split"]) == {"train", "val", "test"}
    metrics_file = json.loads((tmp_path / "m1.json").read_text())
    assert metrics_file["rows_read"] == n


def test_stage_output_reads_as_hive_parquet_with_decodable_stamps(tmp_path):
    import pyarrow.dataset as ds

    params = small_params(tmp_path, n=120)
    stamps_stage.run(str(params), str(tmp_path / "out"), str(tmp_path / "m.json"), str(tmp_path / "cache"), progress=False)
    table = ds.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table()
    df = table.to_pandas()
    assert len(df) == n_rows(params) and set(df.region_split) == {"train", "val", "test"}
    ok = df[df.cutout_ok == 1]
    img = decode_stamp(ok.stamp_npz.iloc[0], stamp_size=64)
    assert img.shape == (3, 64, 64) and img.dtype.name == "float32"
    assert (df.is_control == (df.lens_model == "CONTROL")).all()


@pytest.mark.slow
def test_killed_stage_leaves_previous_output_untouched(tmp_path):
    params = small_params(tmp_path, n=120)
    out = tmp_path / "stamps"
    stamps_stage.run(str(params), str(out), str(tmp_path / "m.json"), str(tmp_path / "cache"), progress=False)
    before = tree_digest(out)
    big = small_params(tmp_path, n=20000, name="big.yaml")
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / "stamps.py"), "--params", str(big), "--out", str(out),
                             "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--cache", str(tmp_path / "cache")], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".stamps.*.tmp/region_split=*/*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, "stage ended before writing a shard"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tree_digest(out) == before
    assert json.loads((tmp_path / "m.json").read_text())["rows_read"] == n_rows(params)
    # the next run clears the dead run's temporary directory
    stamps_stage.run(str(params), str(out), str(tmp_path / "m.json"), str(tmp_path / "cache"), progress=False)
    assert not list(tmp_path.glob(".stamps.*.tmp"))
    assert tree_digest(out) == before


def test_writer_processes_write_and_validate_what_one_process_does(tmp_path):
    """stamps.write_workers: 2 writes the same shards and cache, and its writers' validation of
    each shard (overlapping the rendering) accounts for every row as the validator run afterwards
    does: the same rejections by reason, the same metrics."""
    runs = {}
    for workers in (0, 2):
        params = _with_stamps(small_params(tmp_path, n=300, name=f"w{workers}.yaml", failed_cutout_fraction=0.03),
                              write_workers=workers, rows_per_shard=40)
        m = stamps_stage.run(str(params), str(tmp_path / f"s{workers}"), str(tmp_path / f"m{workers}.json"), str(tmp_path / f"c{workers}"),
                             progress=False)
        runs[workers] = (m, tree_digest(tmp_path / f"s{workers}"), tree_digest(tmp_path / f"c{workers}"))
    (m0, s0, c0), (m2, s2, c2) = runs[0], runs[2]
    assert len(s0) >= 8 and s2 == s0 and c2 == c0
    assert m0["rows_read"] == n_rows(params) and m0["rejected_by_reason"].get("cutout_not_ok", 0) > 0
    assert (tmp_path / "m2.json").read_text() == (tmp_path / "m0.json").read_text()
    assert not list(tmp_path.glob(".c*"))   # the kept pixels' scratch directories are gone


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["stamps"].update(sourc="synthetic"), "unknown keys ['sourc'] in 'stamps'"),
        (lambda p: p["simulate"].update(n_stamps=-5), "n_stamps must be a positive integer"),
        (lambda p: p["simulate"]["priors"].pop("theta_e_arcsec"), "priors missing ['theta_e_arcsec']"),
    ],
)
def test_bad_params_exit_with_a_clear_message(tmp_path, edit, message):
    p = yaml.safe_load(open(small_params(tmp_path)))
    edit(p)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(p))
    res = subprocess.run([sys.executable, str(REPO / "stages" / "stamps.py"), "--params", str(path), "--out", str(tmp_path / "o"),
                          "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--cache", str(tmp_path / "c")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2
    assert message in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_dvc_repro_stamps_in_a_fresh_copy(tmp_path):
    """`dvc repro stamps` on a copy of the repository, with real DVC, then `dvc status` is clean."""
    work, env = copy_repo(tmp_path / "repo", n_stamps=200)
    run = lambda *a: subprocess.run(a, cwd=work, env=env, capture_output=True, text=True)  # noqa: E731
    res = run("dvc", "repro", "stamps")
    assert res.returncode == 0, res.stdout + res.stderr
    lock = yaml.safe_load((work / "dvc.lock").read_text())
    assert "stamps" in lock["stages"]
    metrics = json.loads((work / "metrics" / "stamps.json").read_text())
    assert metrics["rows_read"] == n_rows(work / "params.yaml") > 200   # with the test split's control-only stamps
    assert len(list((work / "data" / "stamps").rglob("*.parquet"))) >= 3
    status = run("dvc", "status", "stamps")
    assert status.returncode == 0 and "up to date" in status.stdout.lower()
    # the stage's headline file beside its detail file (DVC's metrics file, summary.json, is the report's)
    assert json.loads((work / "metrics" / "stamps.headline.json").read_text())["rows_read"] == n_rows(work / "params.yaml")
    assert run("dvc", "metrics", "show", "--json").returncode == 0


# --------------------------------------------------------------------------- killed runs

def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            info = _ppid_and_state(int(d.name))
            if info is not None and info[0] == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    info = _ppid_and_state(pid)
    return info is not None and info[1] != "Z"


def _kill_stage_once(tmp_path: Path, params: Path, seen: str, min_children: int) -> tuple[Path, list[int]]:
    """Run the stamps stage script until a file matching ``seen`` (a glob under its data folder)
    exists and it has ``min_children`` child processes, then SIGKILL it: (data folder, children)."""
    data = tmp_path / "data"
    cmd = [sys.executable, str(REPO / "stages" / "stamps.py"), "--params", str(params), "--out", str(data / "stamps"),
           "--metrics", str(tmp_path / "m.json"), "--plots", str(tmp_path / "plots"), "--cache", str(data / "cache")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    children: list[int] = []
    while len(children) < min_children:
        assert proc.poll() is None and time.monotonic() < deadline, f"stage ended before {seen} and its workers were seen"
        if list(data.glob(seen)):
            children = _children(proc.pid)
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the workers notice their parent is gone and end (no PPID-1 process blocked on a pipe forever)
    end = time.monotonic() + 60
    while any(_alive(w) for w in children) and time.monotonic() < end:
        time.sleep(0.1)
    return data, children


@pytest.mark.slow
def test_killed_validation_leaves_no_orphan_workers_and_the_next_run_clears_its_temporaries(tmp_path):
    """Killed while its workers validate (and keep the decoded pixels for the cache): the workers
    end, and the next run removes the dataset's and the kept pixels' temporaries."""
    params = _with_stamps(small_params(tmp_path, n=3000, name="big.yaml"), validate_workers=2, rows_per_shard=100)
    data, workers = _kill_stage_once(tmp_path, params, ".cache.decoded-*.tmp/run-*/*.npy", 1)
    assert not [w for w in workers if _alive(w)], "validation workers outlived the killed stage"
    assert list(data.glob(".cache.decoded-*.tmp")) and list(data.glob(".stamps.*.tmp"))  # what the kill left ...
    small = small_params(tmp_path, n=120)
    stamps_stage.run(str(small), str(data / "stamps"), str(tmp_path / "m.json"), str(data / "cache"), progress=False)
    assert not list(data.glob(".cache.*.tmp")) and not list(data.glob(".stamps.*.tmp"))  # ... the next run clears
    assert json.loads((tmp_path / "m.json").read_text())["rows_read"] == n_rows(small)


@pytest.mark.slow
def test_killed_while_writer_processes_write_shards_leaves_no_orphan_writers(tmp_path):
    """Killed while its writer processes (stamps.write_workers) encode, write and validate
    shards: they notice their parent is gone and end; nothing reaches the output."""
    params = _with_stamps(small_params(tmp_path, n=2000, name="w.yaml"), write_workers=2, rows_per_shard=40)
    data, writers = _kill_stage_once(tmp_path, params, ".stamps.*.tmp/region_split=*/*.parquet", 2)
    assert not [w for w in writers if _alive(w)], "writer processes outlived the killed stage"
    assert not (data / "stamps").exists()


def test_a_temporary_is_swept_only_once_its_writer_is_dead(tmp_path):
    """A live writer's temporary survives a sweep; after SIGKILL of the writer it is removed."""
    from dhs import atomic

    out = tmp_path / "out"
    code = ("import sys, time; from dhs import atomic\n"
            f"with atomic.atomic_dir({str(out)!r}) as tmp:\n"
            "    (tmp / 'part').write_text('x'); print(tmp, flush=True); time.sleep(600)\n")
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        tmp = Path(writer.stdout.readline().strip())
        assert tmp.is_dir() and tmp.name.startswith(".out.")
        assert atomic.sweep_stale(out) == [] and tmp.is_dir()   # a live run's temporary is kept
        with atomic.atomic_dir(out) as mine:                      # and a second writer leaves it alone too
            (mine / "f").write_text("y")
        assert tmp.is_dir() and (out / "f").read_text() == "y"
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert atomic.sweep_stale(out) == [tmp] and not tmp.exists()
    finally:
        writer.kill()
        writer.wait()
