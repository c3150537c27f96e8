"""dvc.yaml cannot drift from the code: for every stage, the project files its script imports,
followed transitively (ast, lazy imports inside functions included), must each be covered by a
declared dependency (the file itself or a directory above it). A change to any file a stage
runs then reruns the stage."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO

from dhs.codebase import PACKAGES, closure, imported_modules  # noqa: F401 (imported_modules: the layers test)


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
