"""The curated known-lens catalogue: build it from the published catalogues, write it, read it.

Rows (one per sky position), columns and units:

- ``name`` (str), ``ra_deg``, ``dec_deg`` (ICRS, degrees),
- ``theta_e_arcsec``: Einstein radius where a lens model published one (SLACS/BELLS SIE fits,
  close to the circularised radius); NaN when unknown (all lenscat and DESI rows),
- ``z_lens``, ``z_source``: redshifts, NaN when unknown,
- ``grade``: ``confirmed`` (SLACS/BELLS: spectroscopic selection and HST imaging),
  ``confident`` or ``probable`` (the lenscat / DESI grading, kept as published),
- ``source``: the catalogue the row comes from (``SLACS``, ``BELLS``, ``lenscat``, ``DESI``),
- ``reference``: the publication(s) for the row; ``also_in``: the other catalogues listing the
  same position (``;``-separated, empty when none).

Selection (each dropped row is counted by reason, see ``CurationReport``):

1. SLACS/BELLS: every lens of ``slacs_bells_known_lenses.csv`` (60; positions from lenscat).
2. lenscat (Vujeva et al. 2024): ``type == galaxy`` and ``grading == confident`` only.
3. DESI candidates (Huang et al. 2020, 2021; Storfer et al. 2022): galaxy-scale rows with a
   grade (``confident`` or ``probable``), the grade kept per row.
4. Bad coordinates (NaN, RA outside [0, 360), Dec outside [-90, 90]) and positions outside the
   DR10 South footprint (``dhs.cutouts.footprint``) are rejected.
5. Positions within ``match_radius_arcsec`` (2 arcsec) of each other, within or across
   catalogues, are one lens: the best-documented row is kept (SLACS/BELLS before lenscat
   before DESI; then the row with more of theta_E / z_lens / z_source known; then the first),
   the others are counted as duplicates and named in ``also_in``.

The file starts with ``#`` comment lines (selection, counts, references); ``read_catalog``
skips them. Reference strings contain ``#`` (URL fragments), so never read it with
``pandas.read_csv(comment="#")``.

Build: ``python -m dhs.known_lenses.catalog --slacs-bells S.csv --lenscat L.csv --desi D.csv``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from dhs import atomic
from dhs.cutouts.footprint import DEC_MAX_DEG, MIN_ABS_GALACTIC_LAT_DEG, footprint_reason
from dhs.errors import StageError
from dhs.params.schema import GRADES  # best first

COLUMNS = ("name", "ra_deg", "dec_deg", "theta_e_arcsec", "z_lens", "z_source", "grade", "source", "reference", "also_in")
SOURCES = ("SLACS", "BELLS", "lenscat", "DESI")
_SOURCE_RANK = {"SLACS": 0, "BELLS": 0, "lenscat": 1, "DESI": 2}
MATCH_RADIUS_ARCSEC = 2.0
DEFAULT_PATH = Path(__file__).with_name("known_lenses.csv")

SLACS_REFERENCE = ("Bolton et al. (2008) - arXiv:0805.1931 | Auger et al. (2009) - arXiv:0911.2471 | "
                   "positions: Vujeva et al. (2024) lenscat - arXiv:2406.04398")
BELLS_REFERENCE = "Brownstein et al. (2012) - arXiv:1112.3683 | positions: Vujeva et al. (2024) lenscat - arXiv:2406.04398"
REFERENCES = (
    "SLACS: Bolton et al. (2006) ApJ 638, 703 - arXiv:astro-ph/0511453; Bolton et al. (2008) ApJ 682, 964 - arXiv:0805.1931; "
    "Auger et al. (2009) ApJ 705, 1099 - arXiv:0911.2471",
    "BELLS: Brownstein et al. (2012) ApJ 744, 41 - arXiv:1112.3683",
    "lenscat: Vujeva, Ligon, Tang et al. (2024) - arXiv:2406.04398 (per-row original references in `reference`)",
    "DESI Legacy Surveys candidates: Huang et al. (2020) ApJ 894, 78 - arXiv:1906.00970; Huang et al. (2021) ApJ 909, 27 - "
    "arXiv:2005.04730; Storfer et al. (2022) - arXiv:2206.02764",
    "DESI Legacy Imaging Surveys: Dey et al. (2019) AJ 157, 168 - arXiv:1804.08657",
)


class CatalogError(StageError, ValueError):
    pass


@dataclass
class CurationReport:
    """Row accounting of a build: per input catalogue rows read, kept and dropped by reason."""

    by_source: dict[str, dict] = field(default_factory=dict)
    duplicates_removed: int = 0
    duplicates_by_source: dict[str, int] = field(default_factory=dict)
    rows_out: int = 0
    by_grade: dict[str, int] = field(default_factory=dict)
    by_catalogue: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"by_source": self.by_source, "duplicates_removed": self.duplicates_removed,
                "duplicates_by_source": self.duplicates_by_source, "rows_out": self.rows_out,
                "by_grade": self.by_grade, "by_catalogue": self.by_catalogue}


def _need(df: pd.DataFrame, cols: tuple[str, ...], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CatalogError(f"{what}: missing column(s) {missing}; have {list(df.columns)}")


def _numeric(s: pd.Series) -> np.ndarray:
    """Numbers, NaN for text such as "not measured" or "-"."""
    return pd.to_numeric(s, errors="coerce").to_numpy(np.float64)


def _frame(name, ra, dec, theta, z_l, z_s, grade, source, reference) -> pd.DataFrame:
    n = len(ra)

    def col(v, dtype=object):
        return np.full(n, v, dtype=dtype) if np.ndim(v) == 0 else np.asarray(v, dtype=dtype)

    return pd.DataFrame({"name": col(name).astype(str), "ra_deg": col(ra, np.float64), "dec_deg": col(dec, np.float64),
                         "theta_e_arcsec": col(theta, np.float64), "z_lens": col(z_l, np.float64), "z_source": col(z_s, np.float64),
                         "grade": col(grade), "source": col(source), "reference": col(reference), "also_in": col("")})


def normalise_slacs_bells(df: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """SLACS/BELLS rows in the catalogue schema (grade ``confirmed``); nothing is deselected."""
    _need(df, ("name", "ra_deg", "dec_deg", "theta_e_arcsec", "z_lens", "z_source", "survey"), "SLACS/BELLS catalogue")
    survey = df["survey"].astype(str).str.strip().str.upper()
    bad = ~survey.isin(["SLACS", "BELLS"])
    if bad.any():
        raise CatalogError(f"SLACS/BELLS catalogue: survey must be SLACS or BELLS, found {sorted(survey[bad].unique())[:5]}")
    ref = np.where(survey == "SLACS", SLACS_REFERENCE, BELLS_REFERENCE)
    out = _frame(df["name"], _numeric(df["ra_deg"]), _numeric(df["dec_deg"]), _numeric(df["theta_e_arcsec"]),
                 _numeric(df["z_lens"]), _numeric(df["z_source"]), "confirmed", survey.to_numpy(), ref)
    return out, Counter()


def normalise_lenscat(df: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """lenscat's confident galaxy-scale lenses; other rows are counted by why they are left out."""
    _need(df, ("name", "RA [deg]", "DEC [deg]", "zlens", "type", "grading", "ref"), "lenscat catalogue")
    kind = df["type"].astype(str).str.strip().str.lower()
    grading = df["grading"].astype(str).str.strip().str.lower()
    dropped = Counter({"not_galaxy_scale": int((kind != "galaxy").sum()),
                       "not_confident": int(((kind == "galaxy") & (grading != "confident")).sum())})
    keep = (kind == "galaxy") & (grading == "confident")
    d = df[keep]
    out = _frame(d["name"], _numeric(d["RA [deg]"]), _numeric(d["DEC [deg]"]), np.nan, _numeric(d["zlens"]), np.nan,
                 "confident", "lenscat", d["ref"].fillna("").astype(str).to_numpy())
    return out, +dropped


