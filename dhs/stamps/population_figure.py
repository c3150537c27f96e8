"""The injected population beside its anchor, as a figure (plots/stamps/population.png).

One panel per anchor quantity: the 5/25/50/75/95 % percentiles of every injection, of the
subset LensPop's cuts call discoverable, and of the LensPop forecast for the DES full coadd
(a box from 25 to 75 %, whiskers to 5 and 95 %, a tick at the median); and the arc peak-SNR mix
of the injections beside the reference mix (among visible arcs).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from dhs.simulate.detectability import ARC_SNR_LABELS
from dhs import atomic  # noqa: E402

PANELS = (("theta_e_arcsec", r"$\theta_E$ [arcsec]"), ("src_r_mag", "source r, unlensed [mag]"),
          ("lensed_src_r_mag", "source r, lensed [mag]"), ("magnification", "magnification"),
          ("src_dmag", "source - lens r [mag]"), ("src_reff_arcsec", "source half-light radius [arcsec]"),
          ("host_r_mag", "lens (host) r [mag]"))
LOG_PANELS = {"magnification", "src_reff_arcsec"}


def _box(ax, y: float, p, colour: str, label: str) -> None:
    if not p:
        return
    p5, p25, p50, p75, p95 = p
    ax.plot([p5, p95], [y, y], color=colour, lw=1)
    ax.add_patch(plt.Rectangle((p25, y - 0.25), p75 - p25, 0.5, color=colour, alpha=0.45, lw=0, label=label))
    ax.plot([p50, p50], [y - 0.3, y + 0.3], color=colour, lw=2)


def population_figure(summary: dict, path: str | Path) -> None:
    ours, det = summary.get("ours", {}), (summary.get("lenspop_detectable") or {}).get("ours", {})
    ref = summary.get("lenspop", {})
    panels = [(k, lab) for k, lab in PANELS if k in ours]
    n = len(panels) + 1
    cols = 4
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.3 * rows))
    axes = np.atleast_1d(axes).ravel()
    for ax, (key, label) in zip(axes, panels):
        _box(ax, 2, ours.get(key), "tab:blue", "injected (all)")
        _box(ax, 1, det.get(key), "tab:green", "injected, LensPop-discoverable")
        _box(ax, 0, ref.get(key), "tab:orange", "LensPop DES forecast")
        ax.set_yticks([])
        ax.set_ylim(-0.7, 2.7)
        ax.set_xlabel(label)
        if key in LOG_PANELS:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, axis="x")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    mix, ref_mix = summary.get("arc_snr_mix", {}), summary.get("arc_snr_reference_mix_of_visible", {})
    ax = axes[len(panels)]
    if mix:
        # low to high SNR (the metrics file stores the bins with its keys sorted as text)
        labels = [k for k in ARC_SNR_LABELS if k in mix] + [k for k in mix if k not in ARC_SNR_LABELS]
        x = np.arange(len(labels))
        ax.bar(x - 0.2, [mix[k] for k in labels], 0.4, label="injected (all)", color="tab:blue")
        visible = sum(v for k, v in mix.items() if k != "<0.8")
        ax.bar(x + 0.2, [ref_mix.get(k, 0.0) * visible for k in labels], 0.4, label="reference mix x visible share", color="tab:gray")
        ax.set_xticks(x, labels)
        ax.set_xlabel("arc peak SNR")
        ax.set_ylabel("fraction of injections")
        ax.legend(fontsize=7)
    for a in axes[len(panels) + 1:]:
        a.axis("off")
    fig.suptitle(f"Injected population ({summary.get('n_injections', 0)} injections): percentiles 5/25/50/75/95 %", y=1.07)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    atomic.save_figure(path, fig, dpi=100, bbox_inches="tight")
