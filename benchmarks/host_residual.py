"""What the finder's host removal leaves behind, by host brightness and radius.

    python benchmarks/host_residual.py [--per-bin 200] [--params params.yaml]

Renders plain early-type controls (``host_kind`` lrg) of the simulated survey through the stamps
stage's own path (``dhs.simulate.survey.render_rows``: host, field, noise), preprocesses them as
training and inference do (``dhs.models.loader.normalize`` with params.yaml's ``preprocess``) and
prints, per host r-magnitude bin and per circular radius about the stamp centre, the residual's
median, its robust scatter (1.4826 x MAD) and the 90th percentile of |residual|, in the units the
finder sees (the sky noise after the residual scale), beside the photon noise of the host's own
light relative to the sky's at that radius, and the misfit: the robust scatter of the noise-free
scene put through the same removal, in the noisy stamp's units. Where the scatter exceeds that
photon-noise ratio, the residual is the host's light that the removal did not take, not noise
(the misfit column measures that part alone): an arc of that amplitude at that radius competes
with it. Deterministic (the survey's seed).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from dhs.contract.norm_stats import annulus_mask_np, annulus_stats
from dhs.models.loader import NormConfig, normalize, residual_noise, subtract_radial_profile
from dhs.params import load
from dhs.simulate.config import SimConfig
from dhs.simulate.fused import set_compile_mode
from dhs.simulate.population import sample_population
from dhs.simulate.survey import _t, noise_inputs, pixel_variance, render_noise_free, render_rows
from dhs.imaging.centring import subtract_radial_profile_about_host

REPO = Path(__file__).resolve().parents[1]
HOST_R_BINS = (-np.inf, 18.0, 19.0, 20.0, np.inf)
RADIUS_BINS_PX = (0, 2, 4, 6, 8, 12, 20)


def host_misfit(images: torch.Tensor, light: torch.Tensor, norm: NormConfig) -> np.ndarray:
    """(B, N, N) r band: the noise-free scene ``light`` through the host's removal, in the units of
    the noisy stamps ``images`` (their annulus statistics and residual noise scale), so that what
    is left is the removal's misfit with no noise in it."""
    mask = annulus_mask_np(images.shape[-1], norm.annulus_inner_frac, norm.annulus_outer_frac)
    stats = torch.from_numpy(annulus_stats(images.numpy(), mask))
    unit = dataclasses.replace(norm, radial_profile_subtract=False, residual_noise_scale=False, residual_noise_profile=False,
                               clip=float("inf"))
    if not norm.radial_profile_subtract:
        def remove(v):
            return v
    elif norm.radial_profile_centre == "host":
        def remove(v):
            return subtract_radial_profile_about_host(v, shape=norm.radial_profile_shape)
    else:
        remove = subtract_radial_profile
    x, x0 = normalize(images, unit, stats), normalize(light.float(), unit, stats)
    sky = residual_noise(remove(x), norm) if norm.residual_noise_scale and norm.mode != "none" else 1.0
    return (remove(x0) / sky)[:, 1].numpy()


def robust_scatter(v: np.ndarray) -> np.ndarray:
    """1.4826 x the median absolute deviation of each row."""
    med = np.median(v, axis=1)
    return 1.4826 * np.median(np.abs(v - med[:, None]), axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-bin", type=int, default=200, help="controls rendered per host-magnitude bin")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    p = load(a.params)
    sim = dict(p["simulate"])
    sim.update(n_stamps=max(int(sim["n_stamps"]), 40 * a.per_bin), device="cpu")
    cfg = SimConfig.from_params(sim)
    # the host-subtracted view alone (with input raw_and_residual the finder also receives the raw stamp beside it)
    norm = dataclasses.replace(NormConfig.from_params(p["preprocess"]), input="residual")
    set_compile_mode("off")   # a few hundred stamps: compiling would cost more than it saves
    pop = sample_population(cfg)
    pool = pop[(pop.is_control == 1) & (pop.cutout_ok == 1)]
    device = torch.device("cpu")
    n = cfg.stamp_size
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    radius = np.hypot(yy, xx)
    print(f"preprocess: {norm}")
    print(f"{'host r':>10} {'n':>4} {'radius px':>10} {'median':>7} {'scatter':>8} {'p90 |x|':>8} {'photon/sky':>10} {'misfit':>7}")
    for lo, hi in zip(HOST_R_BINS[:-1], HOST_R_BINS[1:]):
        # the host kind is drawn with the scene: render ~1/0.85 as many and keep the plain early types
        rows = pool[(pool.host_r_mag >= lo) & (pool.host_r_mag < hi)].iloc[: int(a.per_bin / 0.8) + 8]
        if rows.empty:
            continue
        res, ratio, misfit, kept = [], [], [], 0
        for b in range(0, len(rows), a.batch):
            part = rows.iloc[b: b + a.batch]
            rendered, images = render_rows(part, cfg, device)
            lrg = rendered["host_kind"].to_numpy() == "lrg"
            part, images = part[lrg], images[torch.from_numpy(lrg)]
            kept += len(part)
            res.append(normalize(images, norm)[:, 1].numpy())           # r band, as the finder sees it
            nf = render_noise_free(part, cfg, device)
            misfit.append(host_misfit(images, nf.scene, norm))
            sigma, gain = noise_inputs(part, cfg)
            s_t, g_t = _t(sigma, device, torch.float32), _t(gain, device, torch.float32)
            var = pixel_variance(nf.scene[:, 1:2], torch.zeros_like(nf.arc[:, 1:2]), s_t[:, 1:2], g_t[:, 1:2], cfg.noise_model)
            ratio.append((var.sqrt()[:, 0] / s_t[:, 1, None, None]).numpy())
        res, ratio, misfit = (np.concatenate(v)[: a.per_bin] for v in (res, ratio, misfit))
        label = f"{'<' if lo == -np.inf else f'{lo:g}-'}{hi:g}" if hi != np.inf else f">{lo:g}"
        for r0, r1 in zip(RADIUS_BINS_PX[:-1], RADIUS_BINS_PX[1:]):
            m = (radius >= r0) & (radius < r1)
            v = res[:, m]
            print(f"{label:>10} {len(res):>4} {f'{r0}-{r1}':>10} {np.median(np.median(v, axis=1)):7.2f} {np.median(robust_scatter(v)):8.2f} "
                  f"{np.quantile(np.abs(v), 0.9):8.2f} {np.median(ratio[:, m]):10.2f} {np.median(robust_scatter(misfit[:, m])):7.2f}")


if __name__ == "__main__":
    main()
