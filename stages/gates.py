"""Stage `gates@{arch}`: shortcut and leakage gates for one trained model (issue #8).

Runs every gate of ``dhs.gates`` on the cache with the model's best checkpoint and writes
metrics/gates/{arch}.json (status PASS / FAIL / SKIP, value and threshold per gate, and
``all_passed``) and plots/gates/{arch}.png, and prints a PASS/FAIL table.

Exit status: 0 when the gates ran (whatever they found) unless ``gates.enforce`` is true and a
gate is not PASS, then 1; 2 when the stage could not run (bad params, missing cache or model).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dhs import atomic
from dhs.stamps.cache import CacheError
from dhs.gates import GatesConfig, run_gates, table_lines
from dhs.gates.plot import plot_gates
from dhs.params import ParamsError, load_params, section
from dhs.finder.training import TrainingError


def run(arch: str, params_path: str = "params.yaml", cache_dir: str = "data/cache", models_dir: str = "data/models",
        baseline_metrics: str = "metrics/baseline.json", metrics_dir: str = "metrics/gates", plots_dir: str = "plots/gates") -> dict:
    cfg = GatesConfig.from_params(section(load_params(params_path), "gates", GatesConfig.keys(), params_path), params_path)
    from dhs.finder.inference import load_trained, score_images  # torch-heavy: after the params are known to be good

    t0 = time.perf_counter()
    tm = load_trained(Path(models_dir) / arch, cfg.device)
    if tm.spec.arch != arch:
        raise TrainingError(f"{tm.checkpoint} holds a {tm.spec.arch} model, not {arch}")

    def score(images, meta):
        return score_images(tm, images, meta, cfg.batch_size)

    metrics, examples = run_gates(score, tm.norm, cache_dir, baseline_metrics, cfg)
    metrics = {"arch": arch, "checkpoint": tm.checkpoint.name, "checkpoint_step": tm.step, "device": tm.device.type, **metrics}
    atomic.write_json(Path(metrics_dir) / f"{arch}.json", metrics)
    plot_gates(Path(plots_dir) / f"{arch}.png", metrics, examples, arch)
    for line in table_lines(metrics):
        print(f"gates {arch}: {line}")
    print(f"gates {arch}: wrote {Path(metrics_dir) / f'{arch}.json'} and {Path(plots_dir) / f'{arch}.png'} "
          f"({time.perf_counter() - t0:.1f} s)")
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--cache", default="data/cache")
    ap.add_argument("--models", default="data/models")
    ap.add_argument("--baseline", default="metrics/baseline.json")
    ap.add_argument("--metrics", default="metrics/gates")
    ap.add_argument("--plots", default="plots/gates")
    args = ap.parse_args(argv)
    try:
        metrics = run(args.arch, args.params, args.cache, args.models, args.baseline, args.metrics, args.plots)
    except (ParamsError, CacheError, TrainingError) as exc:
        print(f"gates {args.arch}: FAILED to run: {exc}", file=sys.stderr)
        return 2
    if not metrics["all_passed"]:
        bad = ", ".join(metrics["failed"] + metrics["skipped"])
        if metrics["enforce"]:
            print(f"gates {args.arch}: FAIL ({bad}) and gates.enforce is true: stopping", file=sys.stderr)
            return 1
        print(f"gates {args.arch}: FAIL ({bad}); not stopping because gates.enforce is false", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
