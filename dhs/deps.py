"""The dependencies of every stage of dvc.yaml, derived from the code: ``python -m dhs.deps``.

For each stage, from its script (the ``.py`` file in its ``cmd``):

- **code**: every project file the script may run, followed through its imports with ``ast``
  (``dhs.codebase.closure``; imports inside functions count). A package of dhs appears as its
  directory where the stage runs every file of it, else file by file. So an edit to a file reruns
  exactly the stages that run it.
- **params**: every key of params.yaml the code of those files reads, by key where the code names
  the key (``p["completeness"]["plot_fpr"]``, ``p.get("selection")`` the same, ``ev = p["evaluation"]; ev["fprs"]``), the whole
  section where it hands the section on (``GatesConfig.from_params(p["gates"], ...)``). A read is
  ``<params>["<section>"]`` on a params object, which the code names ``p`` or ``params`` (or
  ``<x>.params``); tests/pipeline/test_dvc_deps.py holds the code to that convention. The checks
  in dhs/params run for every stage and change no output: they are not reads. A stage that runs
  once per entry of a params mapping (``foreach: ${finders.external}``) reads that entry only.
- data deps (outputs of other stages, model files) are declared by hand and kept as they are.

``python -m dhs.deps`` prints what differs from dvc.yaml and exits 1 if anything does;
``--write`` rewrites the code and params lists of dvc.yaml in place (the data deps and every
comment outside those lists kept).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

from dhs.codebase import ROOT, closure

CODE_ROOTS = ("dhs/", "stages/")
PARAMS_NAMES = ("p", "params")        # what the code calls a params object (or <x>.params)
NOT_READS = ("dhs/params/",)          # the boundary's checks: run by every stage, change no output
WIDTH = 120                           # dvc.yaml's line width for the derived lists


def load_stages(root: Path = ROOT) -> dict[str, dict]:
    """The stages of dvc.yaml: name -> its definition (the ``do`` block of a foreach stage) and its foreach."""
    doc = yaml.safe_load((root / "dvc.yaml").read_text())
    out = {}
    for name, st in doc["stages"].items():
        body = st.get("do") or st
        out[name] = {"body": body, "foreach": st.get("foreach")}
    return out


def script_of(body: dict, root: Path = ROOT) -> Path:
    return root / next(w for w in body["cmd"].split() if w.endswith(".py"))


def is_code(dep: str) -> bool:
    return dep.startswith(CODE_ROOTS) and "${" not in dep


# --------------------------------------------------------------------------- code

def code_deps(script: Path, root: Path = ROOT) -> list[str]:
    """The files ``script`` runs as dvc.yaml deps: the script, then dhs, a package as its directory
    where every file of it is run."""
    files = {f.relative_to(root).as_posix() for f in closure(script, root)}
    out = sorted(f for f in files if not f.startswith("dhs/"))
    dhs_files = sorted(f for f in files if f.startswith("dhs/"))
    done = set()
    for f in dhs_files:
        parts = f.split("/")
        if len(parts) > 2:   # dhs/<package>/...
            pkg = "/".join(parts[:2])
            every = {p.relative_to(root).as_posix() for p in (root / pkg).rglob("*.py")}
            if every <= files:
                if pkg not in done:
                    out.append(pkg)
                    done.add(pkg)
                continue
        out.append(f)
    return out


# --------------------------------------------------------------------------- params

def _is_params(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id in PARAMS_NAMES) or (isinstance(node, ast.Attribute) and node.attr == "params")


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _section_read(node: ast.AST, sections: Iterable[str]) -> str | None:
    """``<params>["<section>"]`` or ``<params>.get("<section>")`` -> section."""
    if isinstance(node, ast.Subscript) and _is_params(node.value):
        name = _const(node.slice)
        if name in sections:
            return name
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and _is_params(node.func.value) and node.args and _const(node.args[0]) in sections):
        return _const(node.args[0])
    return None


def _key_of_use(parent: ast.AST | None, node: ast.AST) -> str | None:
    """The key a use of a section reads: ``node["key"]`` or ``node.get("key")``; None if the
    section is used any other way (handed on, iterated: the whole section)."""
    if isinstance(parent, ast.Subscript) and parent.value is node:
        return _const(parent.slice)
    if isinstance(parent, ast.Attribute) and parent.value is node and parent.attr == "get":
        call = getattr(parent, "_parent", None)
        if isinstance(call, ast.Call) and call.func is parent and call.args:
            return _const(call.args[0])
    return None


def params_reads(path: Path, sections: Iterable[str]) -> set[str]:
    """The params a file reads: ``section`` or ``section.key``."""
    sections = set(sections)
    tree = ast.parse(Path(path).read_text(), str(path))
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child._parent = node  # type: ignore[attr-defined]
    reads: set[str] = set()
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module))]:
        bound: dict[str, str] = {}   # local name -> the section assigned to it (name = p["section"])
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                sec = _section_read(node.value, sections)
                if sec:
                    bound[node.targets[0].id] = sec
        for node in ast.walk(fn):
            sec = _section_read(node, sections)
            if sec:
                parent = getattr(node, "_parent", None)
                if isinstance(parent, ast.Assign) and isinstance(parent.targets[0], ast.Name) and bound.get(parent.targets[0].id) == sec:
                    continue   # name = p["section"]: its uses decide
                key = _key_of_use(parent, node)
                reads.add(f"{sec}.{key}" if key else sec)
            elif isinstance(node, ast.Name) and node.id in bound and isinstance(node.ctx, ast.Load):
                key = _key_of_use(getattr(node, "_parent", None), node)
                reads.add(f"{bound[node.id]}.{key}" if key else bound[node.id])
    return reads


def params_deps(script: Path, foreach=None, root: Path = ROOT) -> list[str]:
    """The params keys the files ``script`` runs read (a whole section where one is read whole)."""
    from dhs.params.schema import SECTIONS

    reads: set[str] = set()
    for f in closure(script, root):
        rel = f.relative_to(root).as_posix()
        if not rel.startswith(NOT_READS):
            reads |= params_reads(f, SECTIONS)
    whole = {r for r in reads if "." not in r}
    reads = {r for r in reads if r in whole or r.split(".")[0] not in whole}
    m = re.fullmatch(r"\$\{([\w.]+)\}", str(foreach or ""))
    if m and m.group(1) in reads and isinstance(_raw_value(root, m.group(1)), dict):   # once per entry of a mapping: that entry
        reads = (reads - {m.group(1)}) | {f"{m.group(1)}.${{key}}"}
    return sorted(reads)


def _raw_value(root: Path, dotted: str):
    """The value of a dotted key of the params file as written (None where absent)."""
    v = yaml.safe_load((root / "params.yaml").read_text()) or {}
    for part in dotted.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    return v


# --------------------------------------------------------------------------- dvc.yaml

def derive(root: Path = ROOT) -> dict[str, dict[str, list[str]]]:
    """Per stage: ``code`` (derived), ``data`` (declared) and ``params`` (derived)."""
    out = {}
    for name, st in load_stages(root).items():
        script = script_of(st["body"], root)
        data = [str(d) for d in st["body"].get("deps", []) if not is_code(str(d))]
        out[name] = {"code": code_deps(script, root), "data": data, "params": params_deps(script, st["foreach"], root)}
    return out


def differences(root: Path = ROOT) -> list[str]:
    """What dvc.yaml declares against what the code runs and reads, one line per stage and kind."""
    lines = []
    for name, want in derive(root).items():
        body = load_stages(root)[name]["body"]
        have_code = [str(d) for d in body.get("deps", []) if is_code(str(d))]
        have_params = [str(p) for p in body.get("params", [])]
        for kind, have, wanted in (("deps", have_code, want["code"]), ("params", have_params, want["params"])):
            missing, unused = sorted(set(wanted) - set(have)), sorted(set(have) - set(wanted))
            if missing:
                lines.append(f"stage {name}: {kind} missing {missing} (the code runs or reads them)")
            if unused:
                lines.append(f"stage {name}: {kind} {unused} declared but never {'run' if kind == 'deps' else 'read'} by the stage")
    return lines


def _flow(key: str, items: list[str], indent: int) -> list[str]:
    """``key: [a, b, ...]`` wrapped at WIDTH, continuation lines aligned after the bracket."""
    quoted = [f'"{i}"' if "${" in i or ":" in i or i.startswith(("*", "&", "!")) else i for i in items]
    head = " " * indent + f"{key}: ["
    lines, cur = [], head
    for i, q in enumerate(quoted):
        piece = q + (", " if i < len(quoted) - 1 else "]")
        if len(cur) + len(piece.rstrip()) > WIDTH and cur.strip() not in (f"{key}: [",):
            lines.append(cur.rstrip())
            cur = " " * len(head) + piece
        else:
            cur += piece
    lines.append(cur.rstrip())
    return lines if items else [" " * indent + f"{key}: []"]


def rewrite(text: str, derived: dict[str, dict[str, list[str]]]) -> str:
    """dvc.yaml ``text`` with each stage's deps (code then data) and params lists replaced."""
    lines = text.splitlines()
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  ([\w-]+):\s*(#.*)?$", line)
        if m:
            stage = m.group(1)
        k = re.match(r"^(\s+)(deps|params):(.*)$", line)
        if stage in derived and k and len(k.group(1)) in (4, 6):
            indent, key = len(k.group(1)), k.group(2)
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
                                      or (lines[j].lstrip().startswith("- ") and len(lines[j]) - len(lines[j].lstrip()) >= indent)):
                if not lines[j].strip() and (j + 1 >= len(lines) or len(lines[j + 1]) - len(lines[j + 1].lstrip()) <= indent):
                    break
                j += 1
            d = derived[stage]
            out += _flow(key, d["code"] + d["data"] if key == "deps" else d["params"], indent)
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dhs.deps", description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="rewrite the code and params lists of dvc.yaml in place")
    args = ap.parse_args(argv)
    if args.write:
        path = ROOT / "dvc.yaml"
        text = rewrite(path.read_text(), derive())
        from dhs import atomic

        atomic.write_text(path, text)
        print(f"dhs.deps: wrote the derived deps and params of {len(derive())} stages into {path.name}")
    diff = differences()
    for line in diff:
        print(line)
    if not diff:
        print("dhs.deps: dvc.yaml declares exactly what each stage runs and reads")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
