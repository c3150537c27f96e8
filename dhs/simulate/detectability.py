"""LensPop's detectability criteria (Collett 2015, Sect. 3), to compare the simulated lens
population with the LensPop forecast of lenses discoverable in the DES full coadd: the same cuts
applied to our injections should give the same distributions as the forecast's table
(docs/population.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from dhs.params.schema import DR10_PIXEL_SCALE_ARCSEC
from dhs.simulate.noise import sky_sigma_nmgy
from dhs.simulate.physical import GAUSS_SIGMA_PER_REFF
from dhs.simulate.population import mag_to_nmgy
from dhs.simulate.visibility import lenspop_criteria

# --------------------------------------------------------------------------------------------
# Magnification and LensPop detectability
def _devauc_sb(mag, reff, r):
    """de Vaucouleurs surface brightness (nMgy/arcsec^2) at radius r (circular, unconvolved)."""
    bn = 7.669
    i_e = mag_to_nmgy(mag) / (2 * math.pi * 4 * reff**2 * math.exp(bn) * bn ** (-8) * math.gamma(8))
    return i_e * np.exp(-bn * ((np.maximum(r, 1e-3) / reff) ** 0.25 - 1.0))


def lenspop_snr_estimate(df: pd.DataFrame, band: str, seeing_arcsec, m5, sky_sb=None, pixel_scale=DR10_PIXEL_SCALE_ARCSEC,
                         magnification=None) -> np.ndarray:
    """Analytic stand-in for LensPop's S/N: the best-aperture S/N of the lensed source in the
    lens-subtracted coadd, with Poisson-limited lens subtraction (lens light adds variance).

    SIS geometry: two images with point magnifications 1/b +- 1 (b = beta/theta_E) sharing the
    total magnification; each is an elliptical Gaussian, tangential width sqrt(min(mu_i s,
    sqrt(pi) theta_E)^2 + p^2) (a full ring of length 2 pi theta_E at most), radial width
    sqrt(s^2 + p^2) (s = reff/1.1774, p = seeing/2.3548), noise-equivalent area 4 pi w_t w_r.
    Matched-filter S/N = sqrt(sum_i F_i^2 / (var NEA_i)), x 0.9 (a top-hat aperture on a
    Gaussian). var = sky variance (from m5) + lens light at theta_E / gain, the gain fixed by
    sky variance = sky counts / gain (when sky_sb, mag/arcsec^2, is given)."""
    mu = df["mu_ext_sis"].to_numpy() if magnification is None else np.asarray(magnification, float)
    th = df["theta_e_arcsec"].to_numpy()
    s = df["src_reff_arcsec"].to_numpy() * GAUSS_SIGMA_PER_REFF
    col = {"r": 0.0, "g": df["src_g_minus_r"].to_numpy(), "z": -df["src_r_minus_z"].to_numpy()}[band]
    f_src = mag_to_nmgy(df["src_r_mag"].to_numpy() + col) * mu
    pw = np.asarray(seeing_arcsec, float) / 2.3548
    b = np.clip(df["src_beta_arcsec"].to_numpy() / np.maximum(th, 1e-9), 1e-3, 1.0)
    mu1, mu2 = 1.0 / b + 1.0, 1.0 / b - 1.0
    wr = np.sqrt(s * s + pw * pw)
    var = sky_sigma_nmgy(m5, seeing_arcsec, pixel_scale) ** 2 * np.ones_like(th)
    if sky_sb is not None:
        gain = mag_to_nmgy(sky_sb) * pixel_scale**2 / var
        lcol = {"r": 0.0, "g": df["host_g_minus_r"].to_numpy(), "z": -df["host_r_minus_z"].to_numpy()}[band]
        i_lens = _devauc_sb(df["host_r_mag"].to_numpy() + lcol, df["host_reff_arcsec"].to_numpy(), th)
        var = var + i_lens * pixel_scale**2 / gain
    snr2 = 0.0
    for mui in (mu1, mu2):
        wt = np.sqrt(np.minimum(mui * s, math.sqrt(math.pi) * th) ** 2 + pw * pw)
        nea = 4.0 * math.pi * wt * wr / pixel_scale**2
        snr2 = snr2 + (f_src * mui / (mu1 + mu2)) ** 2 / (var * nea)
    return 0.9 * np.sqrt(snr2)


# LensPop's DES full-coadd model (Surveys.py 'DESa'): 10 x 90 s per band, gain 4.5 e-/ADU, ZP 30,
# sky g 21.7, r 20.7, i 20.1 mag/arcsec^2, Gaussian PSF, coadd seeing = worst epoch (1.655" in its
# table), pixel 0.263". The 5-sigma depths follow from those numbers; i stands in for z here.
DES_LENSPOP_CONDITIONS = {
    "seeing": 1.655, "pixel_scale": 0.263,
    "m5": {"g": 25.18, "r": 24.68, "z": 24.38},
    "sky_sb": {"g": 21.7, "r": 20.7, "z": 20.1},
}


def detectable_lenspop(df: pd.DataFrame, seeing_arcsec=None, m5: Mapping[str, float] | None = None,
                       sky_sb: Mapping[str, float] | None = "des", pixel_scale: float | None = None,
                       snr_min: float = 20.0, mu_min: float = 3.0, magnification=None,
                       snr: Mapping[str, np.ndarray] | None = None, bands=("g", "r", "z"),
                       criteria: str = "paper") -> pd.DataFrame:
    """LensPop's detectability (Collett 2015, Sect. 3) applied to a population. Detectable when,
    with s the seeing FWHM and r_s the source half-light radius:
      1. multiply imaged: beta < theta_E (true by construction here);
      2. resolved images: theta_E^2 > r_s^2 + (s/2)^2;
      3. magnified: mu_tot > 3;
      4. a resolved, tangentially stretched arc: mu_tot r_s > s/2 ('paper'; LensPop's public
         code tests mu_tot r_s > s: criteria='code');
      5. S/N > 20 in the lens-subtracted coadd of the best band (Poisson-limited subtraction).
    Defaults: LensPop's DES full-coadd conditions (DES_LENSPOP_CONDITIONS); sky_sb=None drops
    the lens-light variance. ``magnification``: per-row total magnification (default: the
    analytic SIS estimate); ``snr``: band -> per-row S/N to use instead of the analytic one.
    """
    cond = DES_LENSPOP_CONDITIONS
    seeing = cond["seeing"] if seeing_arcsec is None else seeing_arcsec
    m5 = cond["m5"] if m5 is None else m5
    sky_sb = cond["sky_sb"] if isinstance(sky_sb, str) and sky_sb == "des" else sky_sb
    pix = cond["pixel_scale"] if pixel_scale is None else pixel_scale
    mu = df["mu_ext_sis"].to_numpy() if magnification is None else np.asarray(magnification, float)
    th = df["theta_e_arcsec"].to_numpy()
    rs = df["src_reff_arcsec"].to_numpy()
    see = np.broadcast_to(np.asarray(seeing, float), th.shape)
    if snr is None:
        snr = {b: lenspop_snr_estimate(df, b, see, m5[b], None if sky_sb is None else sky_sb[b], pix, mu)
               for b in bands}
    sn = np.stack([np.asarray(snr[b], float) for b in bands], axis=1)
    best = sn.max(axis=1)
    multiple = df["src_beta_arcsec"].to_numpy() < th
    c = lenspop_criteria(th, rs, see, mu, best, snr_min=snr_min, mu_min=mu_min, arc_rule=criteria)
    return pd.DataFrame({
        "multiple": multiple, "resolved": c["resolved"], "magnified": c["magnified"], "arc": c["arc"],
        "snr_best": best, "best_band": np.asarray(bands)[sn.argmax(axis=1)], "bright": c["bright"],
        "detectable": multiple & c["discoverable"],
    }, index=df.index)


# The LensPop forecast of lenses discoverable in the DES full coadd (Collett 2015, ApJ 811, 20;
# the table LensPop publishes, shipped unchanged in dhs/simulate/data with its header): the
# anchor the population is compared with (metrics/stamps.json, the report, tests).
LENSPOP_TABLE = Path(__file__).parent / "data" / "lenspop_des_full_coadd.txt"
LENSPOP_COLUMNS = ("z_l", "z_s", "theta_e_arcsec", "sigma_v_kms", "lens_q", "lens_reff_arcsec", "lens_g_mag", "lens_r_mag",
                   "lens_i_mag", "src_x_arcsec", "src_y_arcsec", "src_q", "src_pa_deg", "src_reff_arcsec", "src_g_mag", "src_r_mag",
                   "src_i_mag", "magnification", "seeing_g", "snr_g", "seeing_r", "snr_r", "seeing_i", "snr_i", "snr_g_minus_i")
ANCHOR_QUANTITIES = {  # our column -> how the LensPop table gives it
    "theta_e_arcsec": lambda t: t["theta_e_arcsec"],
    "host_r_mag": lambda t: t["lens_r_mag"],
    "src_r_mag": lambda t: t["src_r_mag"],
    "src_reff_arcsec": lambda t: t["src_reff_arcsec"],
    "magnification": lambda t: t["magnification"],
    "lensed_src_r_mag": lambda t: t["src_r_mag"] - 2.5 * np.log10(t["magnification"]),
    "src_dmag": lambda t: t["src_r_mag"] - t["lens_r_mag"],
}
PERCENTILES = (5, 25, 50, 75, 95)


def lenspop_table(path: str | Path = LENSPOP_TABLE) -> pd.DataFrame:
    return pd.read_csv(path, sep=r"\s+", comment="#", header=None, names=list(LENSPOP_COLUMNS))


def lenspop_percentiles(path: str | Path = LENSPOP_TABLE) -> dict[str, list[float]]:
    """Percentiles (5/25/50/75/95 %) of the anchor quantities in the LensPop table."""
    t = lenspop_table(path)
    return {k: [float(v) for v in np.percentile(f(t), PERCENTILES)] for k, f in ANCHOR_QUANTITIES.items()}


# The arc peak-SNR mix an earlier version of this pipeline aimed at, among arcs with SNR >= 0.8:
# shown beside the physical population's own mix, which follows from the population.
ARC_SNR_EDGES = (0.0, 0.8, 2.0, 8.0, 20.0, math.inf)
ARC_SNR_LABELS = ("<0.8", "0.8-2", "2-8", "8-20", ">=20")
ARC_SNR_REFERENCE_MIX = {"0.8-2": 0.40, "2-8": 0.40, "8-20": 0.15, ">=20": 0.05}


def _percentiles(v) -> list[float] | None:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return [float(x) for x in np.percentile(v, PERCENTILES)] if v.size else None


def population_summary(meta: pd.DataFrame) -> dict:
    """The injected population of a stamp table beside its anchor: percentiles of the anchor
    quantities over every injection, the arc-SNR mix, and the subset LensPop's cuts would call
    discoverable (its DES full-coadd conditions, the rendered magnification) against the LensPop
    forecast. Columns the table lacks (real data) are left out and named."""
    inj = meta[(pd.to_numeric(meta["is_control"], errors="coerce") == 0) & (pd.to_numeric(meta.get("cutout_ok", 1), errors="coerce") == 1)]
    out: dict = {"n_injections": int(len(inj)), "percentiles": PERCENTILES, "ours": {}, "missing_columns": []}
    for col in (*ANCHOR_QUANTITIES, "arc_snr", "z_l", "z_s"):
        if col in inj.columns:
            out["ours"][col] = _percentiles(pd.to_numeric(inj[col], errors="coerce"))
        else:
            out["missing_columns"].append(col)
    if "arc_snr" in inj.columns and len(inj):
        snr = pd.to_numeric(inj["arc_snr"], errors="coerce").to_numpy(float)
        counts = np.histogram(snr[np.isfinite(snr)], bins=ARC_SNR_EDGES)[0]
        frac = counts / max(counts.sum(), 1)
        out["arc_snr_mix"] = dict(zip(ARC_SNR_LABELS, [float(f) for f in frac]))
        out["arc_snr_below_8"] = float(np.mean(snr < 8))
        out["arc_snr_at_least_20"] = float(np.mean(snr >= 20))
        visible = counts[1:] / max(counts[1:].sum(), 1)
        out["arc_snr_mix_of_visible"] = dict(zip(ARC_SNR_LABELS[1:], [float(f) for f in visible]))
        out["arc_snr_reference_mix_of_visible"] = ARC_SNR_REFERENCE_MIX
    out["lenspop"] = lenspop_percentiles()
    need = ("theta_e_arcsec", "src_reff_arcsec", "src_x_arcsec", "src_y_arcsec", "src_r_mag", "src_g_minus_r", "src_r_minus_z",
            "host_r_mag", "host_g_minus_r", "host_r_minus_z", "host_reff_arcsec", "magnification")
    if len(inj) and all(c in inj.columns for c in need):
        df = inj[list(need)].apply(pd.to_numeric, errors="coerce")
        df["src_beta_arcsec"] = np.hypot(df["src_x_arcsec"], df["src_y_arcsec"])
        det = detectable_lenspop(df, magnification=df["magnification"].to_numpy()).detectable.to_numpy()
        d = inj[det]
        out["lenspop_detectable"] = {"fraction": float(det.mean()), "n": int(det.sum()),
                                     "ours": {col: _percentiles(pd.to_numeric(d[col], errors="coerce"))
                                              for col in ANCHOR_QUANTITIES if col in d.columns}}
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m dhs.simulate.detectability [N]``: the physical population (params.yaml's
    simulate.physical) against the LensPop forecast, with the analytic magnification and S/N."""
    import argparse

    import yaml

    from dhs.simulate import physical

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("n", nargs="?", type=int, default=150_000)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    over = (yaml.safe_load(open(args.params)).get("simulate") or {}).get("physical") or {}
    df = physical.sample(args.n, np.random.default_rng(args.seed), over)
    df["lensed_src_r_mag"] = df["src_r_mag"] - 2.5 * np.log10(df["mu_ext_sis"])
    df["magnification"] = df["mu_ext_sis"]
    det = detectable_lenspop(df).detectable.to_numpy()
    ref = lenspop_percentiles()
    print(f"{args.n} systems of the physical population; {det.sum()} ({det.mean():.1%}) pass LensPop's cuts "
          f"(DES full coadd, analytic magnification and S/N). Percentiles {'/'.join(map(str, PERCENTILES))} %:")
    print(f"{'quantity':<18} {'all injections':<36} {'LensPop-discoverable':<36} LensPop forecast")
    fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
    for col in ANCHOR_QUANTITIES:
        print(f"{col:<18} {fmt(_percentiles(df[col])):<36} {fmt(_percentiles(df.loc[det, col])):<36} {fmt(ref[col])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
