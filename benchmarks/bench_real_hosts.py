"""Painting arcs into real cutouts (stamps.source: hosts) against simulating whole stamps.

    python benchmarks/bench_real_hosts.py [--n 1024] [--device cpu] [--threads N]

Renders ``--n`` simulated host-and-field stamps once (they stand in for fetched cutouts), then
times, in the same run: the simulated survey's full render (scene + arc + noise:
``render_batches``) and the real-host path's work per stamp (host centre measured on the
cutout, arc rendered with the host's PSF, arc photon noise: ``dhs.stamps.real_hosts.paint``),
at ``simulate.batch_size``. Fetching is not timed: it is bounded by the cutout service
(``stamps.hosts.max_concurrency`` requests in flight) and by the network, not by this code.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from dhs.params import load
from dhs.simulate.config import SimConfig
from dhs.simulate.population import sample_population
from dhs.simulate.survey import render_batches, resolve_device
from dhs.stamps.real_hosts import paint

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sim = dict(load(REPO / "params.yaml")["simulate"])
    sim.update(n_stamps=args.n, device=args.device, paired=True)
    cfg = SimConfig.from_params(sim)
    device = resolve_device(cfg.device)
    pop = sample_population(cfg)
    list(render_batches(pop.iloc[: cfg.batch_size], cfg, device))   # warm-up (compilation)
    t0 = time.perf_counter()
    batches = list(render_batches(pop, cfg, device))
    t_sim = time.perf_counter() - t0
    cutouts = np.concatenate([b.images for b in batches])
    rows = pop.copy()
    paint(rows.iloc[: cfg.batch_size], cutouts[: cfg.batch_size], cfg, device)   # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(rows), cfg.batch_size):
        paint(rows.iloc[start: start + cfg.batch_size], cutouts[start: start + cfg.batch_size], cfg, device)
    t_paint = time.perf_counter() - t0
    n = len(rows)
    print(f"device {device.type}, {torch.get_num_threads()} thread(s), {n} stamps of {cfg.stamp_size} px, batch {cfg.batch_size}")
    print(f"simulated survey (scene + arc + noise): {n / t_sim:8.1f} stamps/s")
    print(f"real hosts (centre + arc + arc noise):  {n / t_paint:8.1f} stamps/s")
    print(f"ratio real hosts / simulated: {t_sim / t_paint:.2f}x")


if __name__ == "__main__":
    main()
