"""Stage `completeness@{arch}`: the model's selection function from its score table, in Spark.

Thresholds at each FPR in params on the evaluation split's controls (plus optional fixed
scores), completeness per bin of every binning variable and of the theta_E x PSF surface,
for all and clean stamps, with Wilson and region-bootstrap intervals.

Writes metrics/completeness/{arch}.json (headline numbers), plots/completeness/{arch}/{var}.csv
(one per variable, declared as DVC plots; rows with primary=1 are the plotted threshold),
plots/completeness/{arch}/{var}.png and the surface CSV/PNG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dhs import atomic
from dhs.completeness.counts import CompletenessError, surface_name
from dhs.completeness.figures import LABELS, curve_figure, placeholder_figure, surface_figure
from dhs.params import ParamsError, load_params, section
from dhs.completeness.measure import CompletenessConfig, fpr_name, measure, metrics_dict
from dhs.completeness.spark import spark_session

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
    for b in cfg.bins:
        if b.name not in measured:
            continue
        t = table[table["var"] == b.name][CSV_COLUMNS]
        atomic.write_text(out / f"{b.name}.csv", t.to_csv(index=False))
        curve_figure(result.table, b.name, f"{arch}: completeness vs {LABELS.get(b.name, b.name)} ({cfg.eval_split} split)",
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
    atomic.write_json(Path(metrics_dir) / f"{arch}.json", metrics)
    return metrics


def run(arch: str, params_path: str = "params.yaml", scores_dir: str = "data/scores", metrics_dir: str = "metrics/completeness",
        plots_dir: str = "plots/completeness") -> dict:
    cfg = CompletenessConfig.from_params(section(load_params(params_path), "completeness", source=params_path), params_path)
    t0 = time.perf_counter()
    spark = spark_session(cfg.spark)
    result = measure(spark, str(Path(scores_dir) / f"{arch}.parquet"), cfg)
    metrics = write_outputs(arch, cfg, result, metrics_dir, plots_dir)
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
    print(f"completeness {arch}: wrote {metrics_dir}/{arch}.json and {plots_dir}/{arch}/ in {time.perf_counter() - t0:.1f} s")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--scores", default="data/scores")
    ap.add_argument("--metrics", default="metrics/completeness")
    ap.add_argument("--plots", default="plots/completeness")
    args = ap.parse_args(argv)
    try:
        run(args.arch, args.params, args.scores, args.metrics, args.plots)
    except (ParamsError, CompletenessError, ValueError) as exc:
        print(f"completeness {args.arch}: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
