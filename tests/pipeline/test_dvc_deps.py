"""dvc.yaml cannot drift from the code: each stage declares exactly the project files its script
runs and the params keys that code reads (``python -m dhs.deps`` derives both), nothing missing
and nothing it never uses; and an edit to one stage's code reruns that stage only (real DVC)."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from dhs import deps
from dhs.codebase import closure
from tests.conftest import REPO

DVC = str(Path(sys.executable).with_name("dvc"))


def test_dvc_yaml_declares_exactly_what_each_stage_runs_and_reads():
    diff = deps.differences()
    assert not diff, "dvc.yaml and the code disagree; run `python -m dhs.deps --write`:\n" + "\n".join(diff)


def _copy_code(dst: Path) -> None:
    for name in ("dhs", "stages"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, dst / name)


def test_the_check_reports_a_missing_and_an_unused_dependency(tmp_path):
    _copy_code(tmp_path)
    doc = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    infer = doc["stages"]["infer"]["do"]
    infer["deps"] = [d for d in infer["deps"] if d != "dhs/infer/stage.py"] + ["dhs/selection/fit.py"]
    infer["params"] = [k for k in infer["params"] if k != "infer.splits"] + ["gates"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    diff = "\n".join(deps.differences(tmp_path))
    assert "stage infer: deps missing ['dhs/infer/stage.py']" in diff
    assert "stage infer: deps ['dhs/selection/fit.py'] declared but never run" in diff
    assert "stage infer: params missing ['infer.splits']" in diff
    assert "stage infer: params ['gates'] declared but never read" in diff
    # and --write puts it right, keeping the data deps
    (tmp_path / "dvc.yaml").write_text(deps.rewrite((tmp_path / "dvc.yaml").read_text(), deps.derive(tmp_path)))
    assert deps.differences(tmp_path) == []
    assert "data/cache" in yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["infer"]["do"]["deps"]


@pytest.mark.parametrize("code, reads", [
    ('def f(p):\n    return p["completeness"]["plot_fpr"]', {"completeness.plot_fpr"}),
    ('def f(p):\n    ev = p["evaluation"]\n    return ev["fprs"], ev.get("min_expected_controls")',
     {"evaluation.fprs", "evaluation.min_expected_controls"}),
    ('def f(p):\n    return GatesConfig.from_params(p["gates"], p.source)', {"gates"}),
    ('def f(ctx):\n    return dict(ctx.params["simulate"], device="cpu")', {"simulate"}),
    ('def f(params):\n    inf = params["infer"]\n    g(inf)\n    return inf["splits"]', {"infer", "infer.splits"}),
    ('def f(p, counts):\n    return counts["train"], p["train"]["lr"]', {"train.lr"}),
    ('def f(p):\n    return Cfg.from_params(p.get("selection"), p.source)', {"selection"}),
])
def test_params_reads_are_found_by_key_or_whole(tmp_path, code, reads):
    from dhs.params.schema import SECTIONS

    f = tmp_path / "m.py"
    f.write_text(code + "\n")
    assert deps.params_reads(f, SECTIONS) == reads


def _params_annotated(arg: ast.arg) -> bool:
    return arg.annotation is not None and "Params" in ast.unparse(arg.annotation)


def test_params_objects_go_by_the_names_the_derivation_reads():
    """The derivation sees ``p[...]``, ``params[...]`` and ``<x>.params[...]``: so every argument
    typed Params is called p or params, every params object built is bound to one of those names,
    and no stage code reads the raw file (``load_params``) beside the checked one."""
    bad = []
    for path in sorted((REPO / "dhs").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("dhs/params/") or rel in ("dhs/experiments.py", "dhs/deps.py"):
            continue
        tree = ast.parse(path.read_text())
        ours = any(isinstance(n, ast.ImportFrom) and n.module == "dhs.params" and any(a.name == "Params" for a in n.names)
                   for n in ast.walk(tree))   # the checked params file, not another type of that name
        for node in ast.walk(tree):
            if ours and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bad += [f"{rel}:{node.lineno} {node.name}({a.arg}: Params)" for a in node.args.args + node.args.kwonlyargs
                        if _params_annotated(a) and a.arg not in deps.PARAMS_NAMES]
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                fn = ast.unparse(node.value.func)
                if fn in ("as_params", "load", "Params", "dhs.params.load") and not all(
                        isinstance(t, ast.Name) and t.id in deps.PARAMS_NAMES for t in node.targets):
                    bad.append(f"{rel}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("load_params"):
                bad.append(f"{rel}:{node.lineno} reads the raw params file")
    assert not bad, "params objects the dependency derivation cannot see:\n" + "\n".join(bad)


def test_the_closure_follows_lazy_imports():
    files = closure(REPO / "stages" / "infer.py")
    assert REPO / "dhs" / "evaluation" / "seeing.py" in files          # through the score table, inside a function
    assert REPO / "dhs" / "models" / "checkpoint.py" in files and REPO / "dhs" / "__init__.py" in files
    assert REPO / "dhs" / "finder" / "training.py" not in files         # infer does not run the training loop


# --------------------------------------------------------------------------- real DVC

def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DVC, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _placeholders(root: Path) -> None:
    """Every output and data dependency of the pipeline as a small placeholder, so that DVC can
    record the stages (``dvc commit``) without running them."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        paths = {Path(o.fs_path) for st in repo.index.stages for o in st.outs}
        paths |= {Path(d.fs_path) for st in repo.index.stages for d in st.deps if not Path(d.fs_path).exists()}
    for p in sorted(paths):
        if p.suffix:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("placeholder\n")
        else:
            p.mkdir(parents=True, exist_ok=True)
            (p / "placeholder").write_text("placeholder\n")


