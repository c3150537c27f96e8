"""Throughput of the torch injection engine against lenstronomy, on the same lensed arcs.

What is rendered (both engines, the same random configurations): the lensed arc of an SIE +
external shear lens and an elliptical Sersic source, on an N x N grid (N = 64 or 96, 0.262
arcsec pixels) with 4 x 4 sub-pixel sampling, in g, r and z, each band convolved with its own
Moffat (beta 3.5) PSF, sampled on the stamp grid as psf.py does. Parameters are drawn from the
DR10-like priors of ``params.yaml`` (theta_E U(0.5, 2.5), lens q U(0.5, 1), shear components N(0, 0.05), source offset
sqrt(U(0.1^2, 0.4^2)) theta_E, R_e U(0.15, 0.5), n U(0.5, 2), source e U(0, 0.4), r-band PSF
FWHM truncnormal(1.31, 0.17) in [0.8, 1.6] with g = 1.16x and z = 0.96x of it).

Engines:
- ours: ``render_profile(lensed_sersic)`` once per stamp (unit flux), then ``colour_and_blur``
  (one FFT per stamp, one per band). Timed per batch: PSF kernel sampling and their FFTs (one
  PSF per stamp and band, none shared), rendering and convolution, from parameter tensors
  already on the device to the (B, 3, N, N) images on the device. Run with adaptive
  supersampling at the production threshold (``simulate.supersample_threshold``) and uniform
  4 x 4 (threshold 0), compiled (fused kernels, ``simulate.compile``; compilation happens in
  the untimed warm-up and is printed), and once eagerly for comparison.
- lenstronomy: one ``ImageModel`` (PixelGrid, LensModel [SIE, SHEAR], LightModel
  [SERSIC_ELLIPSE], supersampling_factor 4, supersampling_convolution False) built once; per
  stamp and band, ``update_psf`` with a 'PIXEL' PSF holding the very kernel our engine uses
  (centred, (N-1) x (N-1), sampled outside the timer), then ``source_surface_brightness``.
  lenstronomy's convolution is linear (zero-padded), ours circular on the stamp; the accuracy
  lines below include that difference. Every stamp x band is
  rendered, as a per-band lenstronomy injection does.
- lenstronomy, 1 trace/stamp (a stricter, hand-optimised baseline, printed for context): PSF
  'NONE', one unconvolved unit-flux render per stamp, then one ``scipy.signal.fftconvolve``
  per band. The headline ratio is against the plain lenstronomy row, as the issue states.

Per-core normalisation: our CPU rate is divided by ``torch.get_num_threads()`` (the intra-op
threads torch uses, i.e. the cores it can occupy); lenstronomy runs numpy/scipy code that is
single-threaded, and is additionally pinned to 1 BLAS/OpenMP thread with threadpoolctl, so
its rate is per 1 core. The measured process CPU time / wall time of each run is printed as a
check (``cpu util``): dividing by the thread count is conservative for us when the threads are
not all busy. When torch has more than one thread, our engine is also timed on 1 thread (first
batch only) for a per-core figure that assumes nothing about thread scaling. GPU rows are the
whole GPU; their ratio is GPU vs one lenstronomy CPU core.

Timing: time.perf_counter around each batch (ours) or stamp (lenstronomy) after one warm-up
call; each is timed ``--repeats`` times and its best time counts (as timeit does), which
damps noise from other processes. torch's OpenMP threads slow down by 10x or more when another
process holds a core, so run on an idle machine; the script warns when its runs kept fewer
cores busy than they asked for. On a 2-core VM, figures vary by about 10-20% from run to run.

Accuracy printed alongside: adaptive vs uniform 4 x 4 (total flux and pixels, every stamp and
band) and ours (uniform, float32) vs lenstronomy (float64) for the reference stamps.

    .venv/bin/python benchmarks/bench_injection.py [--n-stamps 1024] [--n-ref 24]
        [--batch-size 256] [--device auto|cpu|cuda] [--size 64|96] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dhs.params import load_params, section  # noqa: E402
from dhs.simulate.config import SimConfig  # noqa: E402
from dhs.simulate.priors import sample_prior  # noqa: E402
from dhs.simulate.fused import is_compiled_on, set_compile_mode  # noqa: E402
from dhs.simulate.psf import PSFSpectra, centred_kernel, psf_kernels  # noqa: E402
from dhs.simulate.render import colour_and_blur, lensed_sersic, render_profile, supersample_mask  # noqa: E402
from dhs.simulate.sersic import sersic_amp_from_total_flux  # noqa: E402
from dhs.simulate.survey import band_fluxes  # noqa: E402

OVERSAMPLE = 4
PSF_MODEL = "moffat"
MOFFAT_BETA = 3.5
LENS_KEYS = (
    "theta_e_arcsec", "lens_q", "lens_phi_rad", "shear_g1", "shear_g2", "src_x_arcsec",
    "src_y_arcsec", "src_reff_arcsec", "src_n", "src_q", "src_phi_rad",
)


# ----------------------------------------------------------------------------- configurations
def draw_configs(cfg: SimConfig, n: int, seed: int) -> dict[str, np.ndarray]:
    """n lensed-arc configurations (float64 numpy) from the priors in params.yaml."""
    P, rng = cfg.priors, np.random.default_rng(seed)
    theta_e = sample_prior(P["theta_e_arcsec"], n, rng)
    beta = sample_prior(P["src_beta_frac"], n, rng) * theta_e
    beta_ang = rng.uniform(0.0, 2.0 * np.pi, n)
    src_e = np.clip(sample_prior(P["src_e"], n, rng), 0.0, 0.9)
    psf_r = sample_prior(P["psfsize_r_arcsec"], n, rng)
    c = {
        "theta_e_arcsec": theta_e,
        "lens_q": np.clip(sample_prior(P["lens_q"], n, rng), 0.05, 1.0),
        "lens_phi_rad": rng.uniform(0.0, np.pi, n),
        "shear_g1": sample_prior(P["shear_component"], n, rng),
        "shear_g2": sample_prior(P["shear_component"], n, rng),
        "src_x_arcsec": beta * np.cos(beta_ang),
        "src_y_arcsec": beta * np.sin(beta_ang),
        "src_reff_arcsec": sample_prior(P["src_reff_arcsec"], n, rng),
        "src_n": sample_prior(P["src_sersic_n"], n, rng),
        "src_q": (1.0 - src_e) / (1.0 + src_e),
        "src_phi_rad": rng.uniform(0.0, np.pi, n),
    }
    c["flux"] = band_fluxes(sample_prior(P["src_r_mag"], n, rng), sample_prior(P["src_g_minus_r"], n, rng),
                            sample_prior(P["src_r_minus_z"], n, rng))  # (n, 3) nMgy
    c["fwhm"] = np.stack([psf_r * cfg.psf_fwhm_ratio[b] for b in cfg.bands], axis=1)  # (n, 3) arcsec
    return c


def batch_slices(n: int, batch_size: int) -> list[slice]:
    return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


# ----------------------------------------------------------------------------- our engine
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ours_render_batch(t: dict[str, torch.Tensor], n_pix: int, s: float, threshold: float,
                      device: torch.device, stages: list[float] | None = None) -> torch.Tensor:
    """(B, 3, N, N) arc images: kernels + render + per-band blur, as render_noise_free does.

    ``stages`` (if given) receives the seconds spent in [PSF kernels + their FFTs, rendering,
    colour + blur]; the device is synchronised between stages only when it is given."""
    marks = [time.perf_counter()]

    def mark():
        if stages is not None:
            sync(device)
            marks.append(time.perf_counter())

    kernels = PSFSpectra.from_fwhm(t["fwhm"], n_pix, s, model=PSF_MODEL, beta=MOFFAT_BETA)
    mark()
    unit = render_profile(lensed_sersic, {k: t[k] for k in LENS_KEYS}, n_pix=n_pix, pixel_scale_arcsec=s,
                          oversample=OVERSAMPLE, threshold=threshold)
    mark()
    out = colour_and_blur(unit, t["flux"], kernels)
    mark()
    if stages is not None:
        stages[:] = list(np.diff(marks))
    return out


def time_ours(conf, batches, n_pix, s, threshold, device, repeats, dtype=torch.float32):
    """Best-of-``repeats`` time per batch. Returns (stamps/s, cpu util, stage fractions,
    per-batch (B, 3, N, N) outputs of the first repeat, on the device, warm-up seconds)."""
    tens = [{k: torch.as_tensor(conf[k][sl], dtype=dtype, device=device) for k in (*LENS_KEYS, "flux", "fwhm")}
            for sl in batches]
    w0 = time.perf_counter()
    ours_render_batch(tens[0], n_pix, s, threshold, device)  # warm-up (compilation, allocator, threads, plans)
    sync(device)
    warm_s = time.perf_counter() - w0
    best = [float("inf")] * len(batches)
    outs, wall_all, cpu_all = [], 0.0, 0.0
    for rep in range(repeats):
        for j, t in enumerate(tens):
            c0, t0 = time.process_time(), time.perf_counter()
            out = ours_render_batch(t, n_pix, s, threshold, device)
            sync(device)
            dt = time.perf_counter() - t0
            wall_all, cpu_all = wall_all + dt, cpu_all + time.process_time() - c0
            best[j] = min(best[j], dt)
            if rep == 0:
                outs.append(out)
    # stage split, untimed pass on the first batch (synchronised between stages)
    stages: list[float] = []
    ours_render_batch(tens[0], n_pix, s, threshold, device, stages)
    frac = np.asarray(stages) / sum(stages)
    n = sum(sl.stop - sl.start for sl in batches)
    return n / sum(best), cpu_all / wall_all, frac, outs, warm_s


# ----------------------------------------------------------------------------- lenstronomy
class Lenstronomy:
    """lenstronomy objects built once; per stamp x band: update_psf + source_surface_brightness."""

    def __init__(self, n_pix: int, s: float, ksize: int):
        """``ksize``: the width of the (odd, centred) kernels that will be passed to ``render``."""
        from lenstronomy.Data.pixel_grid import PixelGrid
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        self.PSF = PSF
        o = -(n_pix - 1) / 2.0 * s
        # x (ra) along columns, y (dec) along rows, pixel centres at (j - (N-1)/2) s: our grid
        grid = PixelGrid(nx=n_pix, ny=n_pix, transform_pix2angle=np.eye(2) * s, ra_at_xy_0=o, dec_at_xy_0=o)
        numerics = {"supersampling_factor": OVERSAMPLE, "supersampling_convolution": False}
        delta = np.zeros((ksize, ksize))
        delta[ksize // 2, ksize // 2] = 1.0
        self.model = ImageModel(grid, PSF(psf_type="PIXEL", kernel_point_source=delta),
                                lens_model_class=LensModel(["SIE", "SHEAR"]),
                                source_model_class=LightModel(["SERSIC_ELLIPSE"]), kwargs_numerics=numerics)
        self.model_nopsf = ImageModel(grid, PSF(psf_type="NONE"), lens_model_class=LensModel(["SIE", "SHEAR"]),
                                      source_model_class=LightModel(["SERSIC_ELLIPSE"]), kwargs_numerics=numerics)
        self._grid, self._delta = grid, delta

    def adaptive_model(self, supersampled: np.ndarray):
        """An ImageModel in lenstronomy's own adaptive mode, supersampling exactly the pixels our
        engine picked for this stamp (the rest at their centre), built outside the timer."""
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        numerics = {"supersampling_factor": OVERSAMPLE, "compute_mode": "adaptive",
                    "supersampled_indexes": supersampled.astype(bool), "supersampling_convolution": False}
        return ImageModel(self._grid, self.PSF(psf_type="PIXEL", kernel_point_source=self._delta),
                          lens_model_class=LensModel(["SIE", "SHEAR"]), source_model_class=LightModel(["SERSIC_ELLIPSE"]),
                          kwargs_numerics=numerics)

    def render_with(self, model, kw_lens_src_per_band, kernels_i: np.ndarray) -> np.ndarray:
        """(3, N, N): ``render`` with a given ImageModel."""
        out = []
        for band, (kw_lens, kw_src) in enumerate(kw_lens_src_per_band):
            model.update_psf(self.PSF(psf_type="PIXEL", kernel_point_source=kernels_i[band]))
            out.append(model.source_surface_brightness(kw_src, kw_lens))
        return np.stack(out)

    @staticmethod
    def kwargs(conf, i: int, flux: float):
        from lenstronomy.Util.param_util import phi_q2_ellipticity

        # lenstronomy's own conversion (e = (1-q)/(1+q), e1 = e cos 2phi, e2 = e sin 2phi), so the
        # agreement check below also tests our reading of its convention
        le1, le2 = phi_q2_ellipticity(conf["lens_phi_rad"][i], conf["lens_q"][i])
        se1, se2 = phi_q2_ellipticity(conf["src_phi_rad"][i], conf["src_q"][i])
        reff, n = conf["src_reff_arcsec"][i], conf["src_n"][i]
        amp = float(sersic_amp_from_total_flux(torch.tensor(flux, dtype=torch.float64),
                                               torch.tensor(reff, dtype=torch.float64), torch.tensor(n, dtype=torch.float64)))
        kw_lens = [
            {"theta_E": conf["theta_e_arcsec"][i], "e1": float(le1), "e2": float(le2), "center_x": 0.0, "center_y": 0.0},
            {"gamma1": conf["shear_g1"][i], "gamma2": conf["shear_g2"][i], "ra_0": 0.0, "dec_0": 0.0},
        ]
        kw_src = [{"amp": amp, "R_sersic": reff, "n_sersic": n, "e1": float(se1), "e2": float(se2),
                   "center_x": conf["src_x_arcsec"][i], "center_y": conf["src_y_arcsec"][i]}]
        return kw_lens, kw_src

    def render(self, kw_lens_src_per_band, kernels_i: np.ndarray) -> np.ndarray:
        """(3, N, N): one full lenstronomy render per band."""
        return self.render_with(self.model, kw_lens_src_per_band, kernels_i)

    def render_one_trace(self, kw_unit, flux_i: np.ndarray, kernels_i: np.ndarray) -> np.ndarray:
        """(3, N, N): one unconvolved unit-flux render, then an FFT convolution per band."""
        from scipy.signal import fftconvolve

        kw_lens, kw_src = kw_unit
        unit = self.model_nopsf.source_surface_brightness(kw_src, kw_lens, unconvolved=True)
        return np.stack([fftconvolve(unit, kernels_i[b], mode="same") * flux_i[b] for b in range(3)])


def time_lenstronomy(conf, n_ref, kernels, n_pix, s, repeats, supersampled):
    """Best-of-``repeats`` time per stamp for the lenstronomy variants on the first n_ref stamps
    (``supersampled``: our engine's adaptive masks for them). Returns {variant: (stamps/s, cpu
    util, (n_ref, 3, N, N) images)}."""
    from threadpoolctl import threadpool_limits

    lt = Lenstronomy(n_pix, s, kernels.shape[-1])
    # parameter dictionaries are bookkeeping, built outside the timer
    kw_bands = [[Lenstronomy.kwargs(conf, i, conf["flux"][i, b]) for b in range(3)] for i in range(n_ref)]
    kw_unit = [Lenstronomy.kwargs(conf, i, 1.0) for i in range(n_ref)]
    adaptive = [lt.adaptive_model(supersampled[i]) for i in range(n_ref)]
    res = {}
    with threadpool_limits(limits=1):
        for name, fn, args in (
            ("per_band", lt.render, [(kw_bands[i], kernels[i]) for i in range(n_ref)]),
            ("one_trace", lt.render_one_trace, [(kw_unit[i], conf["flux"][i], kernels[i]) for i in range(n_ref)]),
            ("adaptive", lt.render_with, [(adaptive[i], kw_bands[i], kernels[i]) for i in range(n_ref)]),
        ):
            fn(*args[0])  # warm-up
            best = np.full(n_ref, np.inf)
            imgs, wall_all, cpu_all = [], 0.0, 0.0
            for rep in range(repeats):
                for i, a in enumerate(args):
                    c0, t0 = time.process_time(), time.perf_counter()
                    img = fn(*a)
                    dt = time.perf_counter() - t0
                    wall_all, cpu_all = wall_all + dt, cpu_all + time.process_time() - c0
                    best[i] = min(best[i], dt)
                    if rep == 0:
                        imgs.append(img)
            res[name] = (n_ref / best.sum(), cpu_all / wall_all, np.stack(imgs))
    return res


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-stamps", type=int, default=1024, help="stamps rendered by our engine (default 1024)")
    ap.add_argument("--n-ref", type=int, default=24, help="stamps rendered by lenstronomy (default 24)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto: CPU, plus the GPU when torch sees one; cpu: CPU only; cuda: CPU and GPU (required)")
    ap.add_argument("--size", type=int, choices=(64, 96), default=64)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes; the best time of each batch/stamp counts (default 3)")
    ap.add_argument("--seed", type=int, default=12345)
    ap.add_argument("--compile", choices=("auto", "on", "off"), default=None,
                    help="fused kernels for our engine (default: params.yaml simulate.compile)")
    args = ap.parse_args(argv)
    if min(args.n_stamps, args.n_ref, args.batch_size, args.repeats) < 1:
        ap.error("--n-stamps, --n-ref, --batch-size and --repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")

    cfg = SimConfig.from_params(section(load_params(REPO / "params.yaml"), "simulate"))
    N, s, thr = args.size, cfg.pixel_scale_arcsec, cfg.supersample_threshold
    n_ref = min(args.n_ref, args.n_stamps)
    conf = draw_configs(cfg, args.n_stamps, args.seed)
    batches = batch_slices(args.n_stamps, args.batch_size)
    threads = torch.get_num_threads()
    mode = args.compile or cfg.compile
    set_compile_mode(mode)

    print(f"bench_injection: {N}x{N} px at {s} arcsec, {OVERSAMPLE}x{OVERSAMPLE} sub-pixels, grz, "
          f"Moffat beta {MOFFAT_BETA}, PSF sampled on the {N}x{N} grid, one per stamp and band; compile {mode}")
    print(f"  torch {torch.__version__}: {threads} intra-op threads, os.cpu_count() {os.cpu_count()}; "
          f"best of {args.repeats} passes per batch/stamp; 1-min load average at start {os.getloadavg()[0]:.2f}")
    print(f"  ours: {args.n_stamps} stamps, batches of {args.batch_size}, float32, adaptive threshold {thr:g} "
          f"(params.yaml simulate.supersample_threshold); lenstronomy {__import__('lenstronomy').__version__}: "
          f"{n_ref} stamps, float64, 1 thread\n")

    rows = []  # (engine, device, threads, stamps/s, cpu util)
    cpu = torch.device("cpu")
    r_ad, u_ad, f_ad, out_ad, warm_ad = time_ours(conf, batches, N, s, thr, cpu, args.repeats)
    r_full, u_full, f_full, out_full, warm_full = time_ours(conf, batches, N, s, 0.0, cpu, args.repeats)
    compiled_cpu = is_compiled_on(cpu)
    tag = "" if compiled_cpu else ", eager"
    rows += [(f"ours adaptive (thr {thr:g}){tag}", "cpu", threads, r_ad, u_ad),
             (f"ours uniform 4x4 (thr 0){tag}", "cpu", threads, r_full, u_full)]
    r_eager = None
    if compiled_cpu:
        # the same code without fusion: what compilation buys
        set_compile_mode("off")
        try:
            r_eager, u_eager, f_eager, _, _ = time_ours(conf, batches, N, s, thr, cpu, args.repeats)
        finally:
            set_compile_mode(mode)
        rows.append(("ours adaptive, eager", "cpu", threads, r_eager, u_eager))
    r1_ad = r1_full = None
    if threads > 1:
        # direct per-core check, no assumption about thread scaling: 1 thread, first batch only
        torch.set_num_threads(1)
        try:
            r1_ad, u1_ad, _, _, _ = time_ours(conf, batches[:1], N, s, thr, cpu, args.repeats)
            r1_full, u1_full, _, _, _ = time_ours(conf, batches[:1], N, s, 0.0, cpu, args.repeats)
        finally:
            torch.set_num_threads(threads)
        rows += [("ours adaptive, 1 thread*", "cpu", 1, r1_ad, u1_ad), ("ours uniform 4x4, 1 thread*", "cpu", 1, r1_full, u1_full)]

    # lenstronomy gets the kernels our engine used for those stamps, centred and odd-sized
    k_ref = centred_kernel(psf_kernels(torch.as_tensor(conf["fwhm"][:n_ref], dtype=torch.float64), N, s,
                                       model=PSF_MODEL, beta=MOFFAT_BETA)).numpy()
    # and, for its own adaptive mode, the pixels our engine supersampled in those stamps
    ref_params = {k: torch.as_tensor(conf[k][:n_ref], dtype=torch.float64) for k in LENS_KEYS}
    centre = render_profile(lensed_sersic, ref_params, n_pix=N, pixel_scale_arcsec=s, oversample=1)
    masks = supersample_mask(centre, thr).numpy()
    lt = time_lenstronomy(conf, n_ref, k_ref, N, s, args.repeats, masks)
    r_lt, u_lt, img_lt = lt["per_band"]
    r_lt1, u_lt1, img_lt1 = lt["one_trace"]
    r_lta, u_lta, img_lta = lt["adaptive"]
    rows += [("lenstronomy (per band)", "cpu", 1, r_lt, u_lt), ("lenstronomy 1 trace/stamp", "cpu", 1, r_lt1, u_lt1),
             ("lenstronomy adaptive, same px", "cpu", 1, r_lta, u_lta)]

    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        dev = torch.device("cuda")
        rg_ad, _, fg_ad, _, warm_g = time_ours(conf, batches, N, s, thr, dev, args.repeats)
        rg_full, _, fg_full, _, _ = time_ours(conf, batches, N, s, 0.0, dev, args.repeats)
        tag = "" if is_compiled_on(dev) else ", eager"
        rows += [(f"ours adaptive (thr {thr:g}){tag}", "cuda", None, rg_ad, None),
                 (f"ours uniform 4x4 (thr 0){tag}", "cuda", None, rg_full, None)]
        gpu_note = f"GPU: {torch.cuda.get_device_name(dev)}"
    elif args.device == "cpu":
        gpu_note = "GPU: not measured (--device cpu)"
    else:
        gpu_note = "GPU: none present (torch.cuda.is_available() is False), no GPU figures"

    # ---------------------------------------------------------------- throughput table
    print(f"{'engine':<28} {'device':<6} {'threads':>7} {'cpu util':>8} {'stamps/s':>10} {'/s/core':>9} {'ratio/core':>10}")
    for eng, dev, th, rate, util in rows:
        per_core = rate / th if th else None
        ratio = (per_core if th else rate) / r_lt
        print(f"{eng:<28} {dev:<6} {th if th else 'GPU':>7} {f'{util:.2f}' if util is not None else '-':>8} "
              f"{rate:>10.1f} {f'{per_core:.1f}' if per_core else '-':>9} {ratio:>9.1f}x")
    print("  /s/core = stamps/s / threads (ours: torch.get_num_threads(); lenstronomy: 1). "
          "ratio/core = /s/core / lenstronomy-per-band /s/core;\n  GPU rows: whole GPU vs one lenstronomy core. "
          "cpu util = process CPU time / wall time (cores actually busy).")
    if r1_ad is not None:
        print(f"  * torch.set_num_threads(1), first {batches[0].stop} stamps only: a direct per-core figure.")
    print(f"  {gpu_note}")
    print(f"  ours, time split PSF kernels / render / blur: adaptive {'/'.join(f'{x:.0%}' for x in f_ad)}, "
          f"uniform {'/'.join(f'{x:.0%}' for x in f_full)} (cpu)")
    print(f"  untimed warm-up (includes compiling the fused kernels when not cached): adaptive {warm_ad:.1f} s, "
          f"uniform {warm_full:.1f} s (cpu)" + (f", {warm_g:.1f} s (cuda)" if gpu_note.startswith("GPU: ") and "none" not in gpu_note and "not measured" not in gpu_note else ""))
    if r_eager is not None:
        print(f"  fused (compiled) vs eager, adaptive: {r_ad / r_eager:.1f}x")
    target = 30.0
    ad_ratio, full_ratio = (r_ad / threads) / r_lt, (r_full / threads) / r_lt
    print(f"\nours adaptive vs lenstronomy per CPU core: {ad_ratio:.1f}x (target >= {target:.0f}x: "
          f"{'met' if ad_ratio >= target else 'NOT met'}); uniform 4x4: {full_ratio:.1f}x. "
          f"Against the 1-trace lenstronomy baseline: {(r_ad / threads) / r_lt1:.1f}x and {(r_full / threads) / r_lt1:.1f}x.\n"
          f"  Like for like, ours adaptive vs lenstronomy's adaptive mode on the same supersampled pixels: "
          f"{(r_ad / threads) / r_lta:.1f}x; uniform 4x4 vs lenstronomy per band: {full_ratio:.1f}x.")
    if r1_ad is not None:
        print(f"  measured on 1 torch thread instead: adaptive {r1_ad / r_lt:.1f}x, uniform {r1_full / r_lt:.1f}x "
              f"(thread scaling {r_ad / r1_ad:.2f}x and {r_full / r1_full:.2f}x on {threads} threads)")
    if (threads > 1 and min(u_ad, u_full) < 0.8 * threads) or min(u_lt, u_lt1, u_lta) < 0.9:
        print("  warning: the runs kept fewer cores busy than they asked for (cpu util above); another process was "
              "probably competing for the CPUs. torch's OpenMP threads degrade badly when a core is taken "
              "(the adaptive path most), so rerun on an idle machine before quoting these figures.")

    # ---------------------------------------------------------------- accuracy
    ad = torch.cat(out_ad).double().cpu()
    full = torch.cat(out_full).double().cpu()
    tot_ad, tot_full = ad.sum(dim=(-1, -2)), full.sum(dim=(-1, -2))  # (n, 3)
    rel_tot = ((tot_ad - tot_full).abs() / tot_full).max().item()
    rel_pix = ((ad - full).abs() / full.amax(dim=(-1, -2), keepdim=True)).max().item()
    print(f"\nadaptive vs uniform 4x4, all {args.n_stamps} stamps x grz: max |d total flux| / total = {rel_tot:.2e}, "
          f"max |d pixel| / peak = {rel_pix:.2e}")

    ours_ref = full[:n_ref].numpy()  # float32 renders, uniform 4x4
    lt_tot, ours_tot = img_lt.sum(axis=(-1, -2)), ours_ref.sum(axis=(-1, -2))
    rel = (ours_tot - lt_tot) / lt_tot
    pix = np.abs(ours_ref - img_lt).max(axis=(-1, -2)) / img_lt.max(axis=(-1, -2))
    rel1 = np.abs(img_lt1 - img_lt).max(axis=(-1, -2)) / img_lt.max(axis=(-1, -2))
    print(f"ours (thr 0, float32) vs lenstronomy (float64), r band, first {min(5, n_ref)} stamps:")
    print(f"  {'#':>3} {'theta_E':>7} {'lens q':>6} {'R_e':>5} {'n':>5} {'fwhm_r':>6} {'F_r lenstr':>10} "
          f"{'dF_r/F_r':>10} {'max|d pix|/peak':>15}")
    for i in range(min(5, n_ref)):
        print(f"  {i:>3} {conf['theta_e_arcsec'][i]:>7.3f} {conf['lens_q'][i]:>6.3f} {conf['src_reff_arcsec'][i]:>5.3f} "
              f"{conf['src_n'][i]:>5.2f} {conf['fwhm'][i, 1]:>6.3f} {lt_tot[i, 1]:>10.4f} {rel[i, 1]:>+10.2e} {pix[i, 1]:>15.2e}")
    print(f"  all {n_ref} stamps x grz: max |dF/F| = {np.abs(rel).max():.2e}, max |d pixel| / peak = {pix.max():.2e}; "
          f"lenstronomy 1-trace vs per-band: max |d pixel| / peak = {rel1.max():.2e}")
    ours_ad_ref = ad[:n_ref].numpy()
    pix_a = np.abs(ours_ad_ref - img_lta).max(axis=(-1, -2)) / img_lta.max(axis=(-1, -2))
    rel_a = np.abs(ours_ad_ref.sum(axis=(-1, -2)) - img_lta.sum(axis=(-1, -2))) / img_lta.sum(axis=(-1, -2))
    print(f"ours adaptive vs lenstronomy adaptive (same pixels), all {n_ref} stamps x grz: max |dF/F| = {rel_a.max():.2e}, "
          f"max |d pixel| / peak = {pix_a.max():.2e} (both include the circular vs linear convolution difference)")


if __name__ == "__main__":
    main()
