"""The completeness stage on a real standalone Spark cluster: a master and one worker started on
loopback by the test (pyspark's own `spark-class`), the stage pointed at it through
`completeness.spark.master`, and its metrics identical to a `local[2]` run of the same scores.
The worker's work directory proves the executor ran there, not in the driver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.completeness.test_completeness import random_scores
from tests.conftest import REPO, SHORT_JVM

SHORT_JVM_OPTS = SHORT_JVM["spark.driver.extraJavaOptions"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([str(_spark_class()), *args], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait_for_worker(ui_port: int, timeout_s: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2).read())
            if any(w.get("state") == "ALIVE" for w in state.get("workers", [])):
                return state
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no ALIVE worker registered with the master within {timeout_s} s")


def _run_stage(tmp_path: Path, name: str, master: str) -> dict:
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["completeness"].update(n_bootstrap=50, spark={"master": master, "shuffle_partitions": 4, "driver_memory": "1g",
                                                    "conf": {"spark.executor.memory": "1g", "spark.cores.max": "1", **SHORT_JVM,
                                                             "spark.executor.extraJavaOptions": SHORT_JVM_OPTS}})
    p["completeness"]["bins"] = {"theta_e_arcsec": [0.5, 1.0, 1.5, 2.0, 2.5], "psf_r_arcsec": [0.8, 1.2, 1.6],
                                 "arc_snr": [0, 10, 40, float("inf")]}
    p["sensitivity"]["variables"] = ["theta_e_arcsec"]
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, str(REPO / "stages" / "completeness.py"), "--arch", "m", "--params", str(tmp_path / f"{name}.yaml"),
                        "--scores", str(tmp_path / "scores"), "--metrics", str(tmp_path / name / "metrics"),
                        "--plots", str(tmp_path / name / "plots")], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads((tmp_path / name / "metrics" / "m.json").read_text())


@pytest.mark.slow
def test_completeness_on_a_standalone_cluster_equals_local(tmp_path):
    (tmp_path / "scores").mkdir()
    random_scores(3000, seed=11).to_parquet(tmp_path / "scores" / "m.parquet", index=False)
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    work_dir = tmp_path / "worker-work"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1", "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOG_DIR": str(tmp_path / "logs"), "SPARK_WORKER_DIR": str(work_dir), "SPARK_DAEMON_JAVA_OPTS": SHORT_JVM_OPTS}
    master = _start(["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
                    tmp_path / "master.log", env)
    worker = _start(["org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--cores", "1",
                     "--memory", "1g", "--webui-port", str(worker_ui), "--work-dir", str(work_dir)], tmp_path / "worker.log", env)
    try:
        _wait_for_worker(ui)
        on_cluster = _run_stage(tmp_path, "cluster", f"spark://127.0.0.1:{port}")
        state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5).read())
    finally:
        for proc in (worker, master):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    apps = state.get("completedapps", []) + state.get("activeapps", [])
    assert apps, f"the master ran no application: {state}"
    executors = list(work_dir.glob("app-*/*/stderr"))
    assert executors, f"no executor ran on the worker (nothing under {work_dir})"
    local = _run_stage(tmp_path, "local", "local[2]")
    for key in ("auroc", "headline", "thresholds", "rows", "excluded_from_bins"):
        assert on_cluster[key] == local[key], key
