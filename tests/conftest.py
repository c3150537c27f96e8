"""Shared fixtures: a small simulated Phase 4c dataset and a real S3 server (moto) on loopback."""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# `make test` runs one pytest-xdist worker per core, and torch starts one OpenMP thread per core in
# every worker and in every stage a test starts: more threads than cores, which by default spin at
# each barrier while the thread they wait for is descheduled. Passive waiting lets a worker use
# every core while the other waits on a subprocess, without the spinning.
if os.environ.get("PYTEST_XDIST_WORKER") is not None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def small_sim_params(**over) -> dict:
    p = yaml.safe_load(open(REPO / "params.yaml"))["simulate"]
    p = copy.deepcopy(p)
    # no control-only stamps: exactly n_stamps rows (the stamps stage's tests and the pipeline copies keep them)
    p.update({"n_stamps": 240, "n_regions": 10, "failed_cutout_fraction": 0.0, "device": "cpu", "extra_controls": {}})
    p.update(over)
    return p


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> Path:
    """240 simulated stamps in the contract, 20 rows per shard (read-only: copy before editing)."""
    from dhs.simulate.config import SimConfig
    from dhs.simulate.dataset import write_synthetic_dataset

    root = tmp_path_factory.mktemp("sim") / "stamps"
    write_synthetic_dataset(SimConfig.from_params(small_sim_params()), root, rows_per_shard=20, progress=False)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SECRET = "dhsSecretKey-do-not-log-7f3a"


@pytest.fixture
def s3_server(monkeypatch):
    """A real S3 API (moto's server mode) on a loopback port; credentials through the AWS env chain."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "dhs-test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    handle = {"server": server, "port": port, "endpoint": f"http://127.0.0.1:{port}"}
    yield handle
    handle["server"].stop()


@pytest.fixture(scope="session")
def sim_cache(sim_dataset, tmp_path_factory) -> Path:
    """The decoded cache of ``sim_dataset`` (read-only)."""
    from dhs.imaging.cache import build_cache
    from dhs.contract import validate

    out = tmp_path_factory.mktemp("cache") / "cache"
    build_cache(validate(sim_dataset, progress=False), out, progress=False)
    return out


def copy_repo(dest: Path, n_stamps: int = 200) -> tuple[Path, dict]:
    """A git-initialised copy of this repository's files with a small simulation, and the env
    (PATH with this venv's dvc) to run DVC in it."""
    import shutil
    import subprocess
    import sys

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dest / f)
    p = yaml.safe_load(open(dest / "params.yaml"))
    p["simulate"].update(n_stamps=n_stamps, n_regions=10, device="cpu")
    (dest / "params.yaml").write_text(yaml.safe_dump(p))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest, env


# A test's Spark session lives for seconds on a few hundred rows: the JVM's optimising compiler
# (C2) and parallel GC never pay back their warm-up there. The client compiler alone and the serial
# collector take ~7 s (a fifth) off a tiny pipeline's completeness stage on 2 cores.
SHORT_JVM = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}


def tiny_pipeline_copy(dest: Path, n_stamps: int, epochs: int = 1, split_fractions: dict | None = None) -> tuple[Path, dict, dict]:
    """``copy_repo`` set up for a whole pipeline in a few minutes: the uniform population's bright
    arcs (a few training steps give scores with information in them), eight training steps an epoch, a small
    bootstrap, Spark on two cores, eager rendering (compiling the fused kernels costs ~35 s a run
    here; compiled against eager rendering is tests/simulate/test_fused.py's, and the stamps
    stage's own tests keep the default). Returns the copy, its env and its params (to adjust, then write)."""
    work, env = copy_repo(dest, n_stamps=n_stamps)
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["simulate"].update(n_regions=8, split_fractions=split_fractions or {"train": 0.5, "val": 0.25, "test": 0.25}, population="uniform",
                         compile="off")
    p["train"].update(epochs=epochs, steps_per_epoch=8, batch_size=32, warmup_steps=1, min_arc_snr=0.0, balance_classes=False)
    p["completeness"].update(n_bootstrap=20, spark={"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g",
                                                    "conf": SHORT_JVM})
    return work, env, p


@pytest.fixture(scope="session")
def spark():
    """A real local Spark session (2 cores, few shuffle partitions), shared by the tests."""
    from dhs.measurement.spark import spark_session

    s = spark_session({"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g", "conf": SHORT_JVM})
    yield s
    s.stop()


@pytest.fixture(scope="session", autouse=True)
def project_outputs_untouched():
    """No test may write into the project's own outputs (a stage run with default paths from the
    repository root would): their bytes are the same after the session as before it."""
    import hashlib

    def digest(p: Path) -> str | None:
        try:
            return hashlib.sha256(p.read_bytes()).hexdigest()
        except FileNotFoundError:   # renamed away between listing and reading (a `dvc repro` beside the tests)
            return None

    def state():
        return {p.relative_to(REPO).as_posix(): digest(p)
                for d in ("metrics", "plots", "dvclive") if (REPO / d).is_dir() for p in sorted((REPO / d).rglob("*"))
                if p.is_file() and "report" not in p.parts}

    before = state()
    yield
    after = state()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"tests wrote into the project's outputs: {changed[:10]}"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """requests honours *_PROXY variables: keep the tests' loopback HTTP traffic off any proxy of the test host."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: skipped here without one (CI never has one);
    benchmarks/gpu_check.py runs them on a GPU machine."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no GPU here; benchmarks/gpu_check.py runs the gpu tests where a device is lent")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
