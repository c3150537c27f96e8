"""Do two runs of the pipeline agree, byte for byte or within their intervals?

    python benchmarks/reproducibility_check.py REFERENCE CANDIDATE

REFERENCE and CANDIDATE are project roots (or copies holding their ``metrics/`` and ``plots/``);
REFERENCE may also be ``git:<rev>``, the outputs committed at that revision of CANDIDATE's
repository (``git:HEAD`` after a fresh ``make repro`` on another machine compares it with the
committed run).

What it reports:
- files: how many of the outputs both runs have (``metrics/**/*.json``, ``plots/**/*.csv``) are
  byte-identical: all of them on the same machine with the locked library versions;
- tolerance: for every arch, operating point and subset in the completeness headline files,
  whether each run's completeness lies inside the other's Wilson 95 % interval, and whether the
  AUROCs differ by less than 1.96 x the Hanley-McNeil standard error of the difference. That is
  the claim for a run on another CPU or a GPU, where float rounding differs, training follows
  another trajectory and every metric moves, but by less than its statistical uncertainty.

Exit status 0 when every comparison is within tolerance, 1 when any is not (each is listed),
2 when the inputs cannot be read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

HEADLINE = "metrics/completeness/{arch}.headline.json"


class Outputs:
    """The files of one run: a directory, or a git revision of a repository."""

    def __init__(self, spec: str, repo: Path):
        self.spec = spec
        if spec.startswith("git:"):
            self.rev, self.root = spec[4:], repo
            r = subprocess.run(["git", "ls-tree", "-r", "--name-only", self.rev, "--", "metrics", "plots"], cwd=repo,
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"reproducibility_check: git ls-tree {self.rev} in {repo}: {r.stderr.strip()}")
            names = r.stdout.split()
        else:
            self.rev, self.root = None, Path(spec)
            if not (self.root / "metrics").is_dir():
                raise SystemExit(f"reproducibility_check: {self.root}/metrics not found (expected a project root)")
            names = [p.relative_to(self.root).as_posix() for d in ("metrics", "plots") if (self.root / d).is_dir()
                     for p in (self.root / d).rglob("*") if p.is_file()]
        self.files = sorted(n for n in names if (n.startswith("metrics/") and n.endswith(".json"))
                            or (n.startswith("plots/") and n.endswith(".csv")))

    def read(self, name: str) -> bytes:
        if self.rev is None:
            return (self.root / name).read_bytes()
        r = subprocess.run(["git", "show", f"{self.rev}:{name}"], cwd=self.root, capture_output=True)
        if r.returncode != 0:
            raise FileNotFoundError(name)
        return r.stdout

    def json(self, name: str) -> dict | None:
        try:
            return json.loads(self.read(name))
        except (FileNotFoundError, OSError):
            return None


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    return math.sqrt(max(auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc), 0.0) / (n_pos * n_neg))


def compare(ref: Outputs, cand: Outputs) -> dict:
    shared = sorted(set(ref.files) & set(cand.files))
    same = [n for n in shared if hashlib.sha256(ref.read(n)).digest() == hashlib.sha256(cand.read(n)).digest()]
    archs = sorted(n.split("/")[-1][: -len(".headline.json")] for n in shared
                   if n.startswith("metrics/completeness/") and n.endswith(".headline.json"))
    rows = []
    for arch in archs:
        a, b = ref.json(HEADLINE.format(arch=arch)), cand.json(HEADLINE.format(arch=arch))
        if a.get("auroc") is not None and b.get("auroc") is not None:
            se = math.hypot(hanley_mcneil_se(a["auroc"], a["n_injections"], a["n_controls"]),
                            hanley_mcneil_se(b["auroc"], b["n_injections"], b["n_controls"]))
            diff = abs(a["auroc"] - b["auroc"])
            rows.append({"arch": arch, "what": "auroc", "reference": a["auroc"], "candidate": b["auroc"],
                         "tolerance": f"|diff| {diff:.4f} <= 1.96 x SE {1.96 * se:.4f}", "within": diff <= 1.96 * se})
        for name in sorted(k for k in a if k.startswith("fpr_") and k in b):
            for subset in ("all", "clean"):
                x, y = a[name], b[name]
                if x.get(subset) is None or y.get(subset) is None:
                    continue
                ok = (x[f"{subset}_lo"] <= y[subset] <= x[f"{subset}_hi"]) and (y[f"{subset}_lo"] <= x[subset] <= y[f"{subset}_hi"])
                rows.append({"arch": arch, "what": f"{name} {subset}", "reference": x[subset], "candidate": y[subset],
                             "tolerance": f"each inside the other's Wilson 95% [{x[f'{subset}_lo']:.4f}, {x[f'{subset}_hi']:.4f}]",
                             "within": ok})
    return {"files_compared": len(shared), "files_identical": len(same), "only_reference": sorted(set(ref.files) - set(cand.files)),
            "only_candidate": sorted(set(cand.files) - set(ref.files)), "comparisons": rows,
            "within_tolerance": all(r["within"] for r in rows) and bool(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference", help="project root, or git:<rev> of CANDIDATE's repository")
    ap.add_argument("candidate", help="project root")
    ap.add_argument("--json", dest="json_out", help="also write the result here")
    args = ap.parse_args(argv)
    cand = Outputs(args.candidate, Path(args.candidate))
    ref = Outputs(args.reference, Path(args.candidate))
    res = compare(ref, cand)
    if not res["comparisons"]:
        print("reproducibility_check: no completeness headline file in both runs (metrics/completeness/*.headline.json)",
              file=sys.stderr)
        return 2
    print(f"files: {res['files_identical']}/{res['files_compared']} byte-identical "
          f"({len(res['only_reference'])} only in the reference, {len(res['only_candidate'])} only in the candidate)")
    print(f"{'arch':<12} {'metric':<18} {'reference':>10} {'candidate':>10}  within  tolerance")
    for r in res["comparisons"]:
        print(f"{r['arch']:<12} {r['what']:<18} {r['reference']:>10.4f} {r['candidate']:>10.4f}  {'yes' if r['within'] else 'NO ':<6}  "
              f"{r['tolerance']}")
    verdict = "within tolerance" if res["within_tolerance"] else "OUTSIDE tolerance"
    print(f"reproducibility_check: {sum(r['within'] for r in res['comparisons'])}/{len(res['comparisons'])} comparisons "
          f"within their intervals: {verdict}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res, indent=1))
    return 0 if res["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
