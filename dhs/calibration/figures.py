"""The reliability diagram of the calibration stage (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np

from dhs.calibration.config import CalibrationConfig
from dhs.evaluation.reliability import ReliabilityCurve


def reliability_figure(curves_by_key: dict[tuple[str, str], ReliabilityCurve], probs_by_stage: dict[str, np.ndarray],
                       cfg: CalibrationConfig, title: str):
    """Reliability diagram per strategy (top) above the histogram of eval-split probabilities
    before and after calibration (bottom, log counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = len(cfg.strategies)
    fig = plt.figure(figsize=(4.2 * ns, 6.4))
    gs = fig.add_gridspec(2, ns, height_ratios=[3, 1.3], hspace=0.35)
    colours = {"before": "tab:red", "after": "tab:blue"}
    for j, strategy in enumerate(cfg.strategies):
        ax = fig.add_subplot(gs[0, j])
        ax.plot([0, 1], [0, 1], ls="--", c="0.5", lw=1, label="perfect")
        for stage in probs_by_stage:
            c = curves_by_key[(strategy, stage)]
            f = c.count > 0
            ax.plot(c.mean_predicted[f], c.observed_fraction[f], "o-", ms=3, c=colours[stage],
                    label=f"{stage} (ECE {c.ece:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted P(lens)", ylabel="observed injection fraction",
               title=f"{strategy} bins (n={cfg.n_bins})")
        ax.legend(fontsize=8, loc="upper left")
    ax = fig.add_subplot(gs[1, :])
    bins = np.linspace(0, 1, 51)
    for stage, p in probs_by_stage.items():
        ax.hist(p, bins=bins, histtype="step", color=colours[stage], label=stage)
    ax.set(yscale="log", xlim=(0, 1), xlabel=f"P(lens) on {cfg.eval_split}", ylabel="stamps")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig
