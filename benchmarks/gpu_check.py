"""Every GPU measurement and the GPU-only tests in one run, one table at the end.

    python benchmarks/gpu_check.py [--out gpu_check] [--budget-s 900] [--quick]

Meant for one GPU machine with the project installed (CI has no GPU; everything here also runs
on a CPU with ``--device cpu --quick``, which is how its own test runs it). Steps, each under its
own time limit, their full output kept in ``--out``/<step>.log:

- injection: the engine against lenstronomy (benchmarks/bench_injection.py);
- stamps: the stamps stage end to end by phase against its engine, and encoding and writing in
  writer processes (as `stamps.write_workers: auto` starts them on a GPU) against one (bench_stamps.py);
- train: the training loop per arch (bench_train.py);
- fresh: the train stage's loop on cached against freshly rendered batches (bench_fresh_training.py);
- learning: discoverable completeness against the training budget (learning_curve.py), on the
  default stamps (built first with the stamps stage when data/cache is missing);
- tests: the tests marked ``gpu`` (``pytest -m gpu``).

The table names the card and every figure with the step it came from; the README's GPU
figures are copied from it. Exit status 1 when a step failed or a test did not pass.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from dhs.stamps.stage import gpu_write_workers

REPO = Path(__file__).resolve().parents[1]


def steps(device: str, quick: bool) -> list[tuple[str, list[str], float, list[tuple[str, str]]]]:
    """(name, command, share of the budget, [(figure, regex with one group)])."""
    py = [sys.executable]
    b = "benchmarks/"
    writers = gpu_write_workers()   # what stamps.write_workers: auto takes on a GPU
    return [
        ("injection", py + [b + "bench_injection.py", "--device", device, "--n-stamps", "512" if quick else "65536",
                            "--n-ref", "2" if quick else "24", "--repeats", "1" if quick else "3"], 0.22,
         [("engine, adaptive, stamps/s", r"^ours adaptive\S*\s+\S+\s+\S+\s+\S+\s+([\d,.]+)"),
          ("engine vs lenstronomy per core", r"vs lenstronomy per CPU core: ([\d.]+x)")]),
        ("stamps", py + [b + "bench_stamps.py", "--device", device, "--n", "512" if quick else "40000",
                         "--workers", "2" if quick else "16", "--write-workers", "1" if quick else str(writers)], 0.33,
         [("engine, stamps/s", r"^\s+engine\s+[\d.]+\s+([\d.]+)\s"),
          ("stamps stage end to end, stamps/s", r"^\s+stage\s+[\d.]+\s+([\d.]+)\s"),
          ("engine / stage", r"engine / stage rate: ([\d.]+x)"),
          ("encode, write, validate, cache: core-us per stamp", r"encode \+ write \+ validate \+ cache (\d+) core-us"),
          ("encode + write: writer processes against one", r"in \d+ writer processes [\d.]+ s \(\d+ us/stamp, wall\): ([\d.]+x)"),
          ("simulate with writer processes, stamps/s", r"^simulate with \d+ writer processes \(each validating the shard it wrote\) [\d.]+ s \(([\d.]+) stamps/s\)"),
          ("stage with writer processes, stamps/s", r"^stage with \d+ writer processes [\d.]+ s \(([\d.]+) stamps/s\)")]),
        ("train", py + [b + "bench_train.py", "--device", device, "--steps", "2" if quick else "20", "--n", "256" if quick else "4096",
                        "--archs", *(["small_cnn"] if quick else ["small_cnn", "resnet18", "efficientnet_b0", "convnext_tiny", "hybrid"])], 0.2,
         [(f"loop {a}, images/s", rf"^{a}\s+[\d,]+\s+([\d,]+)") for a in ("small_cnn", "resnet18", "efficientnet_b0", "convnext_tiny", "hybrid")]),
        ("fresh", py + [b + "bench_fresh_training.py", "--device", device, "--arch", "small_cnn" if quick else "resnet18",
                        "--steps", "4" if quick else "200", "--n", "512" if quick else "8192", *(["--block-stamps", "128"] if quick else [])], 0.2,
         [("rendering for training, stamps/s", r"^rendering a block \(stamps rendered\)\s+([\d,]+)"),
          ("train stage loop, cache, images/s", r"^train stage loop, train.data: cache\s+([\d,]+)"),
          ("train stage loop, simulate, images/s", r"^train stage loop, train.data: simulate\s+([\d,]+)"),
          ("simulate / cache", r"^ratio simulate / cache: ([\d.]+)")]),
        # the learning curve of issue "train on lessons": discoverable completeness by training budget, continued on a GPU
        ("learning", py + [b + "learning_curve.py", "--device", device, "--build-cache", "--work", "gpu_check/learning_curve",
                           "--steps", *(["2"] if quick else ["3000", "15000"])], 0.5,
         [(f"discoverable completeness at FPR 0.01 after {s} steps", rf"^{s} steps\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+\S+\s+([\d.]+)")
          for s in (["2"] if quick else ["3000", "15000"])]),
        ("tests", py + ["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"], 0.05,
         [("gpu tests", r"^(\d+ passed.*|.*failed.*|.*no tests ran.*|\d+ skipped.*|\d+ deselected.*)$")]),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_check")
    ap.add_argument("--budget-s", type=float, default=900.0, help="wall-clock budget shared by the steps (default 900 s)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the script itself, measures nothing")
    ap.add_argument("--only", nargs="+", default=None, help="run these steps only")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    rows, failed = [], []
    for name, cmd, share, figures in steps(args.device, args.quick):
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(30.0, share * args.budget_s))
            text, status = r.stdout + r.stderr, ("ok" if r.returncode == 0 else f"exit {r.returncode}")
        except subprocess.TimeoutExpired as exc:
            text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            status = f"timed out after {exc.timeout:.0f} s"
        (out / f"{name}.log").write_text(text)
        if status != "ok":
            failed.append(name)
        for label, pattern in figures:
            m = re.search(pattern, text, re.M)
            if m:
                rows.append((name, label, m.group(1)))
            elif status == "ok" and name != "train":
                rows.append((name, label, "not found in the log"))
        rows.append((name, "status, wall time", f"{status}, {time.perf_counter() - t0:.0f} s"))
        print(f"gpu_check: {name}: {status}", file=sys.stderr, flush=True)
    width = max(len(r[1]) for r in rows) + 2 if rows else 10
    print(f"gpu_check on {card} (torch {torch.__version__}, device {args.device}{', quick' if args.quick else ''}); logs in {out}/")
    print(f"{'step':<11}{'figure':<{width}}value")
    for name, label, value in rows:
        print(f"{name:<11}{label:<{width}}{value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
