"""The gates figure: the probes as the model sees them and where their scores fall.

Top rows: r-band stamps (asinh of (pixel - sky) / sky sigma) of a control, the faint ring and
the arc of the same flux that were added to it (shown alone, on the control's noise scale, with
the logit of control + probe); an injection, its annulus-shuffled
version and its core-masked version. Bottom: logit histograms of test controls, injections,
core-masked injections, shuffled injections, ring- and arc-probed controls, with the controls'
1% false-positive threshold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dhs import atomic


def _stamp(ax, img_r: np.ndarray, title: str, ref: np.ndarray | None = None) -> None:
    """asinh((pixel - sky) / sigma), sky and sigma from ``ref`` (default: the image itself), so a
    noise-free probe is shown on the scale of the stamp it was added to."""
    ref = img_r if ref is None else ref
    sky = float(np.median(ref)) if ref is img_r else 0.0
    sigma = max(1.4826 * float(np.median(np.abs(ref - np.median(ref)))), 1e-12)
    z = np.arcsinh((img_r - sky) / sigma)  # ~linear within a few sigma, logarithmic for the bright core
    ax.imshow(z, origin="lower", cmap="gray", vmin=-2, vmax=max(float(np.percentile(z, 99.8)), 2.0))
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_gates(path: str | Path, metrics: dict, examples: dict, arch: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ring, shuf, mask = examples.get("ring", {}), examples.get("shuffle", {}), examples.get("mask", {})
    fig = plt.figure(figsize=(12, 8.5))
    gs = fig.add_gridspec(3, 6, height_ratios=[1, 1, 1.3])
    panels = []
    for i in range(min(2, len(ring.get("control", [])))):
        ref = np.asarray(ring["control"][i])[1]
        panels += [(ring["control"][i], f"control {i}: {ring['logit_control'][i]:+.1f}", None),
                   (ring["ring"][i], f"ring added (alone): {ring['logit_ring'][i]:+.1f}", ref),
                   (ring["arc"][i], f"arc, same flux (alone): {ring['logit_arc'][i]:+.1f}", ref)]
    for i in range(min(2, len(shuf.get("injection", [])))):
        panels += [(shuf["injection"][i], f"injection {i}: {shuf['logit_injection'][i]:+.1f}", None),
                   (shuf["shuffled"][i], f"annulus-shuffled: {shuf['logit_shuffled'][i]:+.1f}", None)]
        if i < len(mask.get("masked_injection", [])):
            panels.append((mask["masked_injection"][i], "core masked", None))
    for k, (img, title, ref) in enumerate(panels[:12]):
        _stamp(fig.add_subplot(gs[k // 6, k % 6]), np.asarray(img)[1], title, ref)
    ax = fig.add_subplot(gs[2, :])
    logits, labels = examples.get("logits"), examples.get("labels")
    series = []
    if logits is not None:
        series += [(logits[labels == 0], "test controls"), (logits[labels == 1], "test injections")]
    if "logit_after" in mask:
        series.append((mask["logit_after"][mask["labels"] == 1], "injections, core masked"))
    if "logit_shuffled" in shuf:
        series.append((shuf["logit_shuffled"], "injections, annulus-shuffled"))
    if "logit_ring" in ring:
        series += [(ring["logit_ring"], "controls + ring"), (ring["logit_arc"], "controls + arc (same flux)")]
    allv = np.concatenate([np.asarray(s) for s, _ in series]) if series else np.zeros(1)
    bins = np.linspace(np.percentile(allv, 0.5), np.percentile(allv, 99.5), 60)
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for (s, lab), c in zip(series, colours):
        ax.hist(np.clip(s, bins[0], bins[-1]), bins=bins, histtype="step", density=True, color=c, lw=1.3, label=f"{lab} (n={len(s)})")
    thr = metrics.get("threshold_logit_fpr1pct")
    if thr is not None and np.isfinite(thr):
        ax.axvline(thr, color="k", ls="--", lw=1, label="controls' 1% FPR threshold")
    ax.set_xlabel("logit")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, ncol=2)
    status = ", ".join(f"{r['name']} {r['status']}" for r in metrics["gates"].values())
    fig.suptitle(f"gates@{arch}: {'ALL PASS' if metrics['all_passed'] else 'FAILED'}\n{status}", fontsize=10,
                 color="green" if metrics["all_passed"] else "red")
    fig.tight_layout()
    atomic.save_figure(path, fig, dpi=90)
