"""``python -m dhs.selection``: add a selection function's P(found) to a catalogue.

    python -m dhs.selection annotate --model data/selection/small_cnn.json --input lenses.csv --output lenses_sf.parquet
        [--operating-point fpr_0.01] [--columns theta_e_arcsec=THETA_E,magnification=MU ...] [--prefix sf_]
    python -m dhs.selection describe --model data/selection/small_cnn.json

``annotate`` reads a CSV or parquet catalogue with the function's inputs as columns (names mapped
with ``--columns input=column``), and writes it back with ``<prefix>p``, ``<prefix>lo``,
``<prefix>hi`` (P(found) and its band; NaN outside the calibrated range) and
``<prefix>in_range`` (False where any input or term lies outside what the model was fitted on).
Every row is written; the rows outside the range are counted and the inputs that put them there
named. A missing column is an error naming it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dhs.errors import StageError
from dhs.selection.function import INPUTS, TERMS, SelectionFunction, SelectionFunctionError


class CatalogueError(StageError, ValueError):
    pass


def _read(path: Path):
    import pandas as pd

    if not path.exists():
        raise CatalogueError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path)
    raise CatalogueError(f"{path}: unknown catalogue format {suffix!r}; use .csv or .parquet")


def _write(df, path: Path) -> None:
    from dhs import atomic

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".txt"):
        raise CatalogueError(f"{path}: unknown output format {suffix!r}; use .csv or .parquet")
    with atomic.writing(path) as tmp:
        if suffix in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def parse_columns(spec: list[str]) -> dict[str, str]:
    out = {}
    for item in spec:
        for pair in item.split(","):
            if not pair:
                continue
            if "=" not in pair:
                raise CatalogueError(f"--columns {pair!r}: write input=column, e.g. theta_e_arcsec=THETA_E")
            k, v = pair.split("=", 1)
            if k not in INPUTS:
                raise CatalogueError(f"--columns {pair!r}: {k!r} is not an input; the inputs are {list(INPUTS)}")
            out[k] = v
    return out


def annotate(model: Path, input_path: Path, output: Path, operating_point: str | None = None,
             columns: dict[str, str] | None = None, prefix: str = "sf_") -> dict:
    import pandas as pd

    sf = SelectionFunction.load(model, operating_point)
    cat = _read(input_path)
    columns = {k: (columns or {}).get(k, k) for k in INPUTS}
    missing = [f"{k} (column {c!r})" if c != k else k for k, c in columns.items() if c not in cat.columns]
    if missing:
        raise CatalogueError(f"{input_path}: missing column(s) {', '.join(missing)}; the selection function needs "
                             f"{list(INPUTS)} (map other names with --columns input=column)")
    x = {}
    for k, c in columns.items():
        v = pd.to_numeric(cat[c], errors="coerce")
        bad = v.isna() & cat[c].notna()
        if bad.any():
            raise CatalogueError(f"{input_path}: column {c!r} row {int(np.flatnonzero(bad.to_numpy())[0])}: "
                                 f"{cat[c][bad].iloc[0]!r} is not a number")
        x[k] = v.to_numpy(float)
    p, lo, hi = sf(**x)
    ok = np.isfinite(p)
    out = cat.copy()
    for name, v in (("p", p), ("lo", lo), ("hi", hi), ("in_range", ok)):
        if f"{prefix}{name}" in out.columns:
            raise CatalogueError(f"{input_path}: already has a column {prefix}{name!r}; choose another --prefix")
        out[f"{prefix}{name}"] = v
    _write(out, output)
    return {"rows": int(len(cat)), "in_range": int(ok.sum()), "outside": int((~ok).sum()),
            "why_outside": sf.describe_outside(x) if (~ok).any() else [], "operating_point": sf.name}


def describe(model: Path) -> str:
    sf = SelectionFunction.load(model)
    d = sf.doc
    lines = [repr(sf), f"operating points: {', '.join(sf.operating_points)} (primary {d['primary']})",
             f"finder: {d.get('finder')}", "inputs (calibrated range):"]
    for k, (u, desc) in INPUTS.items():
        lo, hi = sf.input_range[k]
        lines.append(f"  {k:<20} [{lo:.4g}, {hi:.4g}] {u}: {desc}")
    lines.append("terms (calibrated range):")
    for k, (desc, mono) in TERMS.items():
        lo, hi = sf.term_range[k]
        lines.append(f"  {k:<24} [{lo:.4g}, {hi:.4g}]{' non-decreasing' if mono > 0 else ''}: {desc}")
    for name, v in (d.get("validation") or {}).items():
        lines.append(f"held-out validation {name}: {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dhs.selection", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("annotate", help="add P(found) columns to a catalogue")
    a.add_argument("--model", required=True, type=Path)
    a.add_argument("--input", required=True, type=Path)
    a.add_argument("--output", required=True, type=Path)
    a.add_argument("--operating-point", default=None)
    a.add_argument("--columns", action="append", default=[], help="input=column, comma-separated or repeated")
    a.add_argument("--prefix", default="sf_")
    d = sub.add_parser("describe", help="what a selection-function file holds")
    d.add_argument("--model", required=True, type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "describe":
            print(describe(args.model))
            return 0
        r = annotate(args.model, args.input, args.output, args.operating_point, parse_columns(args.columns), args.prefix)
    except (CatalogueError, SelectionFunctionError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"annotated {r['rows']} rows with the {r['operating_point']} selection function: {r['in_range']} in range, "
          f"{r['outside']} outside (p, lo, hi NaN; in_range False) -> {args.output}")
    for line in r["why_outside"]:
        print(f"  outside: {line}")
    return 0
