"""Ring probe (docs/conventions.md, shortcuts: the faint-ring shortcut): does a faint synthetic ring convince the model more than a
real lensed arc of the same flux?

For each probed control (test split) two versions are scored:

- **ring**: a thin ring centred on the stamp, radius ``ring_radius_arcsec``, Gaussian radial
  profile of width ``ring_sigma_px`` (before the PSF), convolved with the stamp's own PSF in each
  band (the simulator's PSF model, ``simulate.psf_model`` and ``moffat_beta``; FWHM
  ``psf_fwhm_used_{g,r,z}``, else ``psfsize_r`` x ``simulate.psf_fwhm_ratio``) and scaled so its
  r-band peak after the PSF is ``ring_peak_sigma`` x the stamp's r-band sky sigma per pixel
  (1 sigma: barely visible by eye);
- **arc**: a lensed Sersic source (100 ray-traced templates reused cyclically; ``dhs.simulate``:
  SIE + shear, lenstronomy conventions, the simulator's pixel scale, sub-pixels and adaptive
  supersampling) with theta_E = the ring radius and the other lens and source parameters drawn
  from the simulator's own priors as its uniform population draws them
  (``dhs.simulate.population.arcs_at_theta_e``; ``simulate.priors``: lens_q, shear_component,
  src_beta_frac, src_sersic_n, src_reff_arcsec, src_e, src_g_minus_r, src_r_minus_z), convolved with the same
  PSF and scaled to the **same in-stamp flux in every band** as the ring (the ring takes the
  arc's colour).

Everything about the survey comes from the ``SimConfig`` built from ``simulate`` in params, so the
probe follows the simulated survey when its priors, PSF or sampling change.

So ring and arc differ only in morphology: same radius, flux, colour, PSF and host. The score
shift of each is logit(control + probe) - logit(control), summarised by its median.

Pass criterion: median ring shift <= median arc shift + ``ring_max_excess_logit`` (1.0: the ring
may raise the odds at most e = 2.7 times more than the real arc does), decided on the 95%
interval of the excess (median ring shift - median arc shift), bootstrapped over the probed
controls (each resample takes both shifts of the same controls): FAIL only when the whole
interval is above ``ring_max_excess_logit`` (``dhs.gates.result.decide``). Fewer than
``min_rows_per_class`` probed controls: SKIP. Why: at equal flux and
radius the ring spreads its light over the whole circle, so its surface brightness per pixel is
lower than the arc's; a detector that weighs evidence for a lensed arc has no reason to find it
more convincing. A model that jumps on any faint annular excess (the earlier pipeline: a faint
ring drove any stamp to score 1.0) scores the ring far above the arc. The fractions of probed
controls above the controls' 1% false-positive threshold are reported beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dhs.errors import StageError
from dhs.evaluation.scores import sigmoid
from dhs.evaluation.seeing import psf_fwhm_bands
from dhs.gates.config import GatesConfig
from dhs.gates.pixels import ScoreFn, chunks, sky_level_and_sigma
from dhs.gates.result import (CONSISTENT, Limit, decide, gate_result, interval_record, median_difference_with_ci, skipped,
                              too_few)
from dhs.simulate.config import SimConfig
from dhs.simulate.fused import compile_mode_set_to, mode_for_run
from dhs.simulate.population import arcs_at_theta_e
from dhs.simulate.psf import PSFSpectra
from dhs.imaging.centring import fourier_shift, measure_centres
from dhs.simulate.render import colour_and_blur, lensed_sersic, render_profile


def ring_limit(cfg: GatesConfig) -> Limit:
    return Limit("ring_max_excess_logit", cfg.ring_max_excess_logit, strict=False)


RING_RULE = ring_limit(GatesConfig.from_params({})).rule("median ring logit shift - median arc logit shift (interval: bootstrap of the "
                                           "probed controls)")
RENDER_BATCH = 128
N_ARC_TEMPLATES = 100  # distinct lensed sources; reused cyclically over the probed controls


class ProbeError(StageError, ValueError):
    pass


def psf_fwhm_grz(meta: pd.DataFrame, survey: SimConfig) -> np.ndarray:
    """(N, 3) PSF FWHM in arcsec: psf_fwhm_used_{g,r,z} where finite and > 0, else psfsize_r x
    the survey's FWHM ratio of the band. Raises ProbeError naming the rows where neither exists."""
    out = psf_fwhm_bands(meta, survey.psf_fwhm_ratio, "grz")
    bad = ~(np.isfinite(out) & (out > 0)).all(axis=1)
    if bad.any():
        raise ProbeError(f"{int(bad.sum())} probed stamps have no usable PSF FWHM (psf_fwhm_used_* or psfsize_r); "
                         f"e.g. task_id {meta['task_id'].to_numpy()[bad][:3].tolist() if 'task_id' in meta else np.flatnonzero(bad)[:3].tolist()}")
    return out


