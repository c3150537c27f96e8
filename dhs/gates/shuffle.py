"""Annulus-shuffled hard negatives: does the model see arc morphology, or only radial flux?

Per stamp, the pixels of every integer-radius annulus about the host's centre (measured on the
stamp, ``dhs.imaging.centring``; ``dhs.imaging.geometry`` for the annuli) are permuted at random, with the same permutation for g, r and z (each pixel keeps its colour).
That destroys the arc's shape (its light is scattered around its annulus) but keeps, exactly,
each annulus's set of pixel values: the radial flux profile, the total flux and the colours.
A round host is almost unchanged; sky noise is i.i.d. and stays statistically the same.

Gate: the model's AUROC of the real injections (positive) against their shuffled versions
(negative). A detector that uses arc morphology scores the real stamp higher (AUROC well above
0.5); one that only measures how much light sits at which radius cannot tell them apart
(AUROC ~ 0.5). Injections the model does not detect at all say nothing about morphology (both
versions score like controls), so the gated AUROC uses the injections scored above the controls'
1% false-positive threshold ("detected"); the AUROC over all injections, the paired fraction
of real > shuffled, and the AUROC of the shuffled versions against controls (what radial flux
alone is worth to this model) are reported beside it, and so is the AUROC of shuffled controls
against the same controls: the shuffle scrambles an elliptical host's outskirts too, and this
says how much that alone moves the score (near 0.5: the gate measures the arc, not the artefact). Threshold ``shuffle_min_auc`` 0.75: at
least three in four (real, shuffled) pairs ordered correctly. The gate decides on the AUROC's 95%
interval (stratified bootstrap): FAIL only when the whole interval is below ``shuffle_min_auc``
(``dhs.gates.result.decide``). Fewer than ``min_rows_per_class`` injections, or detected
injections: SKIP.
"""

from __future__ import annotations

import numpy as np
import torch

from dhs.gates.config import GatesConfig
from dhs.gates.pixels import ScoreFn, chunks
from dhs.gates.result import CONSISTENT, Limit, auc_with_ci, decide, gate_result, interval_record, skipped, too_few
from dhs.imaging.centring import fourier_shift, measure_centres
from dhs.imaging.geometry import annulus_table


def shuffle_limit(cfg: GatesConfig) -> Limit:
    return Limit("shuffle_min_auc", cfg.shuffle_min_auc, upper=False, strict=False)


SHUFFLE_RULE = shuffle_limit(GatesConfig.from_params({})).rule("AUROC(detected injections vs their annulus-shuffled versions)")


def annulus_shuffle(images: np.ndarray, rng: np.random.Generator, batch: int = 256) -> np.ndarray:
    """(N, C, S, S) -> a copy with the pixels of each integer-radius annulus permuted per stamp
    (one permutation per stamp and annulus, shared by all bands)."""
    images = np.asarray(images)
    N, C, S, _ = images.shape
    t = annulus_table(S)
    idx, valid = t.index, t.valid
    flat_src = images.reshape(N, C, S * S)
    out = np.empty_like(flat_src)
    for sl in chunks(N, batch):
        b = sl.stop - sl.start
        keys = rng.random((b,) + idx.shape)
        keys[:, ~valid] = np.inf  # padding sorts last, so real entries are permuted among themselves
        perm = np.take_along_axis(np.broadcast_to(idx, keys.shape), np.argsort(keys, axis=-1), axis=-1)  # (b, K, M)
        dst = idx[valid]  # (S*S,) every pixel once
        src = perm[:, valid]  # (b, S*S): the pixel each destination takes its value from
        out[sl][..., dst] = np.take_along_axis(flat_src[sl], src[:, None, :].repeat(C, axis=1), axis=-1)
    return out.reshape(images.shape)


