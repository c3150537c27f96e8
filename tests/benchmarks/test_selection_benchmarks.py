"""benchmarks/bench_selection.py and benchmarks/closure.py run and print what they promise: the
numpy-only evaluation timing of a real selection-function file, the closure coverage table, and
benchmarks/bench_external.py's throughput of exported finders beside the native one."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from tests.conftest import REPO


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_selection_times_a_numpy_only_evaluation(tmp_path, capsys):
    from dhs.selection.closure import analytic_selection_file, population_metadata

    sim = yaml.safe_load(open(REPO / "params.yaml"))["simulate"]
    path = tmp_path / "sf.json"
    analytic_selection_file(path, population_metadata(sim, n_stamps=4000, n_regions=40, extra_controls={}), n_replicates=10)
    assert _load("bench_selection").main(["--model", str(path), "--points", "20000", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "loaded heavy modules: []" in out
    assert "evaluate 20,000 points (p, lo, hi)" in out and "(20,000 in range)" in out and "ratio" in out


@pytest.mark.slow
def test_closure_benchmark_prints_the_coverage_table(tmp_path, capsys):
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["simulate"].update(n_stamps=5000, n_regions=60)
    p["completeness"].update(n_bootstrap=100, spark={"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g"})
    p["selection"].update(n_replicates=10, n_draws=100)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    assert _load("closure").main(["--seeds", "2", "--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "out" / "closure.json").read_text())
    assert m["n_seeds"] == 2 and m["expected_binned_coverage"] == pytest.approx(0.834, abs=0.001)
    for est in ("wilson", "bootstrap", "model"):
        c = m["coverage"][est]
        assert c["n"] > 0 and f"{c['coverage']:8.3f}" in out
    assert "held-out validation" in out and "wall time" in out


def test_bench_external_scores_both_exports_beside_the_native_finder(sim_cache, tmp_path, capsys):
    """benchmarks/bench_external.py: throughput of ONNX and TorchScript against the native path, and
    their largest logit difference (fresh weights here: no trained model under --models)."""
    assert _load("bench_external").main(["--models", str(tmp_path / "none"), "--cache", str(sim_cache), "--n", "48",
                                         "--batch", "16"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ")}
    assert {"native", "onnx", "torchscript"} <= set(lines), out
    for fmt in ("onnx", "torchscript"):
        assert "ratio to native" in lines[fmt] and float(lines[fmt].split("|")[-1].split()[-1]) < 1e-5, lines[fmt]
