"""Training on freshly rendered batches (train.data: simulate) against training from the cache,
through the train stage's own loop (dhs.finder.training.train), same arch, steps and batch.

    python benchmarks/bench_fresh_training.py [--arch resnet18] [--steps 60] [--batch-size 256] [--device auto]

Prints images/s of each, the ratio simulate / cache (the issue's target on a GPU: >= 0.9) and
what the rendering alone sustains (stamps/s, every rendered stamp counted, the faint injections
that are dropped included). Both runs include the same val evaluation at their one epoch end.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

from dhs.contract import validate
from dhs.finder.fresh import FreshBatches
from dhs.models.loader import NormConfig
from dhs.finder.training import TrainConfig, train
from dhs.params.schema import ARCHS
from dhs.simulate.config import SimConfig
from dhs.simulate.dataset import write_synthetic_dataset
from dhs.imaging.cache import build_cache

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="small_cnn", choices=ARCHS)
    ap.add_argument("--steps", type=int, default=None, help="default: 200 on GPU, 64 on CPU (one block of 4,096 stamps at batch 64)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 64 on CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=4096, help="stamps simulated for the cache (train, val)")
    ap.add_argument("--block-stamps", type=int, default=None, help="stamps rendered at once (default: train.simulate_block_stamps)")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    gpu = device.type == "cuda"
    bs, steps = args.batch_size or (256 if gpu else 64), args.steps or (200 if gpu else 64)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    sim_p = {**params["simulate"], "device": device.type}
    norm = NormConfig.from_params(params["preprocess"])
    block = args.block_stamps or params["train"]["simulate_block_stamps"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_synthetic_dataset(SimConfig.from_params({**sim_p, "n_stamps": args.n, "n_regions": 20,
                                                       "split_fractions": {"train": 0.8, "val": 0.1, "test": 0.1}}), tmp / "s", progress=False)
        build_cache(validate(tmp / "s", progress=False), tmp / "c", progress=False)
        sim = SimConfig.from_params(sim_p)
        # the rendering alone, one block; the first block compiles the kernels (the dataset above
        # is too small for `auto` to compile on a CPU), so the second is timed
        fresh = FreshBatches(sim, bs, 1, 0, device, params["train"]["min_arc_snr"], 0.5, block_stamps=block)
        fresh.batch(0)
        fresh.counts.clear()
        t = time.perf_counter()
        fresh.batch(fresh.steps_per_block)
        if gpu:
            torch.cuda.synchronize()
        render_s = time.perf_counter() - t
        rendered = sum(fresh.counts.values())
        rates = {}
        for data in ("cache", "simulate", "cache"):  # cache twice: the first warms the allocator and kernels
            cfg = TrainConfig.from_params({**{k: v for k, v in params["train"].items() if k not in ("archs", "overrides", "preset")},
                                           "epochs": 1, "steps_per_epoch": steps, "batch_size": bs, "device": device.type,
                                           "data": data, "nproc": 1, "simulate_block_stamps": block}, args.arch)
            t = time.perf_counter()
            train(cfg, tmp / "c", tmp / f"m_{data}_{len(rates)}", norm, augment=True, progress=False, sim=sim)
            if gpu:
                torch.cuda.synchronize()
            rates[data] = steps * bs / (time.perf_counter() - t)
    name = torch.cuda.get_device_name(device) if gpu else f"{torch.get_num_threads()} CPU threads"
    print(f"device {device} ({name}), {args.arch}, batch {bs}, {steps} steps, blocks of {block} stamps, one val pass each")
    print(f"{'what':<44}{'per second':>14}")
    print(f"{'rendering a block (stamps rendered)':<44}{rendered / render_s:>14,.0f}")
    print(f"{'train stage loop, train.data: cache':<44}{rates['cache']:>14,.0f}")
    print(f"{'train stage loop, train.data: simulate':<44}{rates['simulate']:>14,.0f}")
    print(f"ratio simulate / cache: {rates['simulate'] / rates['cache']:.2f}")
    c = fresh.counts
    print(f"the rendered block: {rendered} stamps, {c['used']} used, {c['injection_arc_snr_below_min']} injections below "
          f"train.min_arc_snr, {c['rendered_beyond_the_block']} visible injections beyond what the block needed")


if __name__ == "__main__":
    main()