def gaussian_ring(x: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Surface brightness exp(-(r - R)^2 / (2 sigma^2)) about the origin (unnormalised)."""
    r = torch.sqrt(x * x + y * y)
    return torch.exp(-0.5 * ((r - p["radius_arcsec"]) / p["sigma_arcsec"]) ** 2)


def _kernels(fwhm: np.ndarray, size: int, survey: SimConfig) -> PSFSpectra:
    return PSFSpectra.from_fwhm(torch.tensor(fwhm, dtype=torch.float64), size, survey.pixel_scale_arcsec, model=survey.psf_model,
                                beta=survey.moffat_beta)


def ring_unit_image(size: int, radius_arcsec: float, sigma_px: float, survey: SimConfig) -> torch.Tensor:
    """(S, S) float64 unit-flux ring before the PSF, sampled on the survey's ``oversample`` x
    ``oversample`` sub-pixels (the same geometry for every stamp, so it is rendered once)."""
    one = lambda v: torch.tensor([float(v)], dtype=torch.float64)  # noqa: E731
    scale = survey.pixel_scale_arcsec
    img = render_profile(gaussian_ring, {"radius_arcsec": one(radius_arcsec), "sigma_arcsec": one(sigma_px * scale)},
                         n_pix=size, pixel_scale_arcsec=scale, oversample=survey.oversample)[0]
    return img / img.sum()


def render_ring_and_arc(fwhm_grz: np.ndarray, sky_sigma_r: np.ndarray, size: int, cfg: GatesConfig,
                        rng: np.random.Generator, survey: SimConfig) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Noise-free (ring, arc) images (N, 3, S, S) nMgy with equal in-stamp flux per band, and
    the arc parameters. The ring's r-band peak is ``ring_peak_sigma`` x ``sky_sigma_r``.

    ``N_ARC_TEMPLATES`` lensed sources are ray-traced (the survey's sub-pixels and adaptive
    threshold, as the simulator does) and reused cyclically; each stamp convolves its template
    with its own PSF. A few hundred probes do not earn back compiling the rendering kernels:
    ``simulate.compile: auto`` renders them eagerly (``mode_for_run``)."""
    with compile_mode_set_to(mode_for_run(survey.compile, len(fwhm_grz), "cpu")):
        return _render_ring_and_arc(fwhm_grz, sky_sigma_r, size, cfg, rng, survey)


def _render_ring_and_arc(fwhm_grz, sky_sigma_r, size, cfg, rng, survey):
    n = len(fwhm_grz)
    m = min(n, N_ARC_TEMPLATES)
    arcs = arcs_at_theta_e(survey.priors, m, cfg.ring_radius_arcsec, rng)
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    src_e = arcs["src_e"].to_numpy()
    p = {k: t(arcs[k].to_numpy()) for k in ("theta_e_arcsec", "lens_q", "lens_phi_rad", "shear_g1", "shear_g2",
                                            "src_x_arcsec", "src_y_arcsec", "src_reff_arcsec")}
    p.update(src_n=t(arcs["src_sersic_n"].to_numpy()), src_q=t((1 - src_e) / (1 + src_e)), src_phi_rad=t(arcs["src_phi_rad"].to_numpy()))
    arc_units = render_profile(lensed_sersic, p, n_pix=size, pixel_scale_arcsec=survey.pixel_scale_arcsec,
                               oversample=survey.oversample, threshold=survey.supersample_threshold)
    ring_unit = ring_unit_image(size, cfg.ring_radius_arcsec, cfg.ring_sigma_px, survey)
    which = np.arange(n) % m
    colour = np.stack([10 ** (-0.4 * arcs["src_g_minus_r"].to_numpy()), np.ones(m), 10 ** (0.4 * arcs["src_r_minus_z"].to_numpy())], 1)[which]
    ring_out = np.empty((n, 3, size, size))
    arc_out = np.empty((n, 3, size, size))
    for sl in chunks(n, RENDER_BATCH):
        b = sl.stop - sl.start
        kern = _kernels(fwhm_grz[sl], size, survey)
        ring = colour_and_blur(ring_unit.expand(b, size, size), t(colour[sl]), kern).numpy()
        ring *= (cfg.ring_peak_sigma * sky_sigma_r[sl] / ring[:, 1].reshape(b, -1).max(axis=1))[:, None, None, None]
        arc = colour_and_blur(arc_units[torch.as_tensor(which[sl])], t(colour[sl]), kern).numpy()
        arc *= (ring.sum(axis=(2, 3)) / arc.sum(axis=(2, 3)))[:, :, None, None]  # same in-stamp flux, band by band
        ring_out[sl], arc_out[sl] = ring, arc
    return ring_out, arc_out, arcs


def ring_probe_gate(score: ScoreFn, controls_nmgy: np.ndarray, controls_meta: pd.DataFrame, cfg: GatesConfig,
                    survey: SimConfig, threshold_logit: float | None = None, examples: dict | None = None,
                    logits_control: np.ndarray | None = None) -> dict:
    """Score shift of controls + ring against controls + a real arc of the same flux.

    ``threshold_logit``: the controls' 1% false-positive threshold, to report the fraction of
    probed stamps it would flag. ``examples`` (optional dict) receives a few images and all logits.
    ``logits_control``: the controls' logits if already computed (saves one scoring pass).
    The examples hold the noise-free ring and arc alone (what was added), not the sums."""
    name, thr, m = "ring_probe", cfg.ring_max_excess_logit, cfg.min_rows_per_class
    if len(controls_nmgy) < m:
        return skipped(name, thr, RING_RULE, too_few(f"{len(controls_nmgy)} controls to probe", m,
                                                     "gates.n_probe, or gates.n_eval whose controls it probes"),
                       n=len(controls_nmgy), min_rows_per_class=m)
    try:
        fwhm = psf_fwhm_grz(controls_meta, survey)
    except ProbeError as exc:
        return skipped(name, thr, RING_RULE, str(exc))
    _, sigma = sky_level_and_sigma(controls_nmgy, controls_meta)
    ring, arc, _ = render_ring_and_arc(fwhm, sigma[:, 1], controls_nmgy.shape[-1], cfg, np.random.default_rng([cfg.seed, 21]), survey)
    # centred on each host as measured on the stamp, as a lens would be (hosts sit off the stamp centre)
    centres = measure_centres(torch.from_numpy(np.asarray(controls_nmgy, dtype=np.float32)))
    ring = fourier_shift(torch.from_numpy(ring), centres).numpy()
    arc = fourier_shift(torch.from_numpy(arc), centres).numpy()
    base = controls_nmgy.astype(np.float64)
    l0 = score(controls_nmgy, controls_meta) if logits_control is None else np.asarray(logits_control)
    lr = score((base + ring).astype(np.float32), controls_meta)
    la = score((base + arc).astype(np.float32), controls_meta)
    shift_ring, shift_arc = float(np.median(lr - l0)), float(np.median(la - l0))
    excess, ci = median_difference_with_ci(lr - l0, la - l0, cfg.n_bootstrap, cfg.seed)
    status, decision, why = decide(excess, ci, ring_limit(cfg), fmt=".2f", more_rows="gates.n_probe")
    flux_r = ring[:, 1].reshape(len(ring), -1).sum(axis=1)
    extra = {}
    if threshold_logit is not None:
        extra = {"threshold_logit_fpr1pct": float(threshold_logit), "frac_flagged_control": float((l0 > threshold_logit).mean()),
                 "frac_flagged_ring": float((lr > threshold_logit).mean()), "frac_flagged_arc": float((la > threshold_logit).mean())}
    if examples is not None:
        examples.update(control=controls_nmgy[:3].copy(), ring=ring[:3], arc=arc[:3], logit_control=l0,
                        logit_ring=lr, logit_arc=la)
    detail = (f"a faint ring (r-band peak {cfg.ring_peak_sigma:g} sky sigma, R = {cfg.ring_radius_arcsec:g} arcsec, median r flux "
              f"{np.median(flux_r):.3g} nMgy) shifts the logit by {shift_ring:+.2f} (median) against {shift_arc:+.2f} for a real arc "
              f"of the same flux, an excess of {excess:+.2f} ({why}); " +
              ("the model responds to any faint annular excess more than to lensed-arc morphology" if status == "FAIL" else
               "the ring is not shown to convince the model more than a real arc"
               if decision == CONSISTENT else "the ring is not more convincing than a real arc"))
    return gate_result(name, status, excess, thr, RING_RULE, detail, **interval_record(ci, len(ring), decision, cfg.n_bootstrap),
                       min_rows_per_class=m, median_logit_shift_ring=shift_ring,
                       median_logit_shift_arc=shift_arc, median_score_control=float(np.median(sigmoid(l0))),
                       median_score_ring=float(np.median(sigmoid(lr))), median_score_arc=float(np.median(sigmoid(la))),
                       median_ring_flux_r_nmgy=float(np.median(flux_r)), n_probed=len(ring), **extra)