def normalise_desi(df: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """Galaxy-scale DESI candidates with a grade (confident | probable), the grade kept per row."""
    _need(df, ("name", "ra", "dec", "zlens", "type", "grading", "ref"), "DESI candidate catalogue")
    kind = df["type"].astype(str).str.strip().str.lower()
    grading = df["grading"].astype(str).str.strip().str.lower()
    graded = grading.isin(["confident", "probable"])
    dropped = Counter({"not_galaxy_scale": int((kind != "galaxy").sum()),
                       "ungraded": int(((kind == "galaxy") & ~graded).sum())})
    keep = (kind == "galaxy") & graded
    d = df[keep]
    out = _frame(d["name"], _numeric(d["ra"]), _numeric(d["dec"]), np.nan, _numeric(d["zlens"]), np.nan,
                 grading[keep].to_numpy(), "DESI", d["ref"].fillna("").astype(str).to_numpy())
    return out, +dropped


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra_deg, np.float64)), np.radians(np.asarray(dec_deg, np.float64))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)


def match_groups(ra_deg, dec_deg, radius_arcsec: float) -> np.ndarray:
    """Group label per position: positions linked by separations < ``radius_arcsec`` share one
    (friends-of-friends on the sphere; at 2 arcsec chains are negligible)."""
    n = len(ra_deg)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        chord = 2.0 * np.sin(np.radians(radius_arcsec / 3600.0) / 2.0)
        for i, j in cKDTree(unit_vectors(ra_deg, dec_deg)).query_pairs(chord):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def _documentation_rank(df: pd.DataFrame) -> np.ndarray:
    """Lower is better: catalogue rank first, then fewer unknown physical quantities."""
    unknown = df[["theta_e_arcsec", "z_lens", "z_source"]].isna().sum(axis=1).to_numpy()
    return df["source"].map(_SOURCE_RANK).to_numpy() * 10 + unknown


