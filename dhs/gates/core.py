"""Core gates (docs/conventions.md, shortcuts: the core-brightness shortcut).

**core_only**: a logistic regression on the central pixels alone (r_px <= ``core_radius_px``,
all three bands, each pixel standardised on train) of the same normalised stamps the model
sees, fitted on the train split and scored on test. If it separates injections from controls
(AUC well above 0.5) the data carries the label in the core: with ~1.3 arcsec seeing the PSF
spreads arc light into the central pixels, and a CNN can learn "bright core = lens" instead of
arc morphology (the earlier pipeline: AUC 0.98 from the central 10x10 pixels). The gate is on
the data as the model sees it, so preprocessing (radial-profile subtraction) can change it.

**core_masked**: the model's AUROC on test stamps before and after the core disc is replaced,
in nMgy before normalisation, by Gaussian noise at the stamp's own sky level and sigma (so the
core looks like empty sky). A model that finds arcs where they are loses little; one that reads
the core loses a lot. Arcs with a small Einstein radius lie inside the masked disc and are
legitimately lost, so the gated drop is measured on controls and on the injections whose
Einstein radius clears the core: theta_E >= core radius + ``core_mask_clearance_fwhm`` x PSF FWHM
(r band). (An offset source's counter-image, at about theta_E - beta, may still fall inside;
the main arc, at about theta_E + beta, does not.)
The drop over all test stamps is reported beside it. Without a ``theta_e_arcsec`` column all
injections are used, and the detail says so.

Both decide on intervals (``dhs.gates.result.decide``): core_only FAILs when the whole 95%
interval of the test AUC (stratified bootstrap) is >= ``core_auc_max``; core_masked when the
whole 95% interval of the drop is >= ``core_mask_max_auc_drop``, the drop bootstrapped paired
(each resample of rows scored before and after masking, ``paired_aucs``). Both SKIP with fewer
than ``min_rows_per_class`` rows of a class (core_masked: controls and arcs that clear the core).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dhs.evaluation.seeing import psf_r_arcsec
from dhs.gates.config import GatesConfig
from dhs.gates.pixels import ScoreFn, normalised, sky_level_and_sigma
from dhs.gates.result import (CONSISTENT, Limit, auc_with_ci, decide, enough_rows, gate_result, interval_record,
                              paired_aucs, skipped)
from dhs.models.loader import NormConfig
from dhs.imaging.geometry import core_mask


def core_limit(cfg: GatesConfig) -> Limit:
    return Limit("core_auc_max", cfg.core_auc_max)


def mask_limit(cfg: GatesConfig) -> Limit:
    return Limit("core_mask_max_auc_drop", cfg.core_mask_max_auc_drop)


CORE_RULE = core_limit(GatesConfig.from_params({})).rule("core-only test AUC")
MASK_RULE = mask_limit(GatesConfig.from_params({})).rule("AUROC(before) - AUROC(core masked) on controls + arcs clearing the core "
                                           "(interval: paired bootstrap)")


def core_features(images_nmgy: np.ndarray, norm: NormConfig, radius_px: float, batch_size: int = 512,
                  stats: np.ndarray | None = None) -> np.ndarray:
    """(N, C * n_core) the normalised pixels of the central disc r_px <= radius_px, C the channels
    the finder receives (3, or 6 with ``preprocess.input: raw_and_residual``)."""
    mask = core_mask(images_nmgy.shape[-1], radius_px)
    out = np.empty((len(images_nmgy), norm.channels * int(mask.sum())), dtype=np.float32)
    for sl, x in normalised(images_nmgy, norm, batch_size, stats):
        out[sl] = x[..., mask].reshape(len(x), -1)
    return out


def core_only_gate(train_nmgy: np.ndarray, train_y: np.ndarray, test_nmgy: np.ndarray, test_y: np.ndarray,
                   norm: NormConfig, cfg: GatesConfig, train_stats: np.ndarray | None = None,
                   test_stats: np.ndarray | None = None, test_meta: pd.DataFrame | None = None,
                   pixel_scale_arcsec: float | None = None) -> dict:
    """Logistic regression on core pixels: fit on train, AUC (with a bootstrap interval) on test.
    ``*_stats``: the cache's stored normalisation statistics of those rows, if any (faster).
    ``test_meta`` (optional, with the stamps' ``pixel_scale_arcsec``): adds the AUC on controls +
    arcs that clear the core, which tells a core signal made by small arcs' own light (that AUC
    ~0.5) from a processing difference."""
    name, thr, m = "core_only", cfg.core_auc_max, cfg.min_rows_per_class
    why = (enough_rows(train_y, m, "gates.core_n_train (0 = every train stamp) or use a larger train split",
                       ("positive train", "negative train")) or
           enough_rows(test_y, m, what=("positive test", "negative test")))
    if why:
        return skipped(name, thr, CORE_RULE, why, n=len(test_y), min_rows_per_class=m)
    xtr = core_features(train_nmgy, norm, cfg.core_radius_px, cfg.batch_size, train_stats)
    xte = core_features(test_nmgy, norm, cfg.core_radius_px, cfg.batch_size, test_stats)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(xtr), train_y)
    s_te = clf.decision_function(scaler.transform(xte))
    auc, ci = auc_with_ci(test_y, s_te, cfg.n_bootstrap, cfg.seed)
    auc_train = float(clf.score(scaler.transform(xtr), train_y))
    clear = {}
    if test_meta is not None and pixel_scale_arcsec is not None:
        keep, subset = arcs_clearing_core(test_meta, np.asarray(test_y), cfg.core_radius_px, cfg.core_mask_clearance_fwhm,
                                          pixel_scale_arcsec)
        if enough_rows(np.asarray(test_y)[keep], m) is None:
            clear = {"auc_arcs_clearing_core": auc_with_ci(np.asarray(test_y)[keep], s_te[keep], 0, cfg.seed)[0],
                     "n_injections_clearing_core": int(np.asarray(test_y)[keep].sum()), "subset_clearing_core": subset}
    status, decision, why = decide(auc, ci, core_limit(cfg))
    n_pix, n_chan = int(core_mask(int(train_nmgy.shape[-1]), cfg.core_radius_px).sum()), norm.channels
    detail = (f"a logistic regression on the {n_pix} central pixels (r <= {cfg.core_radius_px:g} px) of the {n_chan} input channels "
              f"reaches test AUC {auc:.3f} ({why}); " +
              ("the label is readable from the core alone: arc light spread into it by the PSF (its Moffat wings "
               "reach the core from bright arcs even at large theta_E) or a processing difference; a model may use it "
               "(see core_masked); compare preprocess.radial_profile_subtract / core_dropout_p, check the injections"
               if status == "FAIL" else
               "the core is not shown to give the label away"
               if decision == CONSISTENT else "the core alone does not give the label away") +
              (f" (controls vs arcs that clear the core: AUC {clear['auc_arcs_clearing_core']:.3f}"
               f"{', so the core signal is the light of arcs inside the core' if clear['auc_arcs_clearing_core'] < thr else ''})" if clear else ""))
    return gate_result(name, status, auc, thr, CORE_RULE, detail, **interval_record(ci, len(test_y), decision, cfg.n_bootstrap),
                       auc_ci95=ci, min_rows_per_class=m, train_accuracy=auc_train, n_train=len(train_y), n_test=len(test_y),
                       n_core_pixels=n_pix, n_channels=n_chan, core_radius_px=cfg.core_radius_px, normalisation=norm.mode,
                       radial_profile_subtract=norm.radial_profile_subtract, **clear)


def mask_core(images_nmgy: np.ndarray, radius_px: float, sky_level: np.ndarray, sky_sigma: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """Copy of (N, 3, S, S) nMgy images with the disc r_px <= radius_px replaced by
    N(sky_level, sky_sigma^2) per stamp and band ((N, 3) arrays)."""
    out = np.array(images_nmgy, dtype=np.float32, copy=True)
    mask = core_mask(out.shape[-1], radius_px)
    noise = rng.standard_normal((len(out), 3, int(mask.sum())))
    out[..., mask] = (sky_level[..., None] + sky_sigma[..., None] * noise).astype(np.float32)
    return out


def arcs_clearing_core(meta: pd.DataFrame, labels: np.ndarray, radius_px: float, clearance_fwhm: float,
                       pixel_scale_arcsec: float) -> tuple[np.ndarray, str]:
    """Rows kept for the gated core-mask AUROC: every control, and the injections with
    theta_E >= radius_px * pixel scale + clearance_fwhm * PSF FWHM (r band, dhs.evaluation.seeing)."""
    if "theta_e_arcsec" not in meta.columns:
        return np.ones(len(meta), bool), "no theta_e_arcsec column: all injections used"
    theta = pd.to_numeric(meta["theta_e_arcsec"], errors="coerce").to_numpy(np.float64)
    psf = psf_r_arcsec(meta)[0]
    need = radius_px * pixel_scale_arcsec + clearance_fwhm * psf
    with np.errstate(invalid="ignore"):
        # an injection whose PSF is unknown cannot be shown to clear the core: left out, and counted
        keep = (labels == 0) | (np.isfinite(need) & (theta >= need))
    unknown = int(((labels == 1) & ~np.isfinite(psf)).sum())
    note = f"; {unknown} injection(s) without a PSF FWHM left out" if unknown else ""
    return keep, f"controls + injections with theta_E >= {radius_px:g} px x {pixel_scale_arcsec} + {clearance_fwhm:g} x FWHM_r{note}"


def core_masked_gate(score: ScoreFn, images_nmgy: np.ndarray, labels: np.ndarray, meta: pd.DataFrame,
                     cfg: GatesConfig, pixel_scale_arcsec: float, logits_before: np.ndarray | None = None,
                     examples: dict | None = None) -> dict:
    """Model AUROC before and after masking the core with sky noise; the gate is on the drop
    (``pixel_scale_arcsec``: the stamps' pixel scale, for which arcs clear the core).
    ``examples`` (optional dict) receives a few masked injections and all logits."""
    name, thr, m = "core_masked", cfg.core_mask_max_auc_drop, cfg.min_rows_per_class
    why = enough_rows(labels, m, what=("injection", "control"))
    if why:
        return skipped(name, thr, MASK_RULE, why, n=len(labels), min_rows_per_class=m)
    level, sigma = sky_level_and_sigma(images_nmgy, meta)
    masked = mask_core(images_nmgy, cfg.core_radius_px, level, sigma, np.random.default_rng([cfg.seed, 11]))
    before = score(images_nmgy, meta) if logits_before is None else logits_before
    after = score(masked, meta)
    if examples is not None:
        inj = np.flatnonzero(labels == 1)[:3]
        examples.update(masked_injection=masked[inj], unmasked_injection=np.asarray(images_nmgy[inj]), logit_before=before,
                        logit_after=after, labels=labels)
    keep, subset = arcs_clearing_core(meta, labels, cfg.core_radius_px, cfg.core_mask_clearance_fwhm, pixel_scale_arcsec)
    auc_all_before, _ = auc_with_ci(labels, before, 0, cfg.seed)
    auc_all_after, _ = auc_with_ci(labels, after, 0, cfg.seed)
    extra = {"auc_all_before": auc_all_before, "auc_all_after": auc_all_after, "auc_drop_all": auc_all_before - auc_all_after,
             "n_injections_all": int(labels.sum()), "n_controls": int((labels == 0).sum()), "subset": subset,
             "median_logit_shift_controls": float(np.median(after[labels == 0] - before[labels == 0]))}
    why = enough_rows(labels[keep], m, what=("injection(s) clearing the core", "control"))
    if why:
        return skipped(name, thr, MASK_RULE, f"subset ({subset}): {why}", n=int(keep.sum()), min_rows_per_class=m, **extra)
    p = paired_aucs(labels[keep], before[keep], after[keep], cfg.n_bootstrap, cfg.seed)
    drop = p["drop"]
    status, decision, why = decide(drop, p["drop_ci95"], mask_limit(cfg))
    detail = (f"replacing the central r <= {cfg.core_radius_px:g} px by sky noise moves the AUROC from {p['auc_before']:.3f} to "
              f"{p['auc_after']:.3f} (drop {drop:+.3f}) on arcs that clear the core (all stamps: {auc_all_before:.3f} -> "
              f"{auc_all_after:.3f}); {why}; " +
              ("the model reads the core even where the arc is not there: a core-brightness shortcut" if status == "FAIL" else
               "the model is not shown to depend on the core"
               if decision == CONSISTENT else "the model does not depend on the core for them"))
    return gate_result(name, status, drop, thr, MASK_RULE, detail,
                       **interval_record(p["drop_ci95"], int(keep.sum()), decision, cfg.n_bootstrap),
                       min_rows_per_class=m, auc_before=p["auc_before"], auc_before_ci95=p["auc_before_ci95"], auc_after=p["auc_after"],
                       auc_after_ci95=p["auc_after_ci95"], n_injections=int(labels[keep].sum()), **extra)
