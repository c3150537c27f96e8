"""Two tiers (the module map of dhs/__init__.py states them):

- the **library tier**: packages that know nothing of the pipeline's stages, in an order inside
  which imports flow downwards only (LIBRARY, top to bottom);
- the **stage tier**: one package per stage body (a package holding ``stage.py``), which imports
  the library tier and never another stage package. The tools (``dhs.experiments``) sit beside
  the stages and follow the same rule.

Lazy imports inside functions count."""

from __future__ import annotations

from tests.conftest import REPO
from dhs.codebase import imported_modules

# top to bottom: a library package imports only the packages after it in this list
LIBRARY = ("measurement", "cutouts", "models", "imaging", "evaluation", "runner", "simulate", "params", "contract", "headline",
           "atomic", "errors", "devices", "codebase", "")
TOOLS = ("experiments", "deps")
FILES = sorted((REPO / "dhs").rglob("*.py"))


def package(module: str) -> str:
    """``dhs.x.y`` -> ``x``; ``dhs`` (its __init__) -> ''."""
    parts = module.replace(".__init__", "").split(".")
    return parts[1] if len(parts) > 1 else ""


def module_of(path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def stage_packages() -> set[str]:
    """The stage tier: every package of dhs that holds a stage body (``stage.py``)."""
    return {p.parent.name for p in (REPO / "dhs").glob("*/stage.py")}


def test_every_package_is_in_one_tier():
    packages = {package(module_of(f)) for f in FILES}
    stages = stage_packages()
    assert stages and not stages & set(LIBRARY), f"stage packages {sorted(stages & set(LIBRARY))} are listed as library"
    unplaced = packages - stages - set(LIBRARY) - set(TOOLS)
    assert not unplaced, f"packages of dhs in neither tier: {sorted(unplaced)}; add a library package to LIBRARY in its place"
    assert set(LIBRARY) - {""} <= packages, f"LIBRARY names packages that do not exist: {sorted(set(LIBRARY) - packages - {''})}"


def crossing(own: str, imported: str, stages: set[str]) -> str | None:
    """Why package ``own`` may not import package ``imported``, or None where it may."""
    if imported in (own, ""):
        return None
    if own in stages or own in TOOLS:
        if imported in stages:
            return "a stage package imports another stage package"
        return None if imported in LIBRARY else "imports a tool"
    if imported in stages:
        return "a library package imports a stage package"
    return None if imported in LIBRARY and LIBRARY.index(imported) > LIBRARY.index(own) else "imports a library package above its own"


def violations() -> list[str]:
    stages, bad = stage_packages(), []
    for path in FILES:
        own = package(module_of(path))
        why = [(m, crossing(own, package(m), stages)) for m in sorted(imported_modules(path)) if m.startswith("dhs")]
        bad += [f"{path.relative_to(REPO)} ({own or 'dhs'}) imports {m}: {w}" for m, w in why if w][:1]
    return bad


def test_stage_packages_import_only_the_library_tier():
    bad = [v for v in violations() if "stage package imports" in v or "tool" in v]
    assert not bad, "\n".join(bad)


def test_library_imports_flow_down():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_the_rule_catches_each_kind_of_crossing():
    stages = stage_packages()
    assert crossing("gates", "finder", stages) == "a stage package imports another stage package"
    assert crossing("models", "gates", stages) == "a library package imports a stage package"
    assert crossing("atomic", "params", stages) == "imports a library package above its own"
    assert crossing("gates", "models", stages) is None and crossing("models", "imaging", stages) is None
    assert crossing("report", "experiments", stages) == "imports a tool"