def curate(slacs_bells: pd.DataFrame, lenscat: pd.DataFrame, desi: pd.DataFrame,
           match_radius_arcsec: float = MATCH_RADIUS_ARCSEC, dec_max_deg: float = DEC_MAX_DEG,
           min_abs_b_deg: float = MIN_ABS_GALACTIC_LAT_DEG) -> tuple[pd.DataFrame, CurationReport]:
    """The curated catalogue (``COLUMNS``, best grade first) and its row accounting."""
    report = CurationReport()
    parts = []
    for label, raw, normalise in (("slacs_bells", slacs_bells, normalise_slacs_bells), ("lenscat", lenscat, normalise_lenscat),
                                  ("desi_candidates", desi, normalise_desi)):
        rows, dropped = normalise(raw)
        reason = footprint_reason(rows["ra_deg"], rows["dec_deg"], dec_max_deg, min_abs_b_deg)
        dropped.update(Counter(r for r in reason if r))
        rows = rows[reason == ""]
        report.by_source[label] = {"rows_read": len(raw), "rows_selected": len(rows), "dropped": dict(sorted(dropped.items()))}
        parts.append(rows)
    allrows = pd.concat(parts, ignore_index=True)
    group = match_groups(allrows["ra_deg"].to_numpy(), allrows["dec_deg"].to_numpy(), match_radius_arcsec)
    allrows["_group"], allrows["_rank"], allrows["_order"] = group, _documentation_rank(allrows), np.arange(len(allrows))
    allrows = allrows.sort_values(["_group", "_rank", "_order"], kind="stable")
    first = ~allrows["_group"].duplicated()
    kept = allrows[first].copy()
    removed = allrows[~first]
    report.duplicates_removed = len(removed)
    report.duplicates_by_source = dict(sorted(Counter(removed["source"]).items()))
    others = removed.groupby("_group")["source"].agg(lambda s: ";".join(sorted(set(s))))
    kept["also_in"] = kept["_group"].map(others).fillna("")
    kept["_grade_rank"] = kept["grade"].map({g: i for i, g in enumerate(GRADES)})
    kept["_source_rank"] = kept["source"].map({s: i for i, s in enumerate(SOURCES)})
    kept = kept.sort_values(["_grade_rank", "_source_rank", "ra_deg", "dec_deg"], kind="stable")
    out = kept[list(COLUMNS)].reset_index(drop=True)
    report.rows_out = len(out)
    report.by_grade = {g: int((out["grade"] == g).sum()) for g in GRADES}
    report.by_catalogue = {s: int((out["source"] == s).sum()) for s in SOURCES}
    return out, report


def header_lines(report: CurationReport, match_radius_arcsec: float = MATCH_RADIUS_ARCSEC,
                 dec_max_deg: float = DEC_MAX_DEG, min_abs_b_deg: float = MIN_ABS_GALACTIC_LAT_DEG) -> list[str]:
    lines = [
        "Dark Halo Scope known-lens catalogue: real lenses in the DESI Legacy Surveys DR10 South footprint,",
        "for the known-lens recovery check (stage known_lenses). Built by `python -m dhs.known_lenses.catalog`.",
        "Columns: name, ra_deg/dec_deg (ICRS deg), theta_e_arcsec (NaN = unknown), z_lens, z_source,",
        "  grade (confirmed | confident | probable), source (SLACS | BELLS | lenscat | DESI), reference, also_in.",
        "Selection: all SLACS/BELLS lenses; lenscat type=galaxy & grading=confident; DESI candidates type=galaxy",
        f"  with a grade; footprint Dec < {dec_max_deg} deg and |b| >= {min_abs_b_deg} deg; bad coordinates rejected;",
        f"  positions within {match_radius_arcsec} arcsec merged keeping SLACS/BELLS > lenscat > DESI.",
        f"Rows: {report.rows_out} ({', '.join(f'{k} {v}' for k, v in report.by_grade.items())};"
        f" {', '.join(f'{k} {v}' for k, v in report.by_catalogue.items())}).",
    ]
    for label, r in report.by_source.items():
        dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "none"
        lines.append(f"  {label}: read {r['rows_read']}, selected {r['rows_selected']}, dropped: {dropped}")
    lines.append(f"  duplicates removed: {report.duplicates_removed} "
                 f"({', '.join(f'{k} {v}' for k, v in report.duplicates_by_source.items()) or 'none'})")
    lines.append("References:")
    lines.extend(f"  {r}" for r in REFERENCES)
    return lines


