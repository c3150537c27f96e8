"""Completeness (the selection function) from a score table: Spark for the counting, numpy for the
intervals.

Definitions
-----------
- Completeness in a bin = recovered injections / injections in that bin, on the evaluation split.
- A *criterion* decides "recovered": the model's ``score > threshold`` (thresholds set on the
  controls at a target FPR, ``dhs.evaluation.thresholds``), or the Phase 4d proxy
  ``arc_snr >= snr_min AND theta_e_over_psf >= t``.
- Bins are half-open [lo, hi), the last one closed [lo, hi]. A row whose binning value is NULL
  or NaN lands in bin ``MISSING`` (-1), one outside the edges in ``OUT_OF_RANGE`` (-2); both
  are counted per variable in the metrics, never silently dropped.
- Subsets: ``all`` and ``clean`` (bad_pixel_frac <= 0.2 AND wise_brightmask_frac <= 0.2; a NULL
  in either makes the row not clean).
- Intervals: Wilson per bin (``low_n`` marks n < 50), and a region bootstrap on the
  (region x bin) count table (``dhs.evaluation.intervals``).

Counting runs in Spark as one scan: each injection row becomes one (variable, bin) entry per
binning variable (``explode`` of an array of structs), grouped by (variable, bin, region). The
result is the small count table; pixels never enter Spark. Flags are built with
``when/otherwise`` (a ``cast("int")`` of a NULL boolean stays NULL and ``sum`` skips it:
docs/conventions.md, evaluation rules). ``region_bin_counts_pandas`` is an independent reference used by the tests
and the benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dhs.errors import StageError
from dhs.evaluation.intervals import MIN_N_WILSON, bootstrap_multiplicities, region_bootstrap, wilson_interval

MISSING, OUT_OF_RANGE = -1, -2
OVERALL = "overall"            # one bin holding every injection
THETA_PSF_GE_1 = "theta_e_over_psf_ge_1"   # one bin: theta_E / PSF >= 1 (the headline subset)


class CompletenessError(StageError, ValueError):
    pass


@dataclass(frozen=True)
class BinSpec:
    """``name`` is the variable as reported; ``column`` the score-table column binned;
    ``edges`` strictly increasing. A 2-D surface is two BinSpecs joined by ``surface_index``."""

    name: str
    column: str
    edges: tuple[float, ...]

    def __post_init__(self):
        e = np.asarray(self.edges, dtype=np.float64)
        if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e[:-1])) or not np.all(np.diff(e) > 0):
            raise CompletenessError(f"bins for {self.name!r} must be >= 2 strictly increasing numbers (the last may be inf), got {list(self.edges)}")

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1


@dataclass(frozen=True)
class Criterion:
    """``kind`` 'score': recovered = score > value. 'proxy': arc_snr >= snr_min AND
    theta_e_over_psf >= value."""

    name: str
    kind: str
    value: float
    snr_min: float = 5.0


def headline_bins() -> list[BinSpec]:
    return [BinSpec(OVERALL, "__one__", (0.0, 2.0)), BinSpec(THETA_PSF_GE_1, "theta_e_over_psf", (1.0, np.inf))]


# ---------------------------------------------------------------- Spark
def _spark_bin(col, edges: Sequence[float]):
    from pyspark.sql import functions as F

    c = col.cast("double")
    expr = F.when(c.isNull() | F.isnan(c), F.lit(MISSING))  # NaN compares above everything in Spark: test it first
    expr = expr.when((c < float(edges[0])) | (c > float(edges[-1])), F.lit(OUT_OF_RANGE))
    for i in range(1, len(edges) - 1):
        expr = expr.when(c < float(edges[i]), F.lit(i - 1))
    return expr.otherwise(F.lit(len(edges) - 2))


def _spark_flag(cond):
    from pyspark.sql import functions as F

    return F.when(cond, F.lit(1)).otherwise(F.lit(0))  # NULL -> 0, never NULL


def _spark_criterion(c: Criterion):
    from pyspark.sql import functions as F

    if c.kind == "score":
        return _spark_flag(F.col("score") > F.lit(float(c.value)))
    snr, ratio = F.col("arc_snr").cast("double"), F.col("theta_e_over_psf").cast("double")
    return _spark_flag(~F.isnan(snr) & ~F.isnan(ratio) & (snr >= F.lit(float(c.snr_min))) & (ratio >= F.lit(float(c.value))))


def clean_condition_spark(bad_pixel_max: float = 0.2, wise_max: float = 0.2):
    from pyspark.sql import functions as F

    b, w = F.col("bad_pixel_frac").cast("double"), F.col("wise_brightmask_frac").cast("double")
    return ~F.isnan(b) & ~F.isnan(w) & (b <= F.lit(float(bad_pixel_max))) & (w <= F.lit(float(wise_max)))


def region_bin_counts_spark(sdf, bins: Sequence[BinSpec], criteria: Sequence[Criterion], clean_max: tuple[float, float] = (0.2, 0.2),
                            surfaces: Sequence[tuple[BinSpec, BinSpec]] = ()) -> pd.DataFrame:
    """Count table [var, bin, region_id, n, n_clean, k__<crit>, kc__<crit>] of injection rows
    (``sdf`` already filtered to the injections of the evaluation split). Surfaces enter as a
    variable 'x__y' with bin = ix * ny + iy (MISSING/OUT_OF_RANGE if either is)."""
    from pyspark.sql import functions as F

    # internal column names: criterion names like "fpr_0.01" hold dots, which Spark reads as struct access
    bcols, entries = {}, []
    for i, b in enumerate(bins):
        bcols[b.name] = f"_b{i}"
    binned = [(F.lit(1.0) if b.column == "__one__" else F.col(b.column), b) for b in bins]
    sel = [F.col("region_id").cast("long").alias("region_id"), _spark_flag(clean_condition_spark(*clean_max)).alias("_clean")]
    sel += [_spark_criterion(c).alias(f"_k{i}") for i, c in enumerate(criteria)]
    sel += [_spark_bin(col, b.edges).alias(bcols[b.name]) for col, b in binned]
    extra = {}
    for j, (bx, by) in enumerate(surfaces):
        for b in (bx, by):
            if b.name not in bcols:
                extra[b.name] = f"_s{len(extra)}"
                sel.append(_spark_bin(F.col(b.column), b.edges).alias(extra[b.name]))
    bcols.update(extra)
    for b in bins:
        entries.append(F.struct(F.lit(b.name).alias("var"), F.col(bcols[b.name]).alias("bin")))
    for bx, by in surfaces:
        ix, iy = F.col(bcols[bx.name]), F.col(bcols[by.name])
        both = F.when((ix == MISSING) | (iy == MISSING), F.lit(MISSING)).when((ix < 0) | (iy < 0), F.lit(OUT_OF_RANGE)).otherwise(ix * F.lit(by.n_bins) + iy)
        entries.append(F.struct(F.lit(surface_name(bx, by)).alias("var"), both.alias("bin")))
    rows = sdf.select(*sel).select("region_id", "_clean", *(f"_k{i}" for i in range(len(criteria))), F.explode(F.array(*entries)).alias("vb"))
    aggs = [F.count(F.lit(1)).alias("n"), F.sum("_clean").alias("n_clean")]
    for i, c in enumerate(criteria):
        aggs += [F.sum(f"_k{i}").alias(f"_k{i}"), F.sum(F.col(f"_k{i}") * F.col("_clean")).alias(f"_kc{i}")]
    out = rows.groupBy(F.col("vb.var").alias("var"), F.col("vb.bin").alias("bin"), "region_id").agg(*aggs).toPandas()
    out = out.rename(columns={**{f"_k{i}": f"k__{c.name}" for i, c in enumerate(criteria)}, **{f"_kc{i}": f"kc__{c.name}" for i, c in enumerate(criteria)}})
    return _tidy(out)


def surface_name(bx: BinSpec, by: BinSpec) -> str:
    return f"{bx.name}__x__{by.name}"


def _tidy(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    for c in t.columns:
        if c != "var":
            t[c] = t[c].fillna(0).astype(np.int64)
    t["var"] = t["var"].astype(str)
    return t.sort_values(["var", "bin", "region_id"]).reset_index(drop=True)


# ---------------------------------------------------------------- pandas reference
def _np_bin(v: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    e = np.asarray(edges, dtype=np.float64)
    out = np.full(v.shape, OUT_OF_RANGE, dtype=np.int64)
    inside = (v >= e[0]) & (v <= e[-1])
    idx = np.searchsorted(e, v, side="right") - 1
    out[inside] = np.minimum(idx[inside], len(e) - 2)
    out[np.isnan(v)] = MISSING
    return out


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def region_bin_counts_pandas(df: pd.DataFrame, bins: Sequence[BinSpec], criteria: Sequence[Criterion], clean_max: tuple[float, float] = (0.2, 0.2),
                             surfaces: Sequence[tuple[BinSpec, BinSpec]] = ()) -> pd.DataFrame:
    """The same count table as ``region_bin_counts_spark``, computed in pandas/numpy."""
    with np.errstate(invalid="ignore"):
        bp, wm = _num(df, "bad_pixel_frac"), _num(df, "wise_brightmask_frac")
        clean = ((bp <= clean_max[0]) & (wm <= clean_max[1])).astype(np.int64)
        flags = {}
        for c in criteria:
            if c.kind == "score":
                flags[c.name] = (_num(df, "score") > c.value).astype(np.int64)
            else:
                flags[c.name] = ((_num(df, "arc_snr") >= c.snr_min) & (_num(df, "theta_e_over_psf") >= c.value)).astype(np.int64)
    region = df["region_id"].to_numpy(dtype=np.int64)
    binned = {b.name: (np.zeros(len(df), np.int64) if b.column == "__one__" else _np_bin(_num(df, b.column), b.edges)) for b in bins}
    for bx, by in surfaces:
        ix, iy = _np_bin(_num(df, bx.column), bx.edges), _np_bin(_num(df, by.column), by.edges)
        both = np.where((ix == MISSING) | (iy == MISSING), MISSING, np.where((ix < 0) | (iy < 0), OUT_OF_RANGE, ix * by.n_bins + iy))
        binned[surface_name(bx, by)] = both
    parts = []
    for var, b in binned.items():
        frame = pd.DataFrame({"var": var, "bin": b, "region_id": region, "n": 1, "n_clean": clean})
        for name, f in flags.items():
            frame[f"k__{name}"] = f
            frame[f"kc__{name}"] = f * clean
        parts.append(frame.groupby(["var", "bin", "region_id"], as_index=False).sum())
    return _tidy(pd.concat(parts, ignore_index=True))


# ---------------------------------------------------------------- intervals
def completeness_intervals(table: pd.DataFrame, specs: Mapping[str, Sequence[float] | int], criteria: Sequence[Criterion], n_boot: int = 1000,
              seed: int = 0, confidence: float = 0.95, regions: Sequence[int] | None = None) -> pd.DataFrame:
    """Completeness with Wilson and region-bootstrap intervals from a count table.

    ``specs`` maps each variable to its bin edges (or, for surfaces, the number of bins).
    ``regions``: the regions the bootstrap resamples (default: those in the table), so a region
    with no injection in a bin still counts as a draw.
    Returns one row per (var, subset, criterion, bin) with n, k, completeness, wilson_lo/hi,
    boot_lo/hi, low_n; bins with no injection appear with n = 0 and NaN completeness."""
    regions = np.unique(np.asarray(regions if regions is not None else table["region_id"].unique(), dtype=np.int64))
    rindex = {r: i for i, r in enumerate(regions)}
    # one set of replicates for every bin, variable and threshold: intervals of different
    # thresholds come from the same resampled skies
    mult = bootstrap_multiplicities(len(regions), n_boot, seed) if n_boot > 0 and len(regions) else np.zeros((0, len(regions)))
    out = []
    for var, spec in specs.items():
        nb = int(spec) if np.isscalar(spec) else len(spec) - 1
        sub = table[(table["var"] == var) & (table["bin"] >= 0)]
        ri = sub["region_id"].map(rindex).to_numpy()
        if np.isnan(ri.astype(np.float64)).any():
            raise CompletenessError(f"count table for {var} holds regions outside the resampled set")
        bi = sub["bin"].to_numpy()
        for subset, ncol, kpre in (("all", "n", "k__"), ("clean", "n_clean", "kc__")):
            n_rb = np.zeros((len(regions), nb))
            np.add.at(n_rb, (ri, bi), sub[ncol].to_numpy())
            for ci, c in enumerate(criteria):
                k_rb = np.zeros((len(regions), nb))
                np.add.at(k_rb, (ri, bi), sub[kpre + c.name].to_numpy())
                n, k = n_rb.sum(0), k_rb.sum(0)
                wl, wh = wilson_interval(k, n, confidence)
                bl, bh = region_bootstrap(k_rb, n_rb, confidence=confidence, multiplicities=mult)
                with np.errstate(invalid="ignore", divide="ignore"):
                    comp = np.where(n > 0, k / np.maximum(n, 1), np.nan)
                frame = pd.DataFrame({"var": var, "subset": subset, "criterion": c.name, "bin": np.arange(nb), "n": n.astype(np.int64),
                                      "k": k.astype(np.int64), "completeness": comp, "wilson_lo": wl, "wilson_hi": wh,
                                      "boot_lo": bl, "boot_hi": bh, "low_n": n < MIN_N_WILSON})
                if not np.isscalar(spec):
                    e = np.asarray(spec, dtype=np.float64)
                    frame.insert(4, "bin_lo", e[:-1])
                    frame.insert(5, "bin_hi", e[1:])
                    frame.insert(6, "bin_center", np.where(np.isfinite(e[1:]), (e[:-1] + e[1:]) / 2, e[:-1]))
                out.append(frame)
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def excluded_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Per variable: injections with a missing binning value and outside the bin edges."""
    out = {}
    for var, sub in table.groupby("var"):
        out[str(var)] = {"missing": int(sub.loc[sub["bin"] == MISSING, "n"].sum()),
                         "out_of_range": int(sub.loc[sub["bin"] == OUT_OF_RANGE, "n"].sum()),
                         "binned": int(sub.loc[sub["bin"] >= 0, "n"].sum())}
    return out