def _changed(root: Path) -> set[str]:
    """The stages `dvc status` lists, less those dvc.yaml marks always_changed (cutouts: the
    viewer's answers can change without any input changing)."""
    out = _dvc(root, "status", "--json")
    assert out.returncode == 0, out.stderr
    always = {name for name, st in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items()
              if (st.get("do") or st).get("always_changed")}
    return {s for s in json.loads(out.stdout or "{}") if s.split("@")[0] not in always}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A copy of the code and dvc.yaml with every stage recorded in dvc.lock."""
    root = tmp_path_factory.mktemp("deps_status")
    _copy_code(root)
    assert _dvc(root, "init", "--no-scm", "-q").returncode == 0
    _placeholders(root)
    out = _dvc(root, "commit", "-f", "-q")
    assert out.returncode == 0, out.stderr
    assert _changed(root) == set()
    return root


@pytest.mark.parametrize("edited, expected", [
    ("dhs/stamps/staging.py", {"stamps"}),
    ("dhs/finder/training.py", {f"train@{a}" for a in yaml.safe_load((REPO / "params.yaml").read_text())["train"]["archs"]}),
])
def test_a_comment_in_one_stage_module_reruns_that_stage_only(recorded, edited, expected):
    """Real `dvc status` after a comment is added to one module: only the stage that runs it
    (its consumers follow when its outputs change, which a comment cannot do)."""
    path = recorded / edited
    before = path.read_text()
    try:
        path.write_text(before + "\n# a comment\n")
        assert _changed(recorded) == expected
    finally:
        path.write_text(before)
    assert _changed(recorded) == set()


def test_a_library_module_reruns_the_stages_that_run_it(recorded):
    """dhs/evaluation/fitting.py (calibration maths) is run by calibration and known_lenses, not by
    the stages that never calibrate."""
    path = recorded / "dhs" / "evaluation" / "fitting.py"
    before = path.read_text()
    try:
        path.write_text(before + "\n# a comment\n")
        changed = {c.split("@")[0] for c in _changed(recorded)}
    finally:
        path.write_text(before)
    users = {name for name, st in deps.load_stages().items()
             if REPO / "dhs" / "evaluation" / "fitting.py" in closure(deps.script_of(st["body"]))}
    assert changed == users and "calibration" in users and "infer" not in users, textwrap.shorten(str(changed), 300)
