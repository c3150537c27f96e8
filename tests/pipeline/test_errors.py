"""The error contract (docs/errors.md): how a stage script ends, checked on real subprocesses.

- refused input (a bad params value, a missing input file): one line
  ``<stage>[ <arch>]: FAILED: <message>`` naming the key or the file, status ``EXIT_REFUSED``;
- a gate that is not PASS with ``gates.enforce: true``: status ``EXIT_GATE_FAILED``;
- any other exception: its traceback and a last line naming it, status ``EXIT_INTERNAL``;
- Ctrl-C: one line, status ``EXIT_INTERRUPTED``;
- every exception class of dhs derives from ``dhs.errors.StageError``, or is listed here with why not.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import pickle
import pkgutil
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

import dhs
from dhs.errors import StageError
from dhs.runner import EXIT_GATE_FAILED, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED
from tests.conftest import REPO

ENV = {**os.environ, "DHS_HEARTBEAT_S": "0"}


def stage(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / script), *args], cwd=cwd, capture_output=True, text=True,
                          env=ENV, timeout=300)


def params_file(tmp_path, **sections) -> str:
    """The repository's params.yaml with ``sections`` merged in, written to tmp_path."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, values in sections.items():
        p[name] = {**p[name], **values}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return str(path)


def test_the_exit_statuses_are_distinct_and_keep_pythons_meanings():
    codes = [EXIT_OK, EXIT_INTERNAL, EXIT_REFUSED, EXIT_GATE_FAILED, EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes)
    # 1: Python's status for an uncaught exception; 2: argparse's for a refused command line
    assert (EXIT_OK, EXIT_INTERNAL, EXIT_REFUSED) == (0, 1, 2)
    assert stage("report.py", "--no-such-option", cwd=REPO).returncode == EXIT_REFUSED


# --- refused input: real stage scripts ------------------------------------------------------------

def test_a_bad_params_value_is_refused_in_one_line_naming_the_key(tmp_path):
    params = params_file(tmp_path, train={"epochs": -1})
    res = stage("calibration.py", "--arch", "small_cnn", "--params", params, "--scores", str(tmp_path / "scores"),
                "--metrics", str(tmp_path / "m"), cwd=tmp_path)
    assert res.returncode == EXIT_REFUSED, res.stderr[-2000:]
    assert res.stderr.splitlines() == [f"calibration small_cnn: FAILED: {params}: train.epochs must be an integer >= 1, got -1"]
    assert not (tmp_path / "m").exists()


def test_a_missing_input_file_is_refused_in_one_line_naming_the_file(tmp_path):
    params = params_file(tmp_path)
    res = stage("completeness.py", "--arch", "small_cnn", "--params", params, "--scores", str(tmp_path / "scores"),
                "--metrics", str(tmp_path / "m"), "--plots", str(tmp_path / "p"), cwd=tmp_path)
    assert res.returncode == EXIT_REFUSED, res.stderr[-2000:]
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("completeness small_cnn: FAILED: "), res.stderr[-2000:]
    assert f"{tmp_path / 'scores' / 'small_cnn.parquet'} not found" in lines[0] and "dvc repro infer@small_cnn" in lines[0]
    assert not (tmp_path / "m").exists() and not (tmp_path / "p").exists()


# --- the runner with small stage functions of its own: gate, internal error, interrupt, location --

TOY = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    from dhs.errors import StageError
    from dhs.runner import Option, Stage

    def gate(params, baseline):
        # the real metadata gate on a baseline file, and the gates stage's verdict and exit status
        from dhs.gates.config import GatesConfig
        from dhs.gates.metadata import metadata_gate
        from dhs.gates.result import tally_verdicts
        from dhs.params import load

        p = load(params)
        cfg = GatesConfig.from_params(p["gates"], p.source)
        result = metadata_gate(baseline, cfg)
        print(f"toy: metadata_only {{result['status']}}")
        return {{**tally_verdicts([result]), "enforce": cfg.enforce}}

    def crash(params, baseline):
        return {{"rows": 3}}["columns"]

    def refuse(params, baseline):
        raise StageError("ra is not finite; fix the row or drop it", file="hosts.csv", row=3, key="ra")

    def wait(params, baseline):
        print("toy: ready", flush=True)
        time.sleep(60)

    what = sys.argv[1]
    if what == "gate":
        from dhs.gates.stage import status
    run = {{"gate": gate, "crash": crash, "refuse": refuse, "wait": wait}}[what]
    sys.exit(Stage("toy", run, status=status if what == "gate" else None,
                   options=(Option("--baseline", "baseline", "baseline.json"),)).main(sys.argv[2:]))
