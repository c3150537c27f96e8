"""Completeness figures (matplotlib, Agg): curves with Wilson error bars and region-bootstrap
bands, the theta_E x PSF surface, and the proxy curves of the sensitivity stage."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from dhs import atomic  # noqa: E402
from dhs.evaluation.display import colour_top  # noqa: E402
from dhs.evaluation.thresholds import operating_point_label  # noqa: E402


LABELS = {"theta_e_arcsec": r"$\theta_E$ [arcsec]", "theta_e_over_psf": r"$\theta_E$ / PSF FWHM$_r$",
          "psf_r_arcsec": "PSF FWHM r [arcsec]", "psfdepth_r": r"5$\sigma$ depth r [mag]", "src_r_mag": "source r [mag, unlensed]",
          "arc_snr": "arc SNR (peak pixel)", "lensed_src_r_mag": "source r [mag, as lensed]",
          "host_r_mag": "host (lens) r [mag]", "arc_snr_int": "arc S/N (matched filter, best band)",
          "magnification": r"total magnification $\mu$", "mu_reff_over_psf": r"$\mu\,r_s$ / PSF FWHM$_r$"}
# variables spread over decades are drawn on a log axis (bins at 0 drawn at the first positive edge)
LOG_AXIS = {"arc_snr", "arc_snr_int", "magnification", "mu_reff_over_psf"}


def base_variable(var: str) -> str:
    """The binned column of a curve: ``discoverable__theta_e_over_psf`` -> ``theta_e_over_psf``."""
    return var.split("__", 1)[1] if var.startswith("discoverable__") else var


def _save(fig, path: Path) -> None:
    atomic.save_figure(path, fig, dpi=110, bbox_inches="tight")


def _finish(fig, axes, y_top: float, legend_title: str) -> None:
    """The y axis up to the highest interval drawn (completeness of a few per cent is not a flat
    line at the bottom of a 0-1 axis), and one legend below the panels, where it covers no curve."""
    top = min(1.02, max(0.1, 1.08 * y_top)) if np.isfinite(y_top) else 1.02
    for ax in axes:
        ax.set_ylim(-0.02 * top, top)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 6), fontsize=8,
                   title=legend_title, title_fontsize=8, frameon=False)


def curve_figure(table: pd.DataFrame, var: str, title: str, path: Path, criteria: list[str] | None = None) -> None:
    """One panel per subset (all, clean); a line per threshold with Wilson error bars and the
    region-bootstrap interval as a band."""
    t = table[table["var"] == var]
    var = base_variable(var)
    crits = criteria or list(dict.fromkeys(t["criterion"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    y_top = 0.0
    for ax, subset in zip(axes, ("all", "clean")):
        for i, c in enumerate(crits):
            s = t[(t["subset"] == subset) & (t["criterion"] == c) & (t["n"] > 0)].sort_values("bin_center")
            if s.empty:
                continue
            x, y = s["bin_center"].to_numpy(), s["completeness"].to_numpy()
            if var in LOG_AXIS:  # geometric bin centres; the first bin starts at 0
                lo, hi = s["bin_lo"].to_numpy(float), s["bin_hi"].to_numpy(float)
                x = np.where(np.isfinite(hi), np.sqrt(np.maximum(lo, hi / 4) * hi), 2 * lo)
            err = np.clip(np.vstack([y - s["wilson_lo"].to_numpy(), s["wilson_hi"].to_numpy() - y]), 0, None)  # rounding at k=0, k=n
            line = ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=operating_point_label(c))
            ax.fill_between(x, s["boot_lo"], s["boot_hi"], alpha=0.15, color=line[0].get_color(), lw=0)
            y_top = max(y_top, float(np.nanmax(s["wilson_hi"])), float(np.nanmax(s["boot_hi"].astype(float))))
            low = s["low_n"].to_numpy(bool)
            if low.any():
                ax.scatter(x[low], y[low], facecolors="none", edgecolors="k", s=60, zorder=5)
        ax.set_title(f"{subset}")
        ax.set_xlabel(LABELS.get(var, var))
        if var in LOG_AXIS:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("completeness")
    _finish(fig, axes, y_top, "threshold (bars: Wilson 95%, band: region bootstrap; ring: n<50)")
    fig.suptitle(title)
    _save(fig, path)


def surface_figure(table: pd.DataFrame, var: str, x_edges, y_edges, criterion: str, title: str, path: Path, x_label: str, y_label: str) -> None:
    nx, ny = len(x_edges) - 1, len(y_edges) - 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = table[(table["var"] == var) & (table["criterion"] == criterion)]
    top = colour_top(rows.loc[rows["n"] > 0, "completeness"])
    for ax, subset in zip(axes, ("all", "clean")):
        s = rows[rows["subset"] == subset].sort_values("bin")
        comp = s["completeness"].to_numpy().reshape(nx, ny)
        n = s["n"].to_numpy().reshape(nx, ny)
        im = ax.pcolormesh(x_edges, y_edges, comp.T, vmin=0, vmax=top, cmap="viridis")
        for i in range(nx):
            for j in range(ny):
                if n[i, j]:
                    ax.text((x_edges[i] + x_edges[i + 1]) / 2, (y_edges[j] + y_edges[j + 1]) / 2, f"{n[i, j]}", ha="center", va="center",
                            fontsize=6, color="w" if comp[i, j] < 0.6 * top else "k")
        ax.set_title(f"{subset} ({operating_point_label(criterion)}; numbers: injections per cell)")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        fig.colorbar(im, ax=ax, label=f"completeness (scale 0-{top:g})")
    fig.suptitle(title)
    _save(fig, path)


def placeholder_figure(path: Path, message: str) -> None:
    """A declared figure that has nothing to draw says why."""
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    _save(fig, path)


def sensitivity_figure(table: pd.DataFrame, var: str, plot_threshold: str, path: Path) -> None:
    """The proxies (dashed) beside each arch's model curve at ``plot_threshold`` (solid, Wilson band)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    y_top = 0.0
    for ax, subset in zip(axes, ("all", "clean")):
        t = table[(table["var"] == var) & (table["subset"] == subset) & (table["n"] > 0)]
        for curve, s in t.groupby("curve", sort=False):
            if s["kind"].iloc[0] == "model" and not curve.endswith(plot_threshold):
                continue
            s = s.sort_values("bin_center")
            style = dict(ls="--", marker="s", ms=3) if s["kind"].iloc[0] == "proxy" else dict(ls="-", marker="o", ms=4, lw=2)
            line, = ax.plot(s["bin_center"], s["completeness"], label=operating_point_label(curve), **style)
            ax.fill_between(s["bin_center"], s["wilson_lo"], s["wilson_hi"], color=line.get_color(), alpha=0.15, lw=0)
            y_top = max(y_top, float(np.nanmax(s["wilson_hi"])))
        ax.set_title(subset)
        ax.set_xlabel(LABELS.get(var, var))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("completeness")
    _finish(fig, axes, y_top, "dashed: Phase 4d proxy; solid: model (band: Wilson 95%)")
    fig.suptitle(f"proxy vs detector completeness against {LABELS.get(var, var)}")
    _save(fig, path)
