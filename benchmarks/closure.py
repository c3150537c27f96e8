"""The closure test over many seeds: does the measuring chain recover a known selection function,
and do its 95 % intervals cover the truth 90-99 % of the time?

    python benchmarks/closure.py [--seeds 20] [--params params.yaml] [--out /tmp/closure] [--work DIR]

Runs ``dhs.selection.closure.run`` (the stage ``closure``'s body) with ``--seeds`` seeds: for each,
a fresh draw of the simulated survey's population (``simulate.seed`` + seed) and the analytic
finder's scores go through the completeness measurement (Spark) and the selection stage; each
binned estimate (Wilson, region bootstrap) is judged against the population truth over the other
seeds' draws, the model's band against the truth over its own injections. Prints the coverage
table (with the Wilson interval of each coverage and its count of (seed, bin) cells), the held-out
validation per seed, and the wall time; writes metrics and the per-bin table under ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", default="/tmp/dhs-closure-benchmark")
    ap.add_argument("--work", default=None, help="keep each seed's score table, metrics and selection file here")
    a = ap.parse_args(argv)
    from dhs.selection.closure import run

    t0 = time.perf_counter()
    m = run(a.params, metrics_path=str(Path(a.out) / "closure.json"), plots_dir=str(Path(a.out) / "plots"), work=a.work, seeds=a.seeds)
    print(f"\nclosure over {m['n_seeds']} seeds ({m['n_bins']} (seed, bin, estimator) cells with n >= {m['min_bin_n']}), "
          f"nominal {m['confidence']:.0%}; with the truth of each seed's bins over the other {m['n_seeds'] - 1} draws a calibrated "
          f"interval reads {m['expected_binned_coverage']:.3f}:")
    print(f"{'estimator@operating point':>28}  coverage  95% interval     cells  in 0.90-0.99")
    for k, c in m["coverage"].items():
        print(f"{k:>28}  {c['coverage']:8.3f}  [{c['lo']:.3f}, {c['hi']:.3f}]  {c['n']:6d}  {'yes' if 0.90 <= c['coverage'] <= 0.99 else 'NO'}")
    print("held-out validation (fraction of held-out bins inside the predictive band) per seed:")
    for s, v in m["validation"].items():
        print(f"  seed {s}: " + ", ".join(f"{k} {x:.2f}" for k, x in v.items() if x is not None))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
