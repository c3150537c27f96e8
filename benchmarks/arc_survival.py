"""How much of an injected arc the finder's host removal leaves for the finder to see.

    python benchmarks/arc_survival.py [--n 3000] [--min-snr 8] [--params params.yaml]
        [--scores data/scores/small_cnn.parquet --metrics metrics/completeness/small_cnn.json [--fpr 0.01]]

The preprocessing subtracts each band's median profile in elliptical annuli about the measured
host centre (``preprocess.radial_profile_*``). An annulus's median is the host only while the arc
covers less than half of it; a long arc, a ring or an arc blended with the core by the PSF
raises the median and is partly subtracted with the host. This renders injections of the
simulated survey through the stamps stage's own path (``dhs.simulate.survey.render_rows``: host,
field, arc, noise), takes the same stamp without the arc's light (image minus the noise-free arc:
same host, field and noise), normalises both with the arc-free stamp's annulus statistics and
removes the host from each, so that their difference is the arc as the finder receives it
(before the clip, which bounds the values only). Per
bin of theta_E / PSF FWHM (r band) and of host r it prints the fraction of the arc kept
(projection of what is received onto the arc: 1 = untouched, 0 = removed with the host; median
and quartiles) and at the arc's brightest pixel. Deterministic (the survey's seed).

With ``--scores`` (a score table of the infer stage) and ``--metrics`` (that arch's completeness
metrics, whose threshold at ``--fpr`` it reads), it also prints the finder's completeness in the
same bins for the scored injections of the completeness stage's split with arc SNR >= --min-snr
and >= 20: what the finder finds beside what it receives; and a least-squares fit of the finder's
logit on those arcs against theta_E / PSF, host r, host half-light radius and ln(arc SNR) together
(each in its own standard deviations): theta_E grows with the lens's luminosity and size, so only a
joint fit tells the effect of one with the others held fixed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from dhs.contract.norm_stats import annulus_mask_np, annulus_stats
from dhs.models.loader import NormConfig, normalize
from dhs.params import load
from dhs.simulate.config import SimConfig
from dhs.simulate.fused import set_compile_mode
from dhs.simulate.population import sample_population
from dhs.simulate.survey import render_noise_free, render_rows
from dhs.imaging.centring import subtract_radial_profile_about_host

REPO = Path(__file__).resolve().parents[1]
THETA_PSF_BINS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, np.inf)
HOST_R_BINS = (-np.inf, 18.0, 19.0, 20.0, np.inf)
MU_BINS = (0.0, 3.0, 5.0, 10.0, np.inf)


def arc_as_received(images: torch.Tensor, arcs: torch.Tensor, norm: NormConfig) -> tuple[np.ndarray, np.ndarray]:
    """(fraction of each arc kept, fraction kept at its brightest pixel), r band."""
    without = images - arcs
    # both stamps in the arc-free stamp's units (its stored-style annulus statistics), so that
    # their difference before the host's removal is the arc itself
    mask = annulus_mask_np(images.shape[-1], norm.annulus_inner_frac, norm.annulus_outer_frac)
    stats = torch.from_numpy(annulus_stats(without.numpy(), mask))
    unit = dataclasses.replace(norm, radial_profile_subtract=False, clip=float("inf"))
    x_with, x_without = normalize(images, unit, stats), normalize(without, unit, stats)
    shape, stat = norm.radial_profile_shape, norm.radial_profile_statistic
    seen = (subtract_radial_profile_about_host(x_with, shape=shape, statistic=stat)
            - subtract_radial_profile_about_host(x_without, shape=shape, statistic=stat))[:, 1].flatten(1)
    true = (x_with - x_without)[:, 1].flatten(1)
    kept = (seen * true).sum(1) / (true * true).sum(1).clamp_min(1e-12)
    peak = seen.gather(1, true.argmax(1, keepdim=True))[:, 0] / true.amax(1).clamp_min(1e-12)
    return kept.numpy(), peak.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="injections rendered (before the --min-snr cut)")
    ap.add_argument("--min-snr", type=float, default=8.0, help="keep arcs with peak SNR at least this (visible ones)")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--scores", help="a score table (data/scores/ARCH.parquet) to print the finder's completeness beside")
    ap.add_argument("--metrics", help="that arch's completeness metrics (metrics/completeness/ARCH.json): the threshold")
    ap.add_argument("--fpr", type=float, default=0.01, help="the operating point, one of evaluation.fprs")
    ap.add_argument("--statistic", choices=("median", "low_quantile"), help="the host profile's statistic (default: params)")
    ap.add_argument("--split", default="test", help="the split whose injections are rendered (test: the measurement population)")
    a = ap.parse_args()
    if bool(a.scores) != bool(a.metrics):
        raise SystemExit("--scores and --metrics go together (the threshold comes from the completeness metrics)")
    p = load(a.params)
    sim = dict(p["simulate"])
    sim.update(n_stamps=max(int(sim["n_stamps"]), 4 * a.n), device="cpu")
    cfg = SimConfig.from_params(sim)
    # the host-subtracted view alone (with input raw_and_residual the finder also receives the raw stamp beside it)
    norm = dataclasses.replace(NormConfig.from_params(p["preprocess"]), input="residual")
    if a.statistic:
        norm = dataclasses.replace(norm, radial_profile_statistic=a.statistic)
    if not norm.radial_profile_subtract or norm.radial_profile_centre != "host":
        raise SystemExit(f"{a.params}: preprocess.radial_profile_subtract must be true with radial_profile_centre: host")
    set_compile_mode("off")   # a few thousand stamps: compiling would cost more than it saves
    pop = sample_population(cfg)
    inj = pop[(pop.is_control == 0) & (pop.cutout_ok == 1) & (pop.region_split == a.split)].iloc[: a.n]
    device = torch.device("cpu")
    parts = []
    for b in range(0, len(inj), a.batch):
        rows = inj.iloc[b: b + a.batch]
        rendered, images = render_rows(rows, cfg, device)
        arcs = render_noise_free(rows, cfg, device).arc.float()
        kept, peak = arc_as_received(images, arcs, norm)
        parts.append(rendered[["arc_snr", "theta_e_arcsec", "psf_fwhm_used_r", "host_r_mag", "magnification"]].assign(kept=kept, peak=peak))
        print(f"  rendered {min(b + a.batch, len(inj))}/{len(inj)}", flush=True)
    d = pd.concat(parts)
    d = d[d.arc_snr >= a.min_snr]
    d["theta_e/psf"] = pd.cut(d.theta_e_arcsec / d.psf_fwhm_used_r, THETA_PSF_BINS, right=False)
    d["host r"] = pd.cut(d.host_r_mag, HOST_R_BINS, right=False)
    d["mu"] = pd.cut(d.magnification, MU_BINS, right=False)
    print(f"{len(d)} {a.split} injections with arc SNR >= {a.min_snr:g}: fraction of the arc the finder receives (r band; "
          f"profile: {norm.radial_profile_statistic} in {norm.radial_profile_shape} annuli about the host)")
    for col in ("theta_e/psf", "host r", "mu"):
        g = d.groupby(col, observed=True)
        t = pd.DataFrame({"n": g.size(), "kept q25": g.kept.quantile(0.25), "kept median": g.kept.median(),
                          "kept q75": g.kept.quantile(0.75), "at peak": g.peak.median()})
        print(t.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"all: kept median {d.kept.median():.3f}, at peak {d.peak.median():.3f}")
    lens_like = d[(d.magnification >= 5) & (d.theta_e_arcsec / d.psf_fwhm_used_r >= 1)]
    print(f"mu >= 5 and theta_E / PSF >= 1: kept median {lens_like.kept.median():.3f} "
          f"[q25 {lens_like.kept.quantile(0.25):.3f}, q75 {lens_like.kept.quantile(0.75):.3f}] of {len(lens_like)} arcs")
    if a.scores:
        found_by_bin(a.scores, a.metrics, a.fpr, a.min_snr)


def found_by_bin(scores_path: str, metrics_path: str, fpr: float, min_snr: float) -> None:
    """The finder's completeness per theta_E / PSF bin and per host r bin at the completeness stage's own threshold."""
    metrics = json.loads(Path(metrics_path).read_text())
    name = f"fpr_{fpr:g}"
    t = next((t for t in metrics["thresholds"] if t["name"] == name), None)
    if t is None:
        raise SystemExit(f"{metrics_path}: no threshold named {name!r} (have {[t['name'] for t in metrics['thresholds']]})")
    needed = ["split", "is_control", "score", "logit", "arc_snr", "theta_e_over_psf", "host_r_mag"]
    have = set(pq.read_schema(scores_path).names)
    if missing := [c for c in needed if c not in have]:
        raise SystemExit(f"{scores_path}: no column(s) {missing}; a score table of the infer stage has them")
    s = pd.read_parquet(scores_path, columns=needed + [c for c in JOINT_TERMS.values() if c in have and c not in needed])
    inj = s[(s.split == metrics["eval_split"]) & (s.is_control == 0)]
    found = inj.score.to_numpy() > t["score"]          # the completeness stage's own rule: score > threshold score
    print(f"finder's completeness at FPR {fpr:g} (threshold score {t['score']:.6f}, logit {t['logit']:.3f}, {t['n_controls']} controls; "
          f"{metrics['eval_split']} split of {scores_path})")
    for name, bins in (("theta_e/psf", pd.cut(inj.theta_e_over_psf, THETA_PSF_BINS, right=False)),
                       ("host r", pd.cut(inj.host_r_mag, HOST_R_BINS, right=False))):
        out = {}
        for snr in (min_snr, 20.0):
            sel = (inj.arc_snr >= snr).to_numpy()
            g = pd.Series(found[sel]).groupby(bins[sel].to_numpy(), observed=True)
            out[f"n (SNR >= {snr:g})"], out[f"found (SNR >= {snr:g})"] = g.size(), g.mean()
        table = pd.DataFrame(out).rename_axis(name)
        for col in [c for c in table if c.startswith("n ")]:
            table[col] = table[col].fillna(0).astype(int)
        print(table.to_string(float_format=lambda v: f"{v:.3f}", na_rep="-"))
    joint_effects(inj[inj.arc_snr >= min_snr], min_snr)


JOINT_TERMS = {"theta_e/psf": "theta_e_over_psf", "host r": "host_r_mag", "host r_eff": "host_reff_arcsec", "ln arc SNR": "arc_snr"}


def joint_effects(inj: pd.DataFrame, min_snr: float) -> dict[str, float]:
    """Least squares of the finder's logit on the JOINT_TERMS (each standardised), printed and returned
    as the change of logit per standard deviation of each with the others held fixed."""
    terms = {name: c for name, c in JOINT_TERMS.items() if c in inj.columns}
    if absent := sorted(set(JOINT_TERMS) - set(terms)):
        print(f"joint fit: without {absent} (no such column in the score table)")
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.column_stack([np.log(inj[c].to_numpy(float)) if name.startswith("ln ") else inj[c].to_numpy(float)
                             for name, c in terms.items()])
    finite = np.isfinite(x).all(axis=1) & np.isfinite(inj.logit.to_numpy(float))
    if not finite.all():   # an arc SNR of 0 (--min-snr 0) has no logarithm
        print(f"joint fit: {int((~finite).sum())} arcs left out (a term not finite)")
        x, inj = x[finite], inj[finite]
    if len(x) <= x.shape[1] + 1:
        print(f"joint fit: {len(x)} arcs with SNR >= {min_snr:g}, too few for {x.shape[1]} terms")
        return {}
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    coef, *_ = np.linalg.lstsq(np.column_stack([np.ones(len(z)), z]), inj.logit.to_numpy(float), rcond=None)
    effects = dict(zip(terms, coef[1:].tolist()))
    print(f"joint fit of the logit on {len(x)} arcs with SNR >= {min_snr:g} (change per standard deviation, the others "
          "held fixed): " + ", ".join(f"{k} {v:+.2f} (sd {s:.3g})" for (k, v), s in zip(effects.items(), sd)))
    return effects


if __name__ == "__main__":
    main()
