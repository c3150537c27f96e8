"""Tables across DVC experiments, generated from `dvc exp show --json`, never typed in.

    python -m dhs.experiments [--out plots/experiments] [--all-commits]

For the workspace, the baseline commit and every experiment DVC knows, it reads
``params.yaml`` and the completeness headline files as DVC recorded them, and each one's detail
file (``metrics/completeness/{arch}.json``, git-tracked, so read from the same revision), and writes one
row per (experiment, arch, threshold): completeness overall and at theta_E/PSF >= 1, with Wilson
and region-bootstrap intervals, AUROC, n_controls, and the params that differ from the
baseline commit (the ablation's "change"). Output: ``ablations.csv`` and ``ablations.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dhs import atomic, headline


class ExperimentsError(RuntimeError):
    pass


def exp_show(repo: str | Path = ".", all_commits: bool = False) -> list[dict]:
    cmd = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    r = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if r.returncode != 0:
        raise ExperimentsError(f"`{' '.join(cmd)}` failed in {repo}: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout or "[]")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def runs(shown: list[dict]) -> Iterator[dict]:
    """(label, rev, params, metrics) for the workspace, each commit and each experiment."""
    for entry in shown:
        yield _run(entry, "workspace" if entry.get("rev") == "workspace" else f"commit {str(entry.get('rev'))[:7]}")
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                yield _run(rev, rev.get("name") or exp.get("name") or str(rev.get("rev"))[:7])


def _run(entry: dict, label: str) -> dict:
    data = entry.get("data") or {}
    params = _flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
    metrics = {path: (m or {}).get("data", {}) for path, m in (data.get("metrics") or {}).items()}
    return {"label": label, "rev": entry.get("rev"), "params": params, "metrics": metrics, "error": entry.get("error")}


def changed_params(params: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    diffs = [f"{k}={params[k]}" for k in sorted(params) if k in base and params[k] != base[k]]
    diffs += [f"{k}={params[k]}" for k in sorted(params) if k not in base]
    return "; ".join(diffs) or "(baseline)"


def detail_at(repo: str | Path, rev: str | None, path: str) -> dict | None:
    """The detail file beside a headline metric, as it is in the workspace or at ``rev``."""
    if rev in (None, "workspace"):
        f = Path(repo) / path
        return json.loads(f.read_text()) if f.is_file() else None
    r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None


def ablation_rows(shown: list[dict], repo: str | Path = ".") -> pd.DataFrame:
    all_runs = list(runs(shown))
    base = next((r for r in all_runs if r["label"].startswith("commit")), all_runs[0] if all_runs else None)
    if base is None:
        raise ExperimentsError("dvc exp show returned nothing: is this a DVC repository with a commit?")
    rows = []
    for r in all_runs:
        for path in sorted(r["metrics"]):
            if not (path.startswith("metrics/completeness/") and path.endswith(headline.SUFFIX)):
                continue
            arch = Path(path).name[: -len(headline.SUFFIX)]
            m = detail_at(repo, r["rev"], path[: -len(headline.SUFFIX)] + ".json")
            if not m or "headline" not in m:
                continue
            for name, h in m["headline"].items():
                t = (m.get("threshold_by_name") or {}).get(name, {})
                row = {"experiment": r["label"], "rev": str(r["rev"])[:10], "arch": arch, "threshold": name,
                       "n_controls": t.get("n_controls"), "low_count": t.get("low_count"), "auroc": m.get("auroc"),
                       "change": changed_params(r["params"], base["params"])}
                for group, tag in (("overall", "all"), ("theta_e_over_psf_ge_1", "theta_psf_ge_1")):
                    c = (h.get(group) or {}).get("all") or {}
                    row[f"completeness_{tag}"] = c.get("completeness")
                    row[f"wilson_{tag}"] = _interval(c, "wilson")
                    row[f"bootstrap_{tag}"] = _interval(c, "boot")
                rows.append(row)
    return pd.DataFrame(rows)


def _interval(c: Mapping[str, Any], kind: str) -> str | None:
    lo, hi = c.get(f"{kind}_lo"), c.get(f"{kind}_hi")
    return None if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"


def to_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "No completeness metrics found in any experiment: run `dvc exp run` first.\n"
    cols = ["experiment", "arch", "threshold", "n_controls", "completeness_all", "wilson_all", "bootstrap_all",
            "completeness_theta_psf_ge_1", "wilson_theta_psf_ge_1", "auroc", "change"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v)) for v in r]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--out", default="plots/experiments")
    ap.add_argument("--all-commits", action="store_true")
    args = ap.parse_args(argv)
    try:
        df = ablation_rows(exp_show(args.repo, args.all_commits), args.repo)
    except ExperimentsError as exc:
        print(f"experiments: FAILED: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic.write_text(out / "ablations.csv", df.to_csv(index=False))
    md = to_markdown(df)
    atomic.write_text(out / "ablations.md", md)
    print(md)
    print(f"experiments: {df['experiment'].nunique() if len(df) else 0} run(s) -> {out}/ablations.csv, ablations.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
