"""The body of stage ``completeness@{arch}``: thresholds at each FPR of ``evaluation.fprs`` on the evaluation split's controls
(plus optional fixed scores), completeness per bin of every binning variable and of the
theta_E x PSF surface, for all and clean stamps, with Wilson and region-bootstrap intervals.
Writes metrics/completeness/{arch}.json (headline numbers), plots/completeness/{arch}/{var}.csv
(one per variable, declared as DVC plots; rows with primary=1 are the plotted threshold),
plots/completeness/{arch}/{var}.png, the surface CSV/PNG, and plots/roc/{arch}.csv (the ROC the
report draws).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from dhs import atomic, headline
from dhs.measurement.counts import CompletenessError, surface_name
from dhs.measurement.figures import LABELS, curve_figure, placeholder_figure, surface_figure
from dhs.measurement.measure import CompletenessConfig, fpr_name, measure, metrics_dict
from dhs.measurement.weighted import DISCOVERABLE
from dhs.measurement.spark import spark_session
from dhs.evaluation.auc import thin_curve
from dhs.evaluation.scores import parquet_problem
from dhs.params import Params, as_params

CSV_COLUMNS = ["threshold", "subset", "primary", "bin", "bin_lo", "bin_hi", "bin_center", "n", "k", "completeness",
               "wilson_lo", "wilson_hi", "boot_lo", "boot_hi", "low_n"]


def write_outputs(arch: str, cfg: CompletenessConfig, result, metrics_dir: str | Path, plots_dir: str | Path) -> dict:
    metrics = metrics_dict(arch, cfg, result)
    out = Path(plots_dir) / arch
    table = result.table.rename(columns={"criterion": "threshold"})
    table["primary"] = (table["threshold"] == fpr_name(cfg.plot_fpr)).astype(int)
    for name in result.skipped_variables:  # declared DVC outputs: say why they are empty
        atomic.write_text(out / f"{name}.csv", ",".join(CSV_COLUMNS) + "\n")
        placeholder_figure(out / f"{name}.png", f"{arch}: {name} is not a column of the score table; not binned")
    measured = {b.name for b in cfg.bins} - set(result.skipped_variables)
    in_table = set(result.table["var"])
    for b in (*cfg.bins, *cfg.discoverable_specs()):
        base = b.name.removeprefix(f"{DISCOVERABLE}__")
        if base not in measured:
            continue
        if b.name not in in_table:   # a discoverable curve of a table without the discoverable column
            atomic.write_text(out / f"{b.name}.csv", ",".join(CSV_COLUMNS) + "\n")
            placeholder_figure(out / f"{b.name}.png", f"{arch}: the score table has no discoverable column; not binned")
            continue
        t = table[table["var"] == b.name][CSV_COLUMNS]
        atomic.write_text(out / f"{b.name}.csv", t.to_csv(index=False))
        who = "discoverable injections" if b.name != base else "injections"
        curve_figure(result.table, b.name, f"{arch}: completeness of {who} vs {LABELS.get(base, base)} ({cfg.eval_split} split)",
                     out / f"{b.name}.png", [c for c in dict.fromkeys(result.table["criterion"])])
    for bx, by in cfg.surfaces():
        var = surface_name(bx, by)
        if not {bx.name, by.name} <= measured:
            atomic.write_text(out / f"{var}.csv", "threshold,subset,primary,bin,x_lo,x_hi,y_lo,y_hi,n,k,completeness\n")
            placeholder_figure(out / f"{var}.png", f"{arch}: the surface needs {bx.name} and {by.name}; not binned")
            continue
        t = table[table["var"] == var].copy()
        ix, iy = t["bin"] // by.n_bins, t["bin"] % by.n_bins
        t.insert(4, "x_lo", [bx.edges[i] for i in ix])
        t.insert(5, "x_hi", [bx.edges[i + 1] for i in ix])
        t.insert(6, "y_lo", [by.edges[j] for j in iy])
        t.insert(7, "y_hi", [by.edges[j + 1] for j in iy])
        cols = ["threshold", "subset", "primary", "bin", "x_lo", "x_hi", "y_lo", "y_hi", "n", "k", "completeness", "wilson_lo", "wilson_hi", "boot_lo", "boot_hi", "low_n"]
        atomic.write_text(out / f"{var}.csv", t[cols].to_csv(index=False))
        surface_figure(result.table, var, bx.edges, by.edges, fpr_name(cfg.plot_fpr), f"{arch}: completeness surface ({cfg.eval_split} split)",
                       out / f"{var}.png", LABELS.get(bx.name, bx.name), LABELS.get(by.name, by.name))
    top = result.top_controls if result.top_controls is not None else pd.DataFrame(columns=["task_id", "control_kind", "score", "rank"])
    atomic.write_text(out / "top_controls.csv", top.to_csv(index=False))
    headline.write("completeness", Path(metrics_dir) / f"{arch}.json", metrics)
    return metrics


def write_roc(arch: str, result, path: Path) -> None:
    """The ROC the report draws (thinned for drawing; AUROC and the operating points are in the metrics)."""
    f, t = thin_curve(*result.roc)
    atomic.write_text(path, pd.DataFrame({"fpr": f, "tpr": t}).to_csv(index=False, float_format="%.6g"))


def run(arch: str, params: str | Params = "params.yaml", scores_dir: str = "data/scores", metrics_dir: str = "metrics/completeness",
        plots_dir: str = "plots/completeness", roc_dir: str | None = None) -> dict:
    """``roc_dir`` defaults to ``roc`` beside ``plots_dir`` (plots/roc)."""
    p = as_params(params).require("completeness")
    cfg = CompletenessConfig.from_params(p["completeness"], p.source, p["evaluation"])
    t0 = time.perf_counter()
    scores = Path(scores_dir) / f"{arch}.parquet"
    if not scores.is_file():   # before Spark starts: a stage run out of order says what to run
        raise CompletenessError(f"{scores} not found: the score table of {arch} comes from `dvc repro infer@{arch}`")
    if why := parquet_problem(scores):
        raise CompletenessError(f"{scores}: {why}; rebuild it with `dvc repro -f infer@{arch}`")
    spark = spark_session(cfg.spark)
    result = measure(spark, str(scores), cfg)
    metrics = write_outputs(arch, cfg, result, metrics_dir, plots_dir)
    roc_dir = Path(plots_dir).parent / "roc" if roc_dir is None else Path(roc_dir)
    write_roc(arch, result, roc_dir / f"{arch}.csv")
    for w in result.warnings:
        print(f"completeness {arch}: WARNING: {w}", file=sys.stderr)
    r = result.rows
    print(f"completeness {arch}: {r['injections']} injections and {r['controls']} controls of split {cfg.eval_split} "
          f"({r['other_split_rows']} rows of other splits not used); AUROC {result.auroc:.4f}")
    for t in metrics["thresholds"]:
        h = metrics["headline"][t["name"]]
        a, g = h["overall"]["all"], h["theta_e_over_psf_ge_1"]["all"]
        ge1 = g.get("completeness")
        print(f"  {t['name']:>12}: score > {t['score']:.6g} ({t['n_controls_above']}/{t['n_controls']} controls pass"
              f"{', LOW COUNT' if t['low_count'] else ''}); completeness {a['completeness']:.3f} "
              f"[{a['wilson_lo']:.3f}, {a['wilson_hi']:.3f}], theta_E/PSF>=1: {'n/a' if ge1 is None else f'{ge1:.3f}'}")
        u = t.get("uncertainty")
        if u:
            print(f"  {'':>12}  threshold's own 95% range: {u['controls_above_interval'][0]}-{u['controls_above_interval'][1]} controls "
                  f"above, completeness {u['completeness_range'][0]:.3f}-{u['completeness_range'][1]:.3f}")
    sky = metrics.get("sky") or {}
    if sky:
        def fmt(c):
            if not c or c.get("completeness") is None:
                return "n/a"
            return f"{c['completeness']:.3f} [{c['boot_lo'] if c['boot_lo'] is not None else float('nan'):.3f}, " \
                   f"{c['boot_hi'] if c['boot_hi'] is not None else float('nan'):.3f}] (n {c['n']}, n_eff {c['n_eff']:.0f})"
        print(f"  sky-weighted ({'sky_weight' if sky.get('weighted') else 'unit weights'}): discoverable fraction "
              f"{fmt(sky.get('discoverable_fraction'))}")
        for t in metrics["thresholds"]:
            c = sky.get(t["name"], {})
            print(f"  {t['name']:>12}: all lenses {fmt(c.get('all'))}; discoverable {fmt(c.get(DISCOVERABLE))}")
    look = metrics.get("lookalike_sensitivity") or {}
    for name, shift in (look.get("max_discoverable_shift") or {}).items():
        if shift is not None:
            print(f"  look-alike rate x{' / x'.join(f'{f:g}' for f in cfg.lookalike_factors)}: discoverable completeness at {name} "
                  f"moves by at most {shift:.3f}")
    groups = metrics.get("false_positives_by_control") or {}
    plot_t = fpr_name(cfg.plot_fpr)
    for group, by in groups.items():
        for name, g in by.items():
            c = g.get(plot_t, {})
            if c.get("fpr") is not None:
                print(f"  false positives at {plot_t}, {group} {name}: {c['k']}/{g['n_controls']} = {c['fpr']:.4f} "
                      f"[{c['wilson_lo']:.4f}, {c['wilson_hi']:.4f}]")
    print(f"completeness {arch}: wrote {metrics_dir}/{arch}.json, {plots_dir}/{arch}/ and {roc_dir}/{arch}.csv in "
          f"{time.perf_counter() - t0:.1f} s")
    return metrics
