"""Training throughput per arch: images/s through forward, backward and optimiser step, with
the loader (cache read, normalisation, augmentation) included, as the train stage runs it.

    python benchmarks/bench_train.py [--archs small_cnn resnet18 ...] [--steps 5] [--device auto]

On CUDA it uses bf16 autocast and channels_last, like the stage. Prints a table; the figure for
ResNet-18 at 64x64 on one H100 is the issue's target (>= 10,000 images/s end to end).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from dhs.imaging.cache import build_cache, open_split
from dhs.contract import validate
from dhs.models.loader import NormConfig, iterate_batches, shard_indices
from dhs.models.registry import build_model
from dhs.models.spec import ModelSpec
from dhs.params.schema import ARCHS
from dhs.simulate.config import SimConfig
from dhs.simulate.dataset import write_synthetic_dataset

META = ("psfsize_r", "psfdepth_r", "bad_pixel_frac", "wise_brightmask_frac", "ebv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per arch (after 2 warm-up steps)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 64 on CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--n", type=int, default=2048, help="stamps to simulate for the cache")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    amp = device.type == "cuda"
    bs = args.batch_size or (256 if amp else 64)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        p = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "params.yaml"))["simulate"]
        p.update(n_stamps=args.n, n_regions=20, failed_cutout_fraction=0.0, split_fractions={"train": 0.9, "val": 0.05, "test": 0.05})
        write_synthetic_dataset(SimConfig.from_params(p), tmp / "s", progress=False)
        build_cache(validate(tmp / "s", progress=False), tmp / "c", progress=False)
        split = open_split(tmp / "c", "train")
        meta_all = torch.from_numpy(split.meta[list(META)].to_numpy(np.float32))
        print(f"device {device} ({torch.cuda.get_device_name(device) if amp else f'{torch.get_num_threads()} CPU threads'}), batch {bs}, "
              f"64x64 grz, bf16 autocast {amp}, channels_last")
        print(f"{'arch':<18}{'params':>12}{'images/s':>12}")
        for arch in args.archs:
            model = build_model(ModelSpec(arch, 64, metadata=META if arch == "hybrid" else ())).to(device).to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            order = shard_indices(len(split), shuffle=True, seed=0)
            it = iter(())

            def step(k: int) -> None:
                nonlocal it
                try:
                    x, y, rows = next(it)
                except StopIteration:
                    it = iterate_batches(split, np.resize(order, bs * 1000)[k * bs:], bs, NormConfig.from_params({}), device, augment=True)
                    x, y, rows = next(it)
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    out = model(x, meta_all[rows].to(device)) if arch == "hybrid" else model(x)
                    loss = F.binary_cross_entropy_with_logits(out.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for k in range(2):
                step(k)
            if amp:
                torch.cuda.synchronize()
            t = time.perf_counter()
            for k in range(args.steps):
                step(k + 2)
            if amp:
                torch.cuda.synchronize()
            rate = args.steps * bs / (time.perf_counter() - t)
            print(f"{arch:<18}{sum(q.numel() for q in model.parameters()):>12,}{rate:>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
