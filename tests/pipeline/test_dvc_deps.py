"""dvc.yaml cannot drift from the code: for every stage, the project files its script imports,
followed transitively (ast, lazy imports inside functions included), must each be covered by a
declared dependency (the file itself or a directory above it). A change to any file a stage
runs then reruns the stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("dhs", "stages")


def _module_file(module: str) -> Path | None:
    """The file of a project module (``dhs.x.y`` -> dhs/x/y.py or dhs/x/y/__init__.py)."""
    base = REPO.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _with_packages(module: str) -> list[str]:
    """``dhs.x.y`` and the packages Python runs on the way to it: dhs, dhs.x."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(path: Path) -> set[str]:
    """Project modules named by the import statements of ``path`` (any depth in the file)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from dhs.x import y": dhs.x, and dhs.x.y where y is a module
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and _module_file(name) is not None:
                out.update(m for m in _with_packages(name) if _module_file(m) is not None)
    return out


def closure(script: Path) -> set[Path]:
    """Every project file that running ``script`` may import, the script included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(_module_file(m) for m in imported_modules(f))
    return seen


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _script(stage: dict) -> Path:
    cmd = (stage.get("do") or stage)["cmd"].split()
    return REPO / next(w for w in cmd if w.endswith(".py"))


def _deps(stage: dict) -> list[str]:
    return [d for d in (stage.get("do") or stage).get("deps", []) if "${" not in d]


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_imported_project_file_is_a_declared_dependency(name):
    stage = stages()[name]
    deps = [REPO / d for d in _deps(stage)]
    for d in deps:  # code deps must exist (data deps appear when the stages before have run)
        rel = d.relative_to(REPO)
        assert rel.parts[0] not in PACKAGES or d.exists(), f"stage {name}: dependency {rel} does not exist"
    uncovered = sorted(str(f.relative_to(REPO)) for f in closure(_script(stage))
                       if not any(f == d or d in f.parents for d in deps))
    assert not uncovered, (f"stage {name} ({_script(stage).relative_to(REPO)}) runs {uncovered}, which no dependency in "
                           f"dvc.yaml covers; add the file or its package to the stage's deps")


def test_the_check_finds_a_missing_dependency():
    """The check itself: the infer stage runs the PSF rule (dhs/evaluation/seeing.py) through the
    score table; without dhs/evaluation among its deps it must be reported."""
    files = closure(REPO / "stages" / "infer.py")
    assert REPO / "dhs" / "evaluation" / "seeing.py" in files
    assert REPO / "dhs" / "finder" / "checkpoint.py" in files and REPO / "dhs" / "__init__.py" in files
    deps = [REPO / d for d in _deps(stages()["infer"]) if d != "dhs/evaluation"]
    assert any(f.is_relative_to(REPO / "dhs" / "evaluation") and not any(f == d or d in f.parents for d in deps) for f in files)
