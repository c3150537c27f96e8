"""Evaluating a selection-function file: load time in a fresh Python that imports numpy only, and
points per second of ``SelectionFunction.__call__`` (p, lo, hi) at 1e6 points.

    python benchmarks/bench_selection.py [--model data/selection/small_cnn.json] [--points 1000000] [--repeat 3]

Without ``--model`` (or when the file is absent) a model is fitted here on synthetic injections of
the analytic finder (dhs.selection.closure) so the benchmark runs on a fresh checkout. The fresh
interpreter blocks imports of torch, pandas, scipy, pyspark and dvc, so the timing is that of the
numpy-only path a colleague's script takes. The peer is ``np.interp`` over the same points for the
seven inputs (the least any evaluation must do): the ratio says what the band costs on top.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent('''
    import sys, time, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("torch", "pandas", "scipy", "pyspark", "dvc", "sklearn", "matplotlib"):
                raise ImportError(f"blocked: {name}")
    sys.meta_path.insert(0, Block())
    t0 = time.perf_counter()
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import importlib.util
    spec = importlib.util.spec_from_file_location("function", sys.argv[1] + "/dhs/selection/function.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    sf = m.SelectionFunction.load(sys.argv[2])
    t_load = time.perf_counter() - t0
    n, rep = int(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(0)
    lo = {k: v[0] for k, v in sf.input_range.items()}; hi = {k: v[1] for k, v in sf.input_range.items()}
    parts = {k: [] for k in lo}; got = 0
    while got < n:   # points inside the calibrated range (uniform in the input box, kept where every term is in range)
        c = {k: rng.uniform(lo[k], hi[k], 2 * n) for k in lo}
        ok = sf.inside(**c)
        for k in lo:
            parts[k].append(c[k][ok])
        got += int(ok.sum())
    x = {k: np.concatenate(v)[:n] for k, v in parts.items()}
    best = best_peer = float("inf")
    for _ in range(rep):
        t = time.perf_counter(); p, l, h = sf(**x); best = min(best, time.perf_counter() - t)
        t = time.perf_counter()
        for k, v in x.items():
            np.interp(v, [lo[k], hi[k]], [0.0, 1.0])
        best_peer = min(best_peer, time.perf_counter() - t)
    print(f"{t_load:.4f} {best:.4f} {best_peer:.4f} {int(np.isfinite(p).sum())} {sorted(k for k in sys.modules if k.split('.')[0] in ('torch','pandas','scipy','pyspark','dvc'))}")
''')


def synthetic_model(path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from dhs.params import as_params
    from dhs.selection.closure import analytic_selection_file, population_metadata

    analytic_selection_file(path, population_metadata(as_params(REPO / "params.yaml")["simulate"], n_stamps=8000, n_regions=40))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "data/selection/small_cnn.json"))
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    model = Path(a.model)
    if not model.exists():
        model = Path(tempfile.mkdtemp()) / "synthetic.json"
        print(f"{a.model} absent: fitting a model on the analytic finder's injections -> {model}")
        synthetic_model(model)
    comps = len(json.loads(model.read_text())["operating_points"][0]["band"]["scale"])
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), str(model), str(a.points), str(a.repeat)],
                         capture_output=True, text=True, check=True).stdout.split(maxsplit=4)
    t_load, t_eval, t_peer, n_ok = float(out[0]), float(out[1]), float(out[2]), int(out[3])
    print(f"model {model} ({comps} band components)")
    print(f"fresh interpreter, numpy only (imports of torch/pandas/scipy/pyspark/dvc blocked; loaded heavy modules: {out[4].strip()}):")
    print(f"  import numpy + load the file: {t_load:.3f} s")
    print(f"  evaluate {a.points:,} points (p, lo, hi): {t_eval:.3f} s = {a.points / t_eval / 1e6:.2f} M points/s "
          f"({n_ok:,} in range)")
    print(f"  peer, np.interp of the 7 inputs: {t_peer:.3f} s; ratio {t_eval / t_peer:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
