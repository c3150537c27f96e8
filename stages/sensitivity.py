"""Stage `sensitivity`: the Phase 4d proxy completeness for each theta_E/PSF threshold in params,
all and clean, with Wilson (and region-bootstrap) intervals, beside each trained arch's
model-based completeness at the completeness stage's FPRs.

Writes metrics/sensitivity.json, plots/sensitivity/{var}.csv (DVC plots: one curve per proxy
threshold and per arch at completeness.plot_fpr) and plots/sensitivity/{var}.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dhs import atomic  # noqa: E402
from dhs.completeness.counts import CompletenessError  # noqa: E402
from dhs.completeness.figures import LABELS  # noqa: E402
from dhs.params import ParamsError, load_params, section  # noqa: E402
from dhs.completeness.measure import CompletenessConfig, fpr_name  # noqa: E402
from dhs.completeness.sensitivity import SensitivityConfig, sweep  # noqa: E402
from dhs.completeness.spark import spark_session  # noqa: E402


def figure(table, var: str, plot_threshold: str, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, subset in zip(axes, ("all", "clean")):
        t = table[(table["var"] == var) & (table["subset"] == subset) & (table["n"] > 0)]
        for curve, s in t.groupby("curve", sort=False):
            if s["kind"].iloc[0] == "model" and not curve.endswith(plot_threshold):
                continue
            s = s.sort_values("bin_center")
            style = dict(ls="--", marker="s", ms=3) if s["kind"].iloc[0] == "proxy" else dict(ls="-", marker="o", ms=4, lw=2)
            line, = ax.plot(s["bin_center"], s["completeness"], label=curve, **style)
            ax.fill_between(s["bin_center"], s["wilson_lo"], s["wilson_hi"], color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(subset)
        ax.set_xlabel(LABELS.get(var, var))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("completeness")
    axes[0].legend(fontsize=7, title="dashed: Phase 4d proxy; solid: model (band: Wilson 95%)", title_fontsize=7)
    fig.suptitle(f"proxy vs detector completeness against {LABELS.get(var, var)}")
    atomic.save_figure(path, fig, dpi=110, bbox_inches="tight")


def run(params_path: str = "params.yaml", scores_dir: str = "data/scores", metrics_path: str = "metrics/sensitivity.json",
        plots_dir: str = "plots/sensitivity") -> dict:
    params = load_params(params_path)
    cfg = CompletenessConfig.from_params(section(params, "completeness", source=params_path), params_path)
    sens = SensitivityConfig.from_params(section(params, "sensitivity", source=params_path), params_path)
    archs = list(section(params, "train", source=params_path).get("archs") or [])
    t0 = time.perf_counter()
    paths = {a: str(Path(scores_dir) / f"{a}.parquet") for a in archs}
    table, metrics = sweep(spark_session(cfg.spark), paths, cfg, sens)
    for var in sens.variables:
        t = table[table["var"] == var]
        cols = ["curve", "kind", "subset", "bin", "bin_lo", "bin_hi", "bin_center", "n", "k", "completeness", "wilson_lo", "wilson_hi", "boot_lo", "boot_hi", "low_n"]
        # the DVC plot draws the proxies and each arch at the plotted FPR
        keep = (t["kind"] == "proxy") | t["curve"].str.endswith(fpr_name(cfg.plot_fpr))
        atomic.write_text(Path(plots_dir) / f"{var}.csv", t.loc[keep, cols].to_csv(index=False))
        figure(table, var, fpr_name(cfg.plot_fpr), Path(plots_dir) / f"{var}.png")
    atomic.write_json(metrics_path, metrics)
    for name, m in metrics["proxy"].items():
        print(f"sensitivity: {name}: all {m['all']['completeness']:.4f} (n={m['all']['n']}), clean {m['clean']['completeness']:.4f}")
    for arch, by in metrics["model"].items():
        m = by[fpr_name(cfg.plot_fpr)]
        print(f"sensitivity: {arch} at {fpr_name(cfg.plot_fpr)}: all {m['all']['completeness']:.4f}, clean {m['clean']['completeness']:.4f}")
    print(f"sensitivity: wrote {metrics_path} and {plots_dir}/ in {time.perf_counter() - t0:.1f} s")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--scores", default="data/scores")
    ap.add_argument("--metrics", default="metrics/sensitivity.json")
    ap.add_argument("--plots", default="plots/sensitivity")
    args = ap.parse_args(argv)
    try:
        run(args.params, args.scores, args.metrics, args.plots)
    except (ParamsError, CompletenessError, ValueError) as exc:
        print(f"sensitivity: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
