"""Measuring the selection function of one model: thresholds on controls, completeness per bin
with intervals, headline numbers. Spark does the scans; see ``dhs.measurement.counts`` for the
definitions and ``dhs.evaluation.thresholds`` for the threshold convention (pass: score > threshold).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dhs.measurement.counts import (OVERALL, THETA_PSF_GE_1, BinSpec, CompletenessError, Criterion, excluded_counts, headline_bins,
                              region_bin_counts_spark, completeness_intervals, surface_name)
from dhs.evaluation.auc import auroc, roc_curve
from dhs.measurement.weighted import DISCOVERABLE, lookalike_sensitivity, sky_headline
from dhs.evaluation.intervals import bootstrap_multiplicities, wilson_interval
from dhs.evaluation.scores import REQUIRED_COLUMNS
from dhs.evaluation.thresholds import Threshold, fpr_name, score_name, threshold_from_top, top_needed
from dhs.params import checked
from dhs.params.schema import plot_fpr_rule
from dhs.params.views import view

CLEAN_COLUMNS = ("bad_pixel_frac", "wise_brightmask_frac")
DEFAULT_DISCOVERABLE_BINS = ("theta_e_over_psf", "arc_snr_int")   # completeness.discoverable_bins: null


@dataclass(frozen=True)
class CompletenessConfig:
    """A view of the ``completeness`` section of params.yaml (each key, its default and its check
    in dhs.params.schema). Not keys of the section: ``fprs`` and ``min_expected_controls`` are
    the shared operating points of ``evaluation``; ``clean_max`` is derived, the pair
    (``clean_max_bad_pixel_frac``, ``clean_max_wise_brightmask_frac``) the clean subset applies.
    Keys held in another form: ``bins`` as ``BinSpec``s, ``surface`` as (x, y), and
    ``discoverable_bins`` null as those of ``DEFAULT_DISCOVERABLE_BINS`` that are binned."""
    SECTION: ClassVar[str] = "completeness"
    eval_split: str
    fprs: tuple[float, ...]
    plot_fpr: float
    fixed_scores: tuple[float, ...]
    min_expected_controls: float
    clean_max: tuple[float, float]
    n_bootstrap: int
    seed: int
    confidence: float
    bins: tuple[BinSpec, ...]
    surface: tuple[str, str] | None
    spark: Mapping[str, Any]
    discoverable_bins: tuple[str, ...]
    lookalike_kinds: tuple[str, ...]
    lookalike_factors: tuple[float, ...]

    @classmethod
    def from_params(cls, p: Mapping[str, Any], source: str = "params.yaml",
                    evaluation: Mapping[str, Any] | None = None) -> "CompletenessConfig":
        """The ``completeness`` section with the operating FPRs of ``evaluation`` (both checked by
        dhs.params.schema; ``evaluation`` defaults to the schema's defaults)."""
        v = checked("completeness", p, source)
        ev = checked("evaluation", evaluation, source)
        plot_fpr_rule({"evaluation": ev, "completeness": v}, source)
        surface = v["surface"]
        return view(cls, v, source, fprs=tuple(ev["fprs"]), min_expected_controls=ev["min_expected_controls"],
                    clean_max=(v["clean_max_bad_pixel_frac"], v["clean_max_wise_brightmask_frac"]),
                    bins=tuple(BinSpec(str(k), str(k), tuple(e)) for k, e in v["bins"].items()),
                    surface=None if surface is None else (surface["x"], surface["y"]), spark=dict(v["spark"]),
                    discoverable_bins=tuple(v["discoverable_bins"] if v["discoverable_bins"] is not None else
                                            (b for b in DEFAULT_DISCOVERABLE_BINS if b in v["bins"])))

    def discoverable_specs(self) -> list[BinSpec]:
        """The curves over the discoverable injections alone: ``discoverable__<var>``."""
        return [BinSpec(f"{DISCOVERABLE}__{b.name}", b.column, b.edges) for b in self.bins if b.name in self.discoverable_bins]

    def surfaces(self) -> list[tuple[BinSpec, BinSpec]]:
        if self.surface is None:
            return []
        by = {b.name: b for b in self.bins}
        return [(by[self.surface[0]], by[self.surface[1]])]

    def needed_columns(self) -> list[str]:
        return sorted({*REQUIRED_COLUMNS, *CLEAN_COLUMNS, "theta_e_over_psf", *(b.column for b in self.bins)})


@dataclass
class SelectionResult:
    thresholds: dict[str, Threshold]
    table: pd.DataFrame        # (var, subset, criterion, bin) rows with intervals
    counts: pd.DataFrame       # the (var, bin, region) count table
    excluded: dict[str, dict[str, int]]
    rows: dict[str, int]
    auroc: float
    warnings: list[str]
    threshold_spread: dict[str, dict] = field(default_factory=dict)
    skipped_variables: list[str] = field(default_factory=list)
    roc: tuple[np.ndarray, np.ndarray] = ()   # (fpr, tpr) on the evaluation split, for drawing
    control_groups: dict[str, Any] = field(default_factory=dict)   # false-positive rates by kind of control
    top_controls: pd.DataFrame | None = None  # the highest-scoring controls of each kind (report gallery)
    sky: dict[str, Any] = field(default_factory=dict)               # sky-weighted headline (dhs.measurement.weighted)
    lookalike: dict[str, Any] = field(default_factory=dict)         # thresholds with the look-alike rate scaled


# Kinds of control the simulated survey labels (``control_kind``) and field features it records;
# a score table without these columns (real data) is measured without this breakdown.
CONTROL_FEATURES = {
    "with_companion": "has_companion = 1",
    "with_star": "n_stars > 0",
    "bright_neighbour_r_lt_21": "brightest_neighbour_r_mag < 21",
}
TOP_CONTROLS_PER_KIND = 8


def control_groups_spark(controls, thresholds: Mapping[str, Threshold], confidence: float) -> dict[str, Any]:
    """False-positive rate at each threshold per control kind and per field feature: k of n
    controls above (pass: score > threshold) with a Wilson interval. Absent columns: no groups."""
    from pyspark.sql import functions as F

    cols = set(controls.columns)
    groups: list[tuple[str, str, Any]] = []
    for col in ("control_kind", "core_kind"):   # the host's kind; the structure of an early type's core
        if col in cols:
            for r in controls.select(col).distinct().collect():
                kind = r[col]
                if kind is not None and kind not in ("", "none"):
                    groups.append((col, kind, F.col(col) == kind))
    feature_col = {"with_companion": "has_companion", "with_star": "n_stars", "bright_neighbour_r_lt_21": "brightest_neighbour_r_mag"}
    for name, cond in CONTROL_FEATURES.items():
        if feature_col[name] in cols:
            groups.append(("feature", name, F.expr(cond)))
    out: dict[str, Any] = {"control_kind": {}, "core_kind": {}, "feature": {}}
    if not groups:
        return {}
    aggs = []
    for gi, (_, _, cond) in enumerate(groups):
        aggs.append(F.sum(F.when(cond, 1).otherwise(0)).alias(f"n{gi}"))
        for ti, t in enumerate(thresholds.values()):
            aggs.append(F.sum(F.when(cond & (F.col("score") > float(t.score)), 1).otherwise(0)).alias(f"k{gi}_{ti}"))
    row = controls.agg(*aggs).first()
    for gi, (group, name, _) in enumerate(groups):
        n = int(row[f"n{gi}"] or 0)
        per = {"n_controls": n}
        for ti, (tname, t) in enumerate(thresholds.items()):
            k = int(row[f"k{gi}_{ti}"] or 0)
            lo, hi = wilson_interval(k, n, confidence)
            nominal = t.achieved_fpr
            per[tname] = {"k": k, "fpr": k / n if n else None, "wilson_lo": None if n == 0 else float(lo),
                          "wilson_hi": None if n == 0 else float(hi),
                          "ratio_to_all": (k / n / nominal) if n and nominal else None}
        out[group][name] = per
    return out


def top_controls_spark(controls, n_per_kind: int) -> pd.DataFrame | None:
    """The ``n_per_kind`` highest-scoring controls of every control kind (task_id, kind, score)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if "control_kind" not in controls.columns:
        return None
    w = Window.partitionBy("control_kind").orderBy(F.desc("score"), F.asc("task_id"))
    top = (controls.where(F.col("control_kind").isNotNull() & (F.col("control_kind") != ""))
           .select("task_id", "control_kind", F.col("score").cast("double").alias("score"))
           .withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= n_per_kind))
    return top.toPandas().sort_values(["control_kind", "rank"]).reset_index(drop=True)


def threshold_count_range(n_controls: int, fpr: float, confidence: float = 0.95) -> tuple[int, int]:
    """Central interval of the number of controls a threshold at the true FPR quantile passes:
    Binomial(n_controls, fpr). Few controls make it wide: at FPR 1e-3 on 2,149 controls, 0 to 6."""
    from scipy.stats import binom

    a = (1 - confidence) / 2
    return int(binom.ppf(a, n_controls, fpr)), int(binom.ppf(1 - a, n_controls, fpr))


def check_columns(sdf, cfg: CompletenessConfig, source: str, extra_criteria: tuple[Criterion, ...] = ()) -> CompletenessConfig:
    """Refuse a table without the columns every measurement needs; drop binning variables whose
    column is absent (real Phase 4c tables carry src_dmag, not src_r_mag, and may lack arc_snr),
    returning the config actually measured. The caller reports the skipped variables."""
    required = {*REQUIRED_COLUMNS, *CLEAN_COLUMNS, "theta_e_over_psf"}
    if any(c.kind == "proxy" for c in extra_criteria):
        required.add("arc_snr")
    missing = sorted(c for c in required if c not in sdf.columns)
    if missing:
        raise CompletenessError(f"{source}: missing column(s) {missing} needed by completeness (thresholds, clean subset, "
                                f"theta_E/PSF{', the Phase 4d proxy' if 'arc_snr' in missing else ''}); have {sorted(sdf.columns)}")
    bins = tuple(b for b in cfg.bins if b.column in sdf.columns)
    surface = cfg.surface if cfg.surface and all(v in {b.name for b in bins} for v in cfg.surface) else None
    return replace(cfg, bins=bins, surface=surface)


def check_scores_spark(sdf, source: str) -> dict[str, int]:
    """Row counts, refusing duplicate task_ids, labels other than 0/1 and non-finite scores."""
    from pyspark.sql import functions as F

    s = F.col("score").cast("double")
    row = sdf.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("task_id").alias("ids"),
                  F.sum(F.when(F.col("task_id").isNull(), 1).otherwise(0)).alias("null_ids"),
                  F.sum(F.when(F.col("region_id").isNull(), 1).otherwise(0)).alias("null_regions"),
                  F.sum(F.when(F.col("label").isin(0, 1), 0).otherwise(1)).alias("bad_labels"),
                  F.sum(F.when(s.isNull() | F.isnan(s) | (F.abs(s) == float("inf")), 1).otherwise(0)).alias("bad_scores")).first()
    if row["null_ids"]:
        raise CompletenessError(f"{source}: {row['null_ids']} row(s) without a task_id")
    if row["null_regions"]:
        raise CompletenessError(f"{source}: {row['null_regions']} row(s) without a region_id; the region bootstrap and the "
                                f"split disjointness need one per stamp (fix the stamps' region_id)")
    if row["ids"] != row["n"]:
        dups = [r["task_id"] for r in sdf.groupBy("task_id").count().where("count > 1").limit(5).collect()]
        raise CompletenessError(f"{source}: {row['n'] - row['ids']} duplicate row(s) by task_id (e.g. {dups}); each stamp must be "
                                f"scored once (a padding sampler duplicates rows: docs/conventions.md, evaluation rules)")
    if row["bad_labels"]:
        raise CompletenessError(f"{source}: {row['bad_labels']} row(s) with a label other than 0 (control) or 1 (injection)")
    if row["bad_scores"]:
        raise CompletenessError(f"{source}: {row['bad_scores']} row(s) with a NULL, NaN or infinite score")
    return {"rows": int(row["n"])}


def measure(spark, scores_path: str, cfg: CompletenessConfig, extra_criteria: tuple[Criterion, ...] = ()) -> SelectionResult:
    """Thresholds, completeness tables and headline numbers for one score table."""
    from pyspark.sql import functions as F

    src = str(scores_path)
    sdf = spark.read.parquet(src)
    asked = cfg
    cfg = check_columns(sdf, cfg, src, tuple(extra_criteria))
    skipped = [b.name for b in asked.bins if b not in cfg.bins]
    optional = ("arc_snr", "control_kind", "core_kind", "has_companion", "n_stars", "brightest_neighbour_r_mag", "sky_weight", DISCOVERABLE)
    sdf = sdf.select(*cfg.needed_columns(), *(c for c in optional if c in sdf.columns and c not in cfg.needed_columns()))
    rows = check_scores_spark(sdf, src)
    ev = sdf.where(F.col("split") == cfg.eval_split).cache()
    label_counts = {int(r["label"]): int(r["count"]) for r in ev.groupBy("label").count().collect()}
    n_inj, n_ctl = label_counts.get(1, 0), label_counts.get(0, 0)
    rows.update({"eval_split_rows": n_inj + n_ctl, "other_split_rows": rows["rows"] - n_inj - n_ctl, "injections": n_inj, "controls": n_ctl})
    if n_ctl == 0:
        raise CompletenessError(f"{src}: no controls in split {cfg.eval_split!r}; FPR thresholds need controls")
    if n_inj == 0:
        raise CompletenessError(f"{src}: no injections in split {cfg.eval_split!r}; nothing to measure completeness on")
    controls = ev.where(F.col("label") == 0)
    spread_k = {f: threshold_count_range(n_ctl, f, cfg.confidence) for f in cfg.fprs}
    need = max(max(top_needed(f, n_ctl), spread_k[f][1] + 1) for f in cfg.fprs)
    need = min(need, n_ctl)
    top = np.array([r["score"] for r in controls.select(F.col("score").cast("double").alias("score")).orderBy(F.desc("score")).limit(need).collect()])
    thresholds: dict[str, Threshold] = {fpr_name(f): threshold_from_top(top, n_ctl, f, cfg.min_expected_controls) for f in cfg.fprs}
    for s in cfg.fixed_scores:
        above = controls.where(F.col("score") > float(s)).count()
        thresholds[score_name(s)] = Threshold(None, float(s), n_ctl, int(above), above / n_ctl, above < cfg.min_expected_controls)
    warnings = [f"binning variable {v!r}: column not in the score table; skipped (its outputs say so)" for v in skipped]
    warnings += [f"{name}: FPR x n_controls = {t.target_fpr * n_ctl:.1f} < {cfg.min_expected_controls:g}: the threshold rests on "
                f"{top_needed(t.target_fpr, n_ctl) - 1} control(s); read its completeness as indicative"
                for name, t in thresholds.items() if t.target_fpr is not None and t.low_count]
    criteria = tuple(Criterion(name, "score", t.score) for name, t in thresholds.items()) + tuple(extra_criteria)
    inj = ev.where(F.col("label") == 1)
    # the threshold's own uncertainty: the controls above the true-FPR quantile are Binomial(n, FPR);
    # the thresholds at the ends of its interval, and the completeness they give
    spread = {}
    for f, (k_lo, k_hi) in spread_k.items():
        strict, loose = float(top[min(k_lo, len(top) - 1)]), float(top[min(k_hi, len(top) - 1)])
        spread[fpr_name(f)] = {"controls_above_interval": [k_lo, k_hi], "score_strict": strict, "score_loose": loose}
    if spread:
        aggs = []
        for i, v in enumerate(spread.values()):
            aggs += [F.sum(F.when(F.col("score") > v["score_strict"], 1).otherwise(0)).alias(f"s{i}"),
                     F.sum(F.when(F.col("score") > v["score_loose"], 1).otherwise(0)).alias(f"l{i}")]
        row = inj.agg(*aggs).first()
        for i, v in enumerate(spread.values()):
            v["completeness_range"] = [int(row[f"s{i}"]) / n_inj, int(row[f"l{i}"]) / n_inj]
    bins = (*headline_bins(), *cfg.bins)
    counts = region_bin_counts_spark(inj, bins, criteria, cfg.clean_max, cfg.surfaces())
    regions = sorted(int(r["region_id"]) for r in inj.select("region_id").distinct().collect())
    specs: dict[str, Any] = {b.name: b.edges for b in bins}
    for bx, by in cfg.surfaces():
        specs[surface_name(bx, by)] = bx.n_bins * by.n_bins
    if DISCOVERABLE in sdf.columns:
        # the same curves over the LensPop-discoverable injections alone (a variable per curve)
        dbins = [BinSpec(DISCOVERABLE, "__one__", (0.0, 2.0)), *cfg.discoverable_specs()]
        dcounts = region_bin_counts_spark(inj.where(F.col(DISCOVERABLE) == 1), dbins, criteria, cfg.clean_max)
        counts = pd.concat([counts, dcounts], ignore_index=True)
        specs.update({b.name: b.edges for b in dbins})
    table = completeness_intervals(counts, specs, criteria, cfg.n_bootstrap, cfg.seed, cfg.confidence, regions)
    mult = bootstrap_multiplicities(len(regions), cfg.n_bootstrap, cfg.seed) if cfg.n_bootstrap > 0 else np.zeros((0, len(regions)))
    icols = ["region_id", "score", *(c for c in ("sky_weight", DISCOVERABLE) if c in sdf.columns)]
    ipdf = inj.select(*icols).toPandas()
    ipdf["score"] = ipdf["score"].astype(float)
    named = {name: t.score for name, t in thresholds.items()}
    sky = sky_headline(ipdf, named, regions, mult, cfg.confidence)
    lookalike = {}
    if "control_kind" in sdf.columns and cfg.lookalike_factors:
        cpdf = controls.select(F.col("score").cast("double").alias("score"), "control_kind").toPandas()
        lookalike = lookalike_sensitivity(cpdf, ipdf, cfg.fprs, cfg.lookalike_kinds, cfg.lookalike_factors,
                                          {f: fpr_name(f) for f in cfg.fprs})
    pdf = ev.select(F.col("label").cast("int").alias("label"), F.col("score").cast("double").alias("score")).toPandas()
    auc = auroc(pdf["label"], pdf["score"])
    roc = roc_curve(pdf["score"].to_numpy(), pdf["label"].to_numpy() == 1)
    groups = control_groups_spark(controls, {k: t for k, t in thresholds.items()}, cfg.confidence)
    top = top_controls_spark(controls, TOP_CONTROLS_PER_KIND)
    ev.unpersist()
    return SelectionResult(thresholds, table, counts, excluded_counts(counts), rows, auc, warnings, spread, skipped, roc, groups, top,
                           sky, lookalike)


def _cell(table: pd.DataFrame, var: str, subset: str, criterion: str, bin_: int = 0) -> dict[str, Any]:
    r = table[(table["var"] == var) & (table["subset"] == subset) & (table["criterion"] == criterion) & (table["bin"] == bin_)]
    if r.empty:
        return {}
    r = r.iloc[0]
    return {k: (None if isinstance(r[k], float) and math.isnan(r[k]) else (int(r[k]) if k in ("n", "k") else float(r[k])))
            for k in ("completeness", "k", "n", "wilson_lo", "wilson_hi", "boot_lo", "boot_hi")}


def headline(result: SelectionResult) -> dict[str, Any]:
    """Per threshold: completeness overall, at theta_E/PSF >= 1 and of the discoverable injections
    (where the table has them), for all and clean; counts of the measurement population, unweighted
    (the sky-weighted figures are ``result.sky``)."""
    groups = (OVERALL, THETA_PSF_GE_1) + ((DISCOVERABLE,) if (result.table["var"] == DISCOVERABLE).any() else ())
    out = {}
    for name in result.thresholds:
        out[name] = {group: {subset: _cell(result.table, group, subset, name) for subset in ("all", "clean")}
                     for group in groups}
    return out


def metrics_dict(arch: str, cfg: CompletenessConfig, result: SelectionResult) -> dict[str, Any]:
    thr = []
    for name, t in result.thresholds.items():
        d = {"name": name, **t.as_dict(), **({"uncertainty": result.threshold_spread[name]} if name in result.threshold_spread else {})}
        d["logit"] = float(np.log(t.score / (1 - t.score))) if 0 < t.score < 1 else None
        thr.append(d)
    head = headline(result)
    return {"arch": arch, "eval_split": cfg.eval_split, "rows": result.rows, "auroc": result.auroc,
            "tpr_at_fpr": {name: head[name][OVERALL]["all"].get("completeness") for name, t in result.thresholds.items() if t.target_fpr is not None},
            # the list keeps order for readers; the mapping is what `dvc metrics show`/`dvc exp show` display (they drop lists)
            "thresholds": thr, "threshold_by_name": {d["name"]: {k: d[k] for k in ("score", "n_controls", "n_controls_above", "achieved_fpr", "low_count", "uncertainty") if k in d} for d in thr},
            "headline": head, "low_count_warnings": result.warnings, "excluded_from_bins": result.excluded,
            "skipped_variables": result.skipped_variables,
            "n_regions": int(result.counts.loc[result.counts["var"] == OVERALL, "region_id"].nunique()),
            "bootstrap": {"n": cfg.n_bootstrap, "unit": "region", "confidence": cfg.confidence}, "plot_threshold": fpr_name(cfg.plot_fpr),
            "false_positives_by_control": result.control_groups,
            # completeness of lenses as they occur on the sky (sky_weight), all and discoverable, with n_eff
            "sky": result.sky, "lookalike_sensitivity": result.lookalike}
