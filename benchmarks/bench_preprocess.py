"""Throughput of the finder's input preprocessing (``dhs.models.loader.normalize``) per variant:
annulus normalisation alone, host-centred circular profile subtraction, and the default
(elliptical annuli of the host's shape, then the residual noise scale).

    python benchmarks/bench_preprocess.py [--batch 512] [--threads 1] [--device cpu] [--repeats 3]

Stamps are 64x64 grz of Gaussian noise plus an elliptical host, which is all the cost depends on.
Prints stamps/s for each variant and its ratio to the circular subtraction measured in the same
run (the peer the elliptical one replaces), then where the elliptical removal's time goes: the
host centre, the shape moments (one weight, and the six of the axis ratio by radius) and the
profile in elliptical annuli, as fractions of the whole removal.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dhs.models.loader import NormConfig, normalize
from dhs.imaging import centring


def stamps(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :64] - 31.5
    q, phi = rng.uniform(0.4, 1.0, n), rng.uniform(0, np.pi, n)
    xp = x[None] * np.cos(phi)[:, None, None] + y[None] * np.sin(phi)[:, None, None]
    yp = -x[None] * np.sin(phi)[:, None, None] + y[None] * np.cos(phi)[:, None, None]
    host = np.exp(-np.sqrt(q[:, None, None] * xp ** 2 + yp ** 2 / q[:, None, None]) / 3.0)
    img = host[:, None] * np.array([0.5, 1.0, 1.6])[None, :, None, None] + 0.01 * rng.standard_normal((n, 3, 64, 64))
    return torch.from_numpy(img.astype(np.float32))


def _best(f, repeats: int, device: str) -> float:
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        f()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def removal_parts(x: torch.Tensor, repeats: int, device: str) -> dict[str, float]:
    """Seconds of each part of the elliptical removal on the batch ``x`` (best of ``repeats``)."""
    centres = centring.measure_centres(x)
    det = centring.shape_detection_image(x, centres)
    q, phi = centring.host_shape_profile(det)
    return {
        "host centre": _best(lambda: centring.measure_centres(x), repeats, device),
        "shape moments, one weight": _best(lambda: centring.host_shapes(det), repeats, device),
        "shape moments, all weights": _best(lambda: centring.host_shape_profile(det), repeats, device),
        "profile in elliptical annuli": _best(lambda: centring.elliptical_profile_about(x, centres, q, phi), repeats, device),
        "whole removal": _best(lambda: centring.subtract_radial_profile_about_host(x, shape="ellipse"), repeats, device),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = stamps(a.batch).to(a.device)
    variants = {
        "annulus only": NormConfig.from_params({}),
        "circle about host (peer)": NormConfig.from_params(dict(radial_profile_subtract=True, radial_profile_shape="circle")),
        "ellipse about host": NormConfig.from_params(dict(radial_profile_subtract=True, radial_profile_shape="ellipse")),
        "ellipse + residual noise (default)": NormConfig.from_params(dict(radial_profile_subtract=True, radial_profile_shape="ellipse",
                                                         residual_noise_scale=True)),
    }
    rates = {}
    for name, cfg in variants.items():
        normalize(x[:32], cfg)  # warm-up
        rates[name] = a.batch / _best(lambda: normalize(x, cfg), a.repeats, a.device)
    peer = rates["circle about host (peer)"]
    print(f"preprocessing 64x64 grz stamps, batch {a.batch}, {a.device}, {a.threads} thread(s), best of {a.repeats}")
    for name, r in rates.items():
        print(f"  {name:<38} {r:>9.0f} stamps/s   {r / peer:5.2f}x the circular subtraction")
    parts = removal_parts(x, a.repeats, a.device)
    whole = parts["whole removal"]
    print("the elliptical removal by part (the parts overlap: all weights include the one)")
    for name, sec in parts.items():
        print(f"  {name:<38} {sec * 1e6 / a.batch:>9.0f} us/stamp   {sec / whole:5.2f} of the whole removal")


if __name__ == "__main__":
    main()