""")


def _sigint_as_at_a_terminal() -> None:
    """A pytest-xdist worker ignores SIGINT, and an ignored signal stays ignored across exec (Python
    then installs no KeyboardInterrupt handler): give the stage the default disposition a shell gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def toy(tmp_path, what: str, *args: str, **popen) -> subprocess.Popen:
    script = tmp_path / "toy_stage.py"
    script.write_text(TOY.format(root=str(REPO)))
    return subprocess.Popen([sys.executable, str(script), what, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=_sigint_as_at_a_terminal, **popen)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.parametrize("enforce", [True, False])
def test_a_failed_gate_with_enforce_exits_with_the_gate_status(tmp_path, enforce):
    """A leaky baseline (observing conditions alone give test AUC 0.9) fails the real metadata gate."""
    (tmp_path / "baseline.json").write_text(json.dumps({"leak": {"auc_test": 0.9}}))
    params = params_file(tmp_path, gates={"enforce": enforce})
    rc, out, err = finish(toy(tmp_path, "gate", "--params", params, "--baseline", str(tmp_path / "baseline.json")))
    assert "toy: metadata_only FAIL" in out, out + err
    if enforce:
        assert rc == EXIT_GATE_FAILED and "toy: FAIL (metadata_only) and gates.enforce is true: stopping" in err, err
    else:
        assert rc == EXIT_OK and "not stopping because gates.enforce is false" in err, err
    assert "Traceback" not in err


def test_a_gate_that_passes_exits_ok(tmp_path):
    (tmp_path / "baseline.json").write_text(json.dumps({"leak": {"auc_test": 0.5}}))
    params = params_file(tmp_path, gates={"enforce": True})
    rc, out, err = finish(toy(tmp_path, "gate", "--params", params, "--baseline", str(tmp_path / "baseline.json")))
    assert rc == EXIT_OK and "toy: metadata_only PASS" in out and err == "", out + err


def test_an_internal_error_keeps_its_traceback_and_exits_with_the_internal_status(tmp_path):
    rc, _, err = finish(toy(tmp_path, "crash"))
    assert rc == EXIT_INTERNAL, err
    assert err.startswith("Traceback (most recent call last):") and 'in crash\n    return {"rows": 3}["columns"]' in err, err
    assert err.splitlines()[-1].startswith("toy: INTERNAL ERROR: KeyError: 'columns'; an error dhs did not foresee"), err
    assert "FAILED" not in err


def test_a_stage_error_names_its_file_row_and_key(tmp_path):
    rc, _, err = finish(toy(tmp_path, "refuse"))
    assert rc == EXIT_REFUSED
    assert err.splitlines() == ["toy: FAILED: hosts.csv, row 3, ra: ra is not finite; fix the row or drop it"]


def test_ctrl_c_is_one_line_and_the_interrupted_status(tmp_path):
    proc = toy(tmp_path, "wait")
    assert proc.stdout.readline() == "toy: ready\n"
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == EXIT_INTERRUPTED, err
    assert err.splitlines() == ["toy: INTERRUPTED: every output is written whole or not at all, so each is the previous one or "
                                "the new one; rerun the stage to finish"]


# --- the base --------------------------------------------------------------------------------------

def test_stage_error_names_where_and_keeps_its_text_across_processes():
    exc = StageError("not finite", file="scores.parquet", row=7, key="sky_weight")
    assert str(exc) == "scores.parquet, row 7, sky_weight: not finite"
    assert (exc.file, exc.row, exc.key) == ("scores.parquet", 7, "sky_weight")
    assert str(StageError("just a message")) == "just a message"
    assert str(pickle.loads(pickle.dumps(exc))) == str(exc)   # a worker process's error arrives whole


def test_callers_catching_the_python_bases_still_catch_the_errors():
    from dhs.evaluation.scores import ScoresError
    from dhs.models.checkpoint import CheckpointError, TrainingError
    from dhs.params import ParamsError

    with pytest.raises(ValueError):
        raise ParamsError("bad")
    with pytest.raises(ValueError):
        raise ScoresError("bad")
    with pytest.raises(RuntimeError):
        raise CheckpointError(REPO / "x.pt", "bad")
    assert issubclass(TrainingError, StageError) and issubclass(ParamsError, StageError)


# Exception classes of dhs that are not StageError, and why.
NOT_STAGE_ERRORS = {
    # it wraps whatever a shard writer process raised, a fault of dhs included: the runner shows it with
    # its traceback as an internal error (a full disk inside it is still recognised as a full disk)
    "dhs.contract.shards.ShardWriteError": "wraps any failure of a writer process",
    # dhs/selection/function.py is copied on its own beside a selection-function file and imports numpy
    # only (tests/selection/test_function.py); the catalogue CLI catches its error by name, and a stage
    # meets it only on a file the stage has just written itself
    "dhs.selection.function.SelectionFunctionError": "its module imports numpy only",
}


def dhs_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(dhs.__path__, "dhs.") if not m.name.endswith("__main__")]


def exception_classes() -> dict[str, type]:
    """Every exception class defined at the top level of a module of dhs, by qualified name."""
    found = {}
    for name in dhs_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{attr}"] = obj
    return found


def test_every_exception_class_of_dhs_is_a_stage_error_or_says_why_not():
    classes = exception_classes()
    assert len(classes) > 25 and "dhs.params.fields.ParamsError" in classes
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, StageError))
    assert outside == sorted(NOT_STAGE_ERRORS), (
        f"exception classes of dhs that do not derive from dhs.errors.StageError: {sorted(set(outside) - set(NOT_STAGE_ERRORS))}; "
        f"derive them (class X(StageError, ValueError)) or list them in NOT_STAGE_ERRORS with why (docs/errors.md)")


def test_no_exception_class_hides_inside_a_function():
    """The import scan above sees module-level classes only: a class deriving from an exception
    inside a function or class body would escape it."""
    names = {n.rsplit(".", 1)[1] for n in exception_classes()} | {"Exception", "BaseException", "ValueError", "RuntimeError",
                                                                  "KeyError", "OSError", "TypeError", "StageError"}
    nested = []
    for path in sorted((REPO / "dhs").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = set(map(id, tree.body))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and id(node) not in top:
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if bases & names or any(b.endswith(("Error", "Exception")) for b in bases):
                    nested.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not nested, nested


def test_a_population_params_cannot_fill_is_refused_input_not_an_internal_error():
    """Too few regions for three splits is a params value the stage refuses by key (a StageError),
    not a traceback."""
    import numpy as np

    from dhs.errors import StageError
    from dhs.simulate.population import assign_region_splits

    with pytest.raises(StageError, match="simulate.n_regions"):
        assign_region_splits(np.arange(2), {"train": 0.5, "val": 0.25, "test": 0.25}, "salt")