def annulus_shuffle_about_host(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``annulus_shuffle`` about each host's measured centre: the stamp is moved so that the host
    sits on the stamp centre (Fourier shift), shuffled, and moved back."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))
    c = measure_centres(x)
    centred = fourier_shift(x, -c).numpy()
    return fourier_shift(torch.from_numpy(annulus_shuffle(centred, rng)), c).numpy()


def shuffle_gate(score: ScoreFn, injections_nmgy: np.ndarray, injections_meta, control_logits: np.ndarray,
                 cfg: GatesConfig, threshold_logit: float, examples: dict | None = None,
                 logits_real: np.ndarray | None = None, probe_controls: tuple | None = None) -> dict:
    """AUROC of real injections against their annulus-shuffled versions (see module docstring).

    ``control_logits``: logits of the test controls (for the shuffled-vs-controls AUROC).
    ``logits_real``: the injections' logits if already computed. ``probe_controls`` (optional):
    (images, metadata, logits) of controls to shuffle as well, measuring how much the shuffle
    alone (a scrambled elliptical host) moves a score: reported, not gated."""
    name, thr, m = "annulus_shuffle", cfg.shuffle_min_auc, cfg.min_rows_per_class
    if len(injections_nmgy) < m:
        return skipped(name, thr, SHUFFLE_RULE, too_few(f"{len(injections_nmgy)} injections (and as many shuffled versions)", m),
                       n=2 * len(injections_nmgy), min_rows_per_class=m)
    shuffled = annulus_shuffle_about_host(injections_nmgy, np.random.default_rng([cfg.seed, 31]))
    real = score(injections_nmgy, injections_meta) if logits_real is None else np.asarray(logits_real)
    shuf = score(shuffled, injections_meta)
    n = len(real)
    y = np.r_[np.ones(n), np.zeros(n)]
    auc_all, _ = auc_with_ci(y, np.r_[real, shuf], 0, cfg.seed)
    y_sc = np.r_[np.ones(n), np.zeros(len(control_logits))]
    auc_shuf_vs_ctl = auc_with_ci(y_sc, np.r_[shuf, control_logits], 0, cfg.seed)[0] if len(control_logits) else None
    det = real > threshold_logit
    auc_ctl_shuf = None
    if probe_controls is not None and len(probe_controls[0]) >= 20:
        c_img, c_meta, c_logits = probe_controls
        shuf_ctl = score(annulus_shuffle_about_host(c_img, np.random.default_rng([cfg.seed, 32])), c_meta)
        k = len(shuf_ctl)
        auc_ctl_shuf = auc_with_ci(np.r_[np.ones(k), np.zeros(k)], np.r_[shuf_ctl, c_logits], 0, cfg.seed)[0]
    extra = {"auc_all_injections": auc_all, "paired_frac_real_above_shuffled": float((real > shuf).mean()),
             "auc_shuffled_vs_controls": auc_shuf_vs_ctl, "auc_shuffled_controls_vs_controls": auc_ctl_shuf, "n_injections": n, "n_detected": int(det.sum()),
             "threshold_logit_fpr1pct": float(threshold_logit),
             "frac_shuffled_flagged": float((shuf > threshold_logit).mean())}
    if examples is not None:
        examples.update(injection=injections_nmgy[:3].copy(), shuffled=shuffled[:3].copy(), logit_injection=real, logit_shuffled=shuf)
    k = int(det.sum())
    if k < m:
        return skipped(name, thr, SHUFFLE_RULE, too_few(f"{k} of {n} injections detected (scored above the controls' 1% FPR "
                                                        f"threshold), and as many shuffled versions", m),
                       n=2 * k, min_rows_per_class=m, **extra)
    yd = np.r_[np.ones(k), np.zeros(k)]
    auc, ci = auc_with_ci(yd, np.r_[real[det], shuf[det]], cfg.n_bootstrap, cfg.seed)
    status, decision, why = decide(auc, ci, shuffle_limit(cfg))
    vs_ctl = auc_shuf_vs_ctl if auc_shuf_vs_ctl is None else round(auc_shuf_vs_ctl, 3)
    detail = (f"detected injections score above their annulus-shuffled versions with AUROC {auc:.3f} ({why}; "
              f"all injections {auc_all:.3f}; shuffled vs controls {vs_ctl}); " +
              ("shuffling the arc's pixels around its annulus barely changes the score: the model measures radial flux, not arcs"
               if status == "FAIL" else
               "the model is not shown to measure radial flux only"
               if decision == CONSISTENT else "the model uses arc morphology, not only radial flux"))
    return gate_result(name, status, auc, thr, SHUFFLE_RULE, detail, **interval_record(ci, 2 * k, decision, cfg.n_bootstrap),
                       auc_ci95=ci, min_rows_per_class=m, **extra)
