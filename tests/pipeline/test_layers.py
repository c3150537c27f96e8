"""Imports flow one way: every module of dhs imports only its own package and the packages below
it in the module map of dhs/__init__.py (lazy imports inside functions included)."""

from __future__ import annotations

from tests.conftest import REPO
from tests.pipeline.test_dvc_deps import imported_modules

# top to bottom, as in the module map of dhs/__init__.py
LAYERS = ("experiments", "report", "known_lenses", "gates", "calibration", "selection", "completeness", "finder", "baseline", "stamps",
          "cutouts", "evaluation", "models", "runner", "params", "simulate", "contract", "headline", "atomic", "")


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


FILES = sorted((REPO / "dhs").rglob("*.py"))


def test_the_layers_name_every_package_of_dhs():
    assert {layer(".".join(f.relative_to(REPO).with_suffix("").parts)) for f in FILES} - {"__init__"} == set(LAYERS) - {""}


def test_no_module_imports_a_package_above_its_own():
    upward = []
    for path in FILES:
        own = layer(".".join(path.relative_to(REPO).with_suffix("").parts).replace(".__init__", ""))
        own = "" if own == "__init__" else own
        bad = sorted(m for m in imported_modules(path) if m.startswith("dhs") and LAYERS.index(layer(m)) < LAYERS.index(own))
        upward += [f"{path.relative_to(REPO)} ({own or 'dhs'}) imports {bad}" for _ in bad[:1]]
    assert not upward, "imports against the module map of dhs/__init__.py:\n" + "\n".join(upward)
