"""Figures the report draws itself from what the stages wrote: ROC (plots/roc), training curves
(dvclive), grz galleries (``dhs.contract.rgb``), and completeness curves redrawn from a stage's
CSV when that stage wrote no PNG. No number is computed here.

matplotlib with the Agg backend, one figure at a time, closed after rendering to PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dhs.contract.rgb import grz_rgb  # noqa: E402
from dhs.evaluation.auc import thin_curve  # noqa: E402
from dhs.evaluation.display import colour_top  # noqa: E402
from dhs.evaluation.thresholds import operating_point_label  # noqa: E402

DPI = 100

def to_png(fig) -> bytes:
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buf.getvalue()


# the finder's input in noise units (sky sigma after the host's removal): sky near black, a
# 2-sigma excess visible, 10 sigma and above saturated
FINDER_VIEW_RANGE = (-2.0, 10.0)


def finder_view_rgb(cube_norm: np.ndarray) -> np.ndarray:
    """(S, S, 3) RGB in [0, 1] of a normalised (3, S, S) g, r, z cube as the finder receives it
    (``dhs.models.loader.normalize``): R, G, B = z, r, g, linear over ``FINDER_VIEW_RANGE``,
    so the colours of the residual (a blue arc, a red companion) stay visible."""
    cube = np.asarray(cube_norm, dtype=np.float64)
    if cube.ndim != 3 or cube.shape[0] != 3:
        raise ValueError(f"expected a (3, S, S) grz cube, got shape {cube.shape}")
    lo, hi = FINDER_VIEW_RANGE
    return np.clip((cube[::-1] - lo) / (hi - lo), 0.0, 1.0).transpose(1, 2, 0)


def gallery(rows: Sequence[tuple], cell_in: float = 1.35) -> bytes:
    """A grid of composites: one row per (label, [(stamp, caption), ...]) or (label, cells,
    to_rgb), ``to_rgb`` turning a (3, S, S) cube into RGB (default ``grz_rgb``: nMgy)."""
    rows = [r for r in rows if r[1]]
    if not rows:
        raise ValueError("a gallery needs at least one stamp")
    ncol = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(cell_in * ncol + 1.2, (cell_in + 0.45) * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        label, cells = row[0], row[1]
        to_rgb = row[2] if len(row) > 2 else grz_rgb
        for j in range(ncol):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(cells):
                stamp, caption = cells[j]
                ax.imshow(to_rgb(stamp), origin="lower", interpolation="nearest")
                ax.set_title(caption, fontsize=7, pad=2)
            else:
                ax.axis("off")
        axes[i][0].set_ylabel(label, fontsize=8)
    fig.tight_layout(pad=0.3, h_pad=0.6, w_pad=0.2)
    return to_png(fig)


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], fprs: Sequence[float], n_controls: Mapping[str, int]) -> bytes:
    """ROC per arch on linear and log FPR axes; dashed verticals at the target FPRs."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.3))
    for arch, (f, t, auc) in curves.items():
        f, t = thin_curve(f, t)
        label = f"{arch} (AUROC {auc:.4f}, {n_controls[arch]} controls)"
        ax1.plot(f, t, lw=1.5, label=label)
        pos = f > 0
        ax2.step(f[pos], t[pos], where="post", lw=1.5, label=arch)
    for x in fprs:
        ax2.axvline(x, color="0.5", ls="--", lw=0.8)
        ax2.text(x, 0.02, f" FPR {x:g}", rotation=90, fontsize=7, color="0.35", va="bottom")
    floor = min(1.0 / max(n_controls.values()), min(fprs)) / 2
    ax2.set_xscale("log")
    ax2.set_xlim(floor, 1.0)
    for ax in (ax1, ax2):
        ax.set_xlabel("false-positive rate (controls)")
        ax.set_ylabel("true-positive rate (injections)")
        ax.set_ylim(0, 1.01)
        ax.grid(alpha=0.3)
    ax1.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax1.legend(fontsize=8, loc="lower right")
    ax1.set_title("ROC")
    ax2.set_title("ROC, log FPR (the operating region)")
    return to_png(fig)


