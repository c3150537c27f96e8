"""The project's own import graph, read from the source with ``ast`` (nothing is imported).

- ``imported_modules(path)``: the project modules a file's import statements name, at any depth
  of the file (imports inside functions included), with the packages Python runs on the way.
- ``closure(path)``: every project file that running ``path`` may import, itself included.

One reader serves every place that must know which code a computation runs: the dependencies of
each stage in dvc.yaml (``python -m dhs.deps``), the training code digest that decides whether a
checkpoint may be resumed, and the layers test.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dhs", "stages")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module (``dhs.x.y`` -> dhs/x/y.py or dhs/x/y/__init__.py), or None."""
    base = root.joinpath(*module.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _with_packages(module: str) -> list[str]:
    """``dhs.x.y`` and the packages Python runs on the way to it: dhs, dhs.x."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Project modules named by the import statements of ``path`` (any depth in the file)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from dhs.x import y": dhs.x, and dhs.x.y where y is a module
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES and module_file(name, root) is not None:
                out.update(m for m in _with_packages(name) if module_file(m, root) is not None)
    return out


def closure(path: Path, root: Path = ROOT) -> set[Path]:
    """Every project file that running ``path`` may import, ``path`` included."""
    seen: set[Path] = set()
    todo = [Path(path).resolve()]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo.extend(module_file(m, root) for m in imported_modules(f, root))
    return seen
