"""Reading the report's inputs without trusting them to exist: every other stage may not have run.

``Inputs`` resolves every path under one root (the repository, or a test's temporary world) and
returns ``Loaded`` results that carry either the value or the reason there is none, so a section
can print "not run: <stage> (<path> not found)" or the parse error instead of crashing.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dhs.report.html import flatten


@dataclass
class Loaded:
    """A value read from ``path``; ``value`` is None when the file is missing or unreadable."""

    path: str
    value: Any = None
    missing: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


class Inputs:
    """Paths of every report input, relative to ``root``."""

    def __init__(self, root: str | Path = ".", cache_dir: str | Path | None = None):
        self.root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / "data/cache"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def json(self, rel: str) -> Loaded:
        p = self.path(rel)
        if not p.is_file():
            return Loaded(rel, missing=True)
        try:
            value = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            return Loaded(rel, error=f"{rel} is not readable JSON: {exc}")
        if not isinstance(value, dict):   # every stage writes an object: anything else is not its file
            return Loaded(rel, error=f"{rel} holds a JSON {type(value).__name__}, not the object its stage writes")
        return Loaded(rel, value)

    def csv(self, rel: str | Path) -> Loaded:
        p = self.path(str(rel))
        if not p.is_file():
            return Loaded(str(rel), missing=True)
        try:
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            return Loaded(str(rel), error=f"{rel} is not a readable CSV: {exc}")
        return Loaded(str(rel), rows)

    def tsv_xy(self, rel: str) -> Loaded:
        """A dvclive TSV (header ``step<TAB>name``) as two float lists."""
        p = self.path(rel)
        if not p.is_file():
            return Loaded(rel, missing=True)
        try:
            lines = [ln.split("\t") for ln in p.read_text().splitlines() if ln.strip()]
            xs = [float(a[0]) for a in lines[1:]]
            ys = [float(a[1]) for a in lines[1:]]
        except (OSError, ValueError, IndexError) as exc:
            return Loaded(rel, error=f"{rel} is not a two-column step/value TSV: {exc}")
        return Loaded(rel, (xs, ys))

    def pngs(self, rel_dir: str, pattern: str = "*.png") -> list[Path]:
        """PNG files under ``rel_dir`` matching ``pattern``, sorted (empty when absent)."""
        d = self.path(rel_dir)
        return sorted(p for p in d.glob(pattern) if p.is_file()) if d.is_dir() else []

    def rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)


def find_number(obj: Any, include: Sequence[str], prefer: Sequence[str] = (), exclude: Sequence[str] = ()) -> tuple[str, float] | None:
    """The first numeric leaf whose dotted key holds every word of ``include`` and none of
    ``exclude``; keys that also hold a word of ``prefer`` win. Lets the report pick a headline
    number (ECE after calibration, say) without fixing the producing stage's key names."""
    best: tuple[int, str, float] | None = None
    for key, v in flatten(obj, max_depth=6):
        k = key.lower()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            continue
        if not all(w in k for w in include) or any(w in k for w in exclude):
            continue
        rank = sum(1 for w in prefer if w in k)
        if best is None or rank > best[0]:
            best = (rank, key, float(v))
    return None if best is None else (best[1], best[2])


def gate_rows(doc: Any) -> list[dict]:
    """Gate results as a list of dicts with at least ``name`` and ``passed``, whichever of the
    usual shapes the gates stage writes: a list under ``gates``/``results``/``checks``, or a
    mapping name -> {passed, ...}."""
    if not isinstance(doc, Mapping):
        return []
    for key in ("gates", "results", "checks"):
        v = doc.get(key)
        if isinstance(v, list):
            return [dict(g) for g in v if isinstance(g, Mapping)]
        if isinstance(v, Mapping):
            return [{"name": k, **g} if isinstance(g, Mapping) else {"name": k, "passed": g} for k, g in v.items()]
    return [{"name": k, **g} for k, g in doc.items() if isinstance(g, Mapping) and "passed" in g]


def gates_passed(doc: Any) -> bool | None:
    """``all_passed`` when given, else the AND of every gate's ``passed``; None if neither exists."""
    if isinstance(doc, Mapping) and isinstance(doc.get("all_passed"), bool):
        return doc["all_passed"]
    rows = gate_rows(doc)
    vals = [g.get("passed") for g in rows if isinstance(g.get("passed"), bool)]
    return all(vals) if vals else None


# ----------------------------------------------------------------------------- provenance

def git_state(root: Path) -> dict:
    """Commit, short status and branch of the checkout holding ``root`` (``None`` outside git)."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return r.stdout.rstrip("\n") if r.returncode == 0 else None

    commit = (git("rev-parse", "HEAD") or "").strip() or None
    if commit is None:
        return {"commit": None, "dirty": None, "branch": None}
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    return {"commit": commit, "dirty": bool(status), "changed": [ln[3:] for ln in status.splitlines()][:30],
            "branch": (git("rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None}


_HASH_KEYS = ("md5", "etag", "checksum", "hash")


def dvc_lock_outputs(path: Path, skip_stages: Iterable[str] = ("report",)) -> Loaded:
    """(stage, path, hash, size, nfiles) of every output recorded in dvc.lock, except ``skip_stages``
    (the report's own entry is the previous run's)."""
    if not path.is_file():
        return Loaded(str(path.name), missing=True)
    try:
        lock = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        return Loaded(str(path.name), error=f"{path.name} is not readable YAML: {exc}")
    skip = set(skip_stages)
    rows = []
    for stage, entry in (lock.get("stages") or {}).items():
        if stage in skip or not isinstance(entry, Mapping):
            continue
        for out in entry.get("outs") or []:
            if not isinstance(out, Mapping):
                continue
            h = next((str(out[k]) for k in _HASH_KEYS if k in out and k != "hash"), str(out.get("hash", "")))
            rows.append({"stage": stage, "path": out.get("path"), "hash": h, "size": out.get("size"), "nfiles": out.get("nfiles")})
    return Loaded(str(path.name), rows)


def safe_name(arch: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", arch):
        raise ValueError(f"arch name {arch!r} may hold only letters, digits, '_', '.', '-' (it names files)")
    return arch