def write_catalog(df: pd.DataFrame, path: str | Path, header: list[str]) -> None:
    """Atomically write ``df`` as CSV after ``#`` comment lines."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise CatalogError(f"catalogue to write lacks column(s) {missing}")
    body = df[list(COLUMNS)].to_csv(index=False, lineterminator="\n")
    atomic.write_text(path, "".join(f"# {h}\n" for h in header) + body)
    os.chmod(path, 0o644)  # a shipped, world-readable file (the atomic temporary is created 0600)


def read_catalog(path: str | Path = DEFAULT_PATH) -> pd.DataFrame:
    """The curated catalogue, validated: every column present, coordinates valid, grades known."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"known-lens catalogue {path} not found; build it with `python -m dhs.known_lenses.catalog` "
                           f"or point known_lenses.catalog at the shipped dhs/known_lenses/known_lenses.csv")
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    n_header = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    try:
        df = pd.read_csv(io.StringIO("".join(lines[n_header:])), dtype={"name": str, "grade": str, "source": str, "reference": str,
                                                                        "also_in": str}, keep_default_na=False, na_values={
            c: ["", "nan", "NaN"] for c in ("ra_deg", "dec_deg", "theta_e_arcsec", "z_lens", "z_source")})
    except (pd.errors.ParserError, ValueError) as exc:   # an unbalanced quote, a row with too many fields, a bad number
        raise CatalogError(f"{path}: not a readable catalogue ({' '.join(str(exc).split())[:200]}; the data start at line "
                           f"{n_header + 1}); fix the row or rebuild it with `python -m dhs.known_lenses.catalog`") from None
    _need(df, COLUMNS, f"known-lens catalogue {path}")
    runaway = [c for c in ("name", "grade", "source", "reference") if df[c].astype(str).str.contains("\n").any()]
    if runaway:   # a quote that never closes swallows the rows after it into one field
        row = int(np.flatnonzero(df[runaway[0]].astype(str).str.contains("\n").to_numpy())[0])
        raise CatalogError(f"{path}: an unbalanced quote: column {runaway[0]!r} of the row at line {n_header + 2 + row} runs "
                           f"over the lines after it ({df[runaway[0]].iloc[row][:60]!r}...); close the quote or remove it")
    from dhs.cutouts.footprint import valid_coordinates

    bad = ~valid_coordinates(df["ra_deg"], df["dec_deg"])
    if bad.any():
        raise CatalogError(f"{path}: {int(bad.sum())} row(s) with bad coordinates, e.g. {[str(n)[:60] for n in df.loc[bad, 'name'].head(3)]}; rebuild it")
    unknown = sorted(set(df["grade"]) - set(GRADES))
    if unknown:
        raise CatalogError(f"{path}: unknown grade(s) {unknown}; grades are {list(GRADES)}")
    return df[list(COLUMNS)]


def select_lenses(df: pd.DataFrame, grades: Sequence[str] = GRADES, max_lenses: int | None = None) -> pd.DataFrame:
    """The rows a run uses: those of ``grades``, in catalogue order (best grade first), the
    first ``max_lenses`` of them (None = all). Both the cutouts and the scoring stage call this,
    so they see the same rows."""
    unknown = sorted(set(grades) - set(GRADES))
    if unknown or not grades:
        raise CatalogError(f"known_lenses.grades must be a non-empty subset of {list(GRADES)}, got {list(grades)}")
    if max_lenses is not None and (isinstance(max_lenses, bool) or not isinstance(max_lenses, int) or max_lenses < 1):
        raise CatalogError(f"known_lenses.max_lenses must be a positive integer or null (all), got {max_lenses!r}")
    out = df[df["grade"].isin(list(grades))]
    return (out if max_lenses is None else out.head(max_lenses)).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the curated known-lens catalogue (see the module docstring).")
    ap.add_argument("--slacs-bells", required=True, help="SLACS/BELLS lenses with theta_E (CSV)")
    ap.add_argument("--lenscat", required=True, help="the lenscat catalogue (CSV)")
    ap.add_argument("--desi", required=True, help="graded DESI Legacy Surveys lens candidates (CSV)")
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    ap.add_argument("--match-radius-arcsec", type=float, default=MATCH_RADIUS_ARCSEC)
    args = ap.parse_args(argv)
    try:
        inputs = []
        for p in (args.slacs_bells, args.lenscat, args.desi):
            if not Path(p).is_file():
                raise CatalogError(f"input catalogue {p} not found; pass its path (see --help)")
            inputs.append(pd.read_csv(p))
        df, report = curate(*inputs, match_radius_arcsec=args.match_radius_arcsec)
    except CatalogError as exc:
        print(f"known-lens catalogue: FAILED: {exc}", file=sys.stderr)
        return 2
    header = header_lines(report, args.match_radius_arcsec)
    write_catalog(df, args.out, header)
    print("\n".join(header[7:]))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
