"""What compiling the injection engine's fused kernels costs a fresh process, and when it pays.

    python benchmarks/bench_compile.py [--batches 4] [--device cpu]

Renders the first ``--batches`` batches of params.yaml's simulated survey in three fresh
processes, one after the other, and times each batch:

- cold: ``simulate.compile: auto`` with an empty inductor cache (a new machine, a new torch);
- warm: ``auto`` again on the cache the cold run left (every later `dvc repro` on that machine);
- eager: ``simulate.compile: off``.

Dynamo traces the kernels in every process (the on-disk cache spares inductor's code
generation and C++ compilation, not the tracing), so the first batch of a warm process still
pays. The script prints the first batch's seconds, the steady rate of the later batches, and
the break-even: the number of stamps above which a process that compiles finishes before one
that runs eagerly. Nothing is written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
from dhs.params import load
from dhs.simulate.config import SimConfig
from dhs.simulate.fused import set_compile_mode
from dhs.simulate.population import sample_population
from dhs.simulate.survey import render_batches, resolve_device
repo, mode, device, n_batches = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sim = dict(load(repo + "/params.yaml")["simulate"])
bs = int(sim["batch_size"])
sim.update(n_stamps=bs * n_batches, device=device, compile=mode)
cfg = SimConfig.from_params(sim)
set_compile_mode(cfg.compile)
dev = resolve_device(cfg.device)
pop = sample_population(cfg)
times = []
for k in range(n_batches):
    t0 = time.perf_counter()
    for _ in render_batches(pop.iloc[k * bs:(k + 1) * bs], cfg, dev):
        pass
    if dev.type == "cuda":
        import torch
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t0)
print(json.dumps({"batch_size": bs, "times_s": times, "device": dev.type}))
"""


def run_child(mode: str, device: str, batches: int, cache_dir: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), mode, device, str(batches)], env=env, cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_compile: the {mode} process failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=4, help="batches rendered per process (the first one pays the tracing)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.batches < 2:
        ap.error("--batches must be at least 2: the steady rate comes from the batches after the first")
    with tempfile.TemporaryDirectory(prefix="dhs-inductor-") as d:
        runs = {"cold": run_child("auto", args.device, args.batches, Path(d)),
                "warm": run_child("auto", args.device, args.batches, Path(d)),
                "eager": run_child("off", args.device, args.batches, Path(d))}
    bs = runs["eager"]["batch_size"]
    print(f"fused kernels, {runs['eager']['device']}, batches of {bs} stamps ({args.batches} per fresh process)")
    print(f"{'process':<8} {'first batch s':>14} {'later batches, stamps/s':>24}")
    rate = {}
    for name, r in runs.items():
        later = r["times_s"][1:]
        rate[name] = bs * len(later) / sum(later)
        print(f"{name:<8} {r['times_s'][0]:>14.1f} {rate[name]:>24.0f}")
    print(f"fused / eager steady rate: {rate['warm'] / rate['eager']:.2f}x")
    saved_s_per_stamp = 1.0 / rate["eager"] - 1.0 / rate["warm"]
    for name in ("cold", "warm"):
        extra = runs[name]["times_s"][0] - runs["eager"]["times_s"][0]
        if saved_s_per_stamp > 0:
            print(f"break-even, {name} cache: compiling pays above ~{max(extra, 0.0) / saved_s_per_stamp:,.0f} stamps "
                  f"(first batch {extra:+.1f} s against eager)")
        else:
            print(f"break-even, {name} cache: never (the fused kernels are not faster here)")


if __name__ == "__main__":
    main()