def training_figure(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]) -> bytes:
    """Per arch: train loss (line), val loss (markers) and val AUC against step; where the finder
    trains on a selection of the injections, its val loss and AUC on that selection (what the
    table reports) and, dotted, the AUC over every injection.

    ``curves[arch]`` maps any of train_loss, val_loss, val_auc, val_loss_selected, val_auc_selected
    to (steps, values)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arch, c) in enumerate(curves.items()):
        col = colours[i % len(colours)]
        if "train_loss" in c:
            ax1.plot(*c["train_loss"], color=col, lw=1, alpha=0.8, label=f"{arch} train")
        sel = "val_auc_selected" in c   # trained on a selection (visible arcs): its curves are the ones trained on
        if "val_loss_selected" in c:
            ax1.plot(*c["val_loss_selected"], color=col, marker="o", ls="--", label=f"{arch} val (as trained)")
        elif "val_loss" in c:
            ax1.plot(*c["val_loss"], color=col, marker="o", ls="--", label=f"{arch} val")
        if sel:
            ax2.plot(*c["val_auc_selected"], color=col, marker="o", label=f"{arch}: controls vs visible arcs (as trained)")
        if "val_auc" in c:
            ax2.plot(*c["val_auc"], color=col, marker="s" if sel else "o", ls=":" if sel else "-",
                     label=f"{arch}: controls vs every injection" if sel else arch)
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss (BCE)")
    ax1.set_title("loss")
    ax2.set_xlabel("step")
    ax2.set_ylabel("val AUROC")
    ax2.set_title("validation AUROC")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return to_png(fig)


def _float(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def completeness_from_csv(rows: Sequence[Mapping[str, str]], xlabel: str) -> bytes:
    """Completeness against one binning variable from a completeness CSV (columns subset,
    threshold, bin_center, completeness, wilson_lo/hi, boot_lo/hi, low_n): one panel per subset,
    one line per threshold, Wilson band shaded, bootstrap band dashed, low-n bins hollow."""
    need = {"bin_center", "completeness"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"a completeness CSV needs columns {sorted(need)}, has {sorted(rows[0]) if rows else []}")
    subsets = list(dict.fromkeys(r.get("subset", "all") for r in rows))
    fig, axes = plt.subplots(1, len(subsets), figsize=(5.2 * len(subsets), 3.8), squeeze=False)
    for ax, sub in zip(axes[0], subsets):
        part = [r for r in rows if r.get("subset", "all") == sub]
        for th in dict.fromkeys(r.get("threshold", "") for r in part):
            rr = sorted((r for r in part if r.get("threshold", "") == th), key=lambda r: _float(r["bin_center"]))
            x = np.array([_float(r["bin_center"]) for r in rr])
            y = np.array([_float(r["completeness"]) for r in rr])
            (line,) = ax.plot(x, y, marker="o", ms=4, label=operating_point_label(str(th)))
            col = line.get_color()
            if "wilson_lo" in rr[0]:
                ax.fill_between(x, [_float(r["wilson_lo"]) for r in rr], [_float(r["wilson_hi"]) for r in rr], color=col, alpha=0.18, lw=0)
            if "boot_lo" in rr[0]:
                ax.plot(x, [_float(r["boot_lo"]) for r in rr], color=col, ls="--", lw=0.8)
                ax.plot(x, [_float(r["boot_hi"]) for r in rr], color=col, ls="--", lw=0.8)
            low = np.array([str(r.get("low_n", "")).lower() in ("true", "1") for r in rr])
            if low.any():
                ax.plot(x[low], y[low], "o", ms=6, mfc="white", mec=col)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("completeness")
        ax.set_title(f"subset: {sub}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="threshold", title_fontsize=7)
    fig.suptitle(f"completeness vs {xlabel} (shaded: Wilson 95%; dashed: region bootstrap 95%; hollow: n < 50)", fontsize=9)
    fig.tight_layout()
    return to_png(fig)


_VALUE_PREFIXES = ("bin", "wilson", "boot")


def surface_from_csv(rows: Sequence[Mapping[str, str]], names: Sequence[str] = ()) -> bytes:
    """Completeness over a 2-D grid from a surface CSV whose two axes come as ``<name>_lo`` /
    ``<name>_hi`` column pairs (e.g. theta_e_lo/hi, psf_lo/hi). Uses subset 'all' (when there is a
    subset column) and each threshold in its own panel; cells are annotated with k/n. ``names``
    labels the two axes (default: the column prefixes)."""
    if not rows:
        raise ValueError("the surface CSV is empty")
    cols = list(rows[0])
    axes_names = [c[:-3] for c in cols if c.endswith("_lo") and f"{c[:-3]}_hi" in cols and c[:-3] not in _VALUE_PREFIXES]
    if len(axes_names) != 2 or "completeness" not in cols:
        raise ValueError(f"cannot find two <axis>_lo/_hi column pairs and a completeness column in {cols}")
    if "subset" in cols:
        rows = [r for r in rows if r["subset"] == "all"] or list(rows)
    thresholds = list(dict.fromkeys(r.get("threshold", "") for r in rows))
    (xa, ya) = axes_names
    fig, axs = plt.subplots(1, len(thresholds), figsize=(5.4 * len(thresholds), 4.2), squeeze=False)
    for ax, th in zip(axs[0], thresholds):
        part = [r for r in rows if r.get("threshold", "") == th]
        xe = sorted({_float(r[f"{xa}_lo"]) for r in part} | {_float(r[f"{xa}_hi"]) for r in part})
        ye = sorted({_float(r[f"{ya}_lo"]) for r in part} | {_float(r[f"{ya}_hi"]) for r in part})
        grid = np.full((len(ye) - 1, len(xe) - 1), np.nan)
        for r in part:
            i, j = ye.index(_float(r[f"{ya}_lo"])), xe.index(_float(r[f"{xa}_lo"]))
            grid[i, j] = _float(r["completeness"])
            if "n" in r and "k" in r:
                ax.text((xe[j] + xe[j + 1]) / 2, (ye[i] + ye[i + 1]) / 2, f"{r['k']}/{r['n']}", ha="center", va="center", fontsize=6)
        top = colour_top(grid)
        mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(grid), vmin=0, vmax=top, cmap="viridis", alpha=0.85)
        ax.set_xlabel(names[0] if len(names) == 2 else xa)
        ax.set_ylabel(names[1] if len(names) == 2 else ya)
        ax.set_title(operating_point_label(th), fontsize=9)
        fig.colorbar(mesh, ax=ax, label=f"completeness (scale 0-{top:g})")
    return to_png(fig)


# variables whose bins span decades: drawn on a log axis
LOG_VARS = {"arc_snr"}


def completeness_overlay(curves: Mapping[str, Mapping[str, Sequence[Mapping[str, str]]]], variables: Sequence[tuple[str, str]],
                         threshold: str, subset: str = "all") -> bytes:
    """Every arch on the same axes: one panel per binning variable, completeness at ``threshold``
    of the ``subset`` injections with its Wilson band; bins with n = 0 are not drawn.

    ``curves[arch][var]`` are the rows of ``plots/completeness/{arch}/{var}.csv``; ``variables``
    lists (var, axis label). The y axis ends just above the highest interval drawn."""
    ncol = min(2, len(variables))
    nrow = -(-len(variables) // ncol)
    fig, grid = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow), squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(variables):]:
        ax.axis("off")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    y_top = 0.0
    for ax, (var, label) in zip(axes, variables):
        for i, (arch, by_var) in enumerate(curves.items()):
            rows = [r for r in by_var.get(var, ()) if r.get("threshold") == threshold and r.get("subset", "all") == subset
                    and _float(r.get("n")) > 0]
            if not rows:
                continue
            rows.sort(key=lambda r: _float(r["bin_center"]))
            lo, hi = np.array([_float(r["bin_lo"]) for r in rows]), np.array([_float(r["bin_hi"]) for r in rows])
            x = np.sqrt(np.maximum(lo, hi / 4) * hi) if var in LOG_VARS else np.array([_float(r["bin_center"]) for r in rows])
            y = np.array([_float(r["completeness"]) for r in rows])
            wl, wh = np.array([_float(r["wilson_lo"]) for r in rows]), np.array([_float(r["wilson_hi"]) for r in rows])
            col = colours[i % len(colours)]
            ax.plot(x, y, marker="o", ms=4, color=col, label=arch)
            ax.fill_between(x, wl, wh, color=col, alpha=0.18, lw=0)
            y_top = max(y_top, float(np.nanmax(wh)))
        if var in LOG_VARS:
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    top = min(1.02, max(0.1, 1.08 * y_top))
    for ax in axes[: len(variables)]:
        ax.set_ylim(-0.02 * top, top)
    for row in grid:
        row[0].set_ylabel(f"completeness ({subset}, {operating_point_label(threshold)})")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 6), fontsize=9,
                   title="arch (band: Wilson 95%)", title_fontsize=8, frameon=False)
    fig.tight_layout()
    return to_png(fig)
