"""How well a trained finder fits the stamps it was trained on, at the evaluation's thresholds.

    python benchmarks/train_fit.py [--arch small_cnn] [--split train] [--var arc_snr theta_e_over_psf]

Scores every stamp of ``--split`` (default train) with the arch's best checkpoint in
data/models/<arch> (the one infer scores with), and prints, at each threshold of
metrics/completeness/<arch>.json (set on the evaluation split's controls), the false-positive
rate of the split's controls and the completeness of its injections in the bins of
``completeness.bins`` beside the evaluation split's own (from data/scores/<arch>.parquet).

Reading it: bright arcs found no more often in the training split than in the test split mean
the finder underfits what it is shown (too little capacity or training for the task), not that
it fails to generalise; found far more often in training, it has learned those stamps and not
lenses. The training split's injections follow ``simulate.physical_train``, so its bins hold
other numbers of stamps than the test split's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def threshold_scores(metrics: dict, source: str) -> dict[str, float]:
    """name -> score of each operating threshold (pass: score > it, the pipeline's one rule)."""
    from dhs.evaluation.scores import sigmoid

    out = {}
    for t in metrics.get("thresholds") or []:
        if "score" in t:
            out[t["name"]] = float(t["score"])
        elif "logit" in t:
            out[t["name"]] = float(sigmoid([t["logit"]])[0])
    if not out:
        raise SystemExit(f"{source}: no thresholds (run `dvc repro completeness@<arch>` first)")
    return out


def binned(table: pd.DataFrame, threshold: float, var: str, edges) -> pd.DataFrame:
    """Injections of a score table per bin of ``var`` with the completeness stage's own counting
    (``dhs.measurement.counts``: [lo, hi) bins, the last closed; found = score > threshold):
    bin, n, found and their fraction."""
    from dhs.measurement.counts import BinSpec, Criterion, region_bin_counts_pandas, completeness_intervals

    inj = table[table["label"] == 1]
    counts = region_bin_counts_pandas(inj, [BinSpec(var, var, tuple(edges))], [Criterion("pass", "score", threshold)])
    s = completeness_intervals(counts, {var: edges}, [Criterion("pass", "score", threshold)], n_boot=0,
                  regions=inj["region_id"].unique())
    s = s[s["subset"] == "all"]
    last = len(s) - 1
    return pd.DataFrame({"bin": [f"[{lo:g}, {hi:g}{']' if i == last else ')'}" for i, (lo, hi) in enumerate(zip(s["bin_lo"], s["bin_hi"]))],
                         "n": s["n"].to_numpy(), "found": s["k"].to_numpy(), "completeness": s["completeness"].to_numpy()})


def control_fpr(table: pd.DataFrame, threshold: float) -> tuple[int, int]:
    """(controls above the threshold, controls) of a score table."""
    ctl = table["label"].to_numpy() == 0
    return int((table["score"].to_numpy(float)[ctl] > threshold).sum()), int(ctl.sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--split", default="train", help="the split scored here (default train)")
    ap.add_argument("--var", nargs="+", default=["arc_snr", "theta_e_over_psf"], help="binning variables of completeness.bins")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--models", default=str(REPO / "data" / "models"))
    ap.add_argument("--cache", default=str(REPO / "data" / "cache"))
    ap.add_argument("--metrics", default=None, help="default metrics/completeness/<arch>.json")
    ap.add_argument("--scores", default=None, help="default data/scores/<arch>.parquet")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from dhs.models.checkpoint import load_trained
    from dhs.models.inference import score_split
    from dhs.evaluation.scores import score_table
    from dhs.params import load as load_params
    from dhs.imaging.cache import open_split

    params = load_params(args.params)
    bins = params["completeness"]["bins"]
    unknown = [v for v in args.var if v not in bins]
    if unknown:
        raise SystemExit(f"{args.params}: completeness.bins has no {unknown} (it has {sorted(bins)})")
    metrics_path = Path(args.metrics or REPO / "metrics" / "completeness" / f"{args.arch}.json")
    scores_path = Path(args.scores or REPO / "data" / "scores" / f"{args.arch}.parquet")
    for p in (metrics_path, scores_path):
        if not p.is_file():
            raise SystemExit(f"{p} not found: run `dvc repro completeness@{args.arch}` first")
    metrics = json.loads(metrics_path.read_text())
    thresholds = threshold_scores(metrics, str(metrics_path))
    eval_split = metrics.get("eval_split", "test")

    split = open_split(args.cache, args.split)
    tm = load_trained(Path(args.models) / args.arch, args.device)
    own = score_table(args.split, split.stamp_meta(), score_split(tm, split, progress=True))

    sc = pd.read_parquet(scores_path)
    sc = sc[sc["split"] == eval_split].reset_index(drop=True)
    missing = [v for v in args.var if v not in sc.columns]
    if missing:
        raise SystemExit(f"{scores_path}: no column {missing} to bin the {eval_split} split on")

    print(f"{args.arch}: {args.split} split ({len(own)} stamps) scored with {Path(args.models) / args.arch}, "
          f"against the {eval_split} split's scores ({scores_path}); thresholds from {metrics_path} "
          f"(pass: score > threshold)")
    for name, thr in thresholds.items():
        k, n = control_fpr(own, thr)
        ke, ne = control_fpr(sc, thr)
        print(f"\n{name} (score {thr:.6f}): control FPR {args.split} {k}/{n} = {k / max(n, 1):.4f}, "
              f"{eval_split} {ke}/{ne} = {ke / max(ne, 1):.4f}")
        for var in args.var:
            a = binned(own, thr, var, bins[var])
            b = binned(sc, thr, var, bins[var])
            print(f"  {var:<20} {args.split + ' found/n':>18} {'':>7} {eval_split + ' found/n':>16} {'':>7}")
            for (_, ra), (_, rb) in zip(a.iterrows(), b.iterrows()):
                print(f"  {ra['bin']:<20} {ra['found']:>8}/{ra['n']:<9} {ra['completeness']:>7.3f} "
                      f"{rb['found']:>7}/{rb['n']:<8} {rb['completeness']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
