"""Selection-model figures (matplotlib, Agg): the model's bin means with their band beside the
binned observed completeness with Wilson error bars, one line per operating point."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dhs import atomic  # noqa: E402
from dhs.measurement.figures import LABELS, LOG_AXIS  # noqa: E402
from dhs.evaluation.thresholds import operating_point_label  # noqa: E402


def model_curve_figure(table: pd.DataFrame, var: str, primary: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if table is None or len(table) == 0:
        ax.text(0.5, 0.5, f"{var}: no injections in range", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        for i, (name, t) in enumerate(table.groupby("threshold", sort=False)):
            t = t[t["n"] > 0].sort_values("bin_center")
            x = t["bin_center"].to_numpy(float)
            if var in LOG_AXIS:
                x = np.where(x > 0, x, t["bin_hi"].to_numpy(float))
            colour = f"C{i}"
            lw = 2.0 if name == primary else 1.0
            ax.fill_between(x, t["model_lo"], t["model_hi"], color=colour, alpha=0.25, lw=0)
            ax.plot(x, t["model"], color=colour, lw=lw, label=f"{operating_point_label(name)}: model (band: 95 %)")
            y = t["observed"].to_numpy(float)
            ax.errorbar(x, y, yerr=[y - t["observed_lo"].to_numpy(float), t["observed_hi"].to_numpy(float) - y], fmt="o", ms=3,
                        color=colour, capsize=2, label=f"{operating_point_label(name)}: binned (Wilson)")
        if var in LOG_AXIS:
            ax.set_xscale("log")
        ax.set_xlabel(LABELS.get(var, var))
        ax.set_ylabel("completeness")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    atomic.save_figure(path, fig, dpi=110, bbox_inches="tight")
    plt.close(fig)


def coverage_figure(coverage: dict, confidence: float, n_seeds: int, path: Path) -> None:
    """Coverage of the truth by each estimator's intervals per operating point, with the Wilson
    interval of the coverage itself, against the nominal level and the 0.90-0.99 acceptance band."""
    keys = [k for k in coverage if "@" in k]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.axhspan(0.90, 0.99, color="0.9", label="0.90-0.99")
    ax.axhline(confidence, color="k", lw=0.8, ls="--", label=f"nominal {confidence:.0%}")
    for i, k in enumerate(keys):
        c = coverage[k]
        ax.errorbar([i], [c["coverage"]], yerr=[[c["coverage"] - c["lo"]], [c["hi"] - c["coverage"]]], fmt="o",
                    color=f"C{['wilson', 'bootstrap', 'model'].index(k.split('@')[0]) if k.split('@')[0] in ('wilson', 'bootstrap', 'model') else 3}")
    ax.set_xticks(range(len(keys)), [k.replace("@", "\n") for k in keys], fontsize=7)
    ax.set_ylabel("coverage of the truth")
    ax.set_ylim(0.5, 1.01)
    ax.set_title(f"closure test: {n_seeds} seeds of the analytic finder", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    atomic.save_figure(path, fig, dpi=110, bbox_inches="tight")
