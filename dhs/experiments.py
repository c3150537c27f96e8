"""Experiments: checked runs of `dvc exp run`, and tables across them from `dvc exp show --json`.

    python -m dhs.experiments run [--queue | --temp] [-n NAME] [--check] -S key=value [-S ...]
    python -m dhs.experiments [table] [--out plots/experiments] [--all-commits]

``run`` applies the overrides to a copy of ``params.yaml`` with DVC's own override writer (Hydra's
grammar, as `dvc exp run -S` does), checks the result with the params schema (every section,
its rules and the rules across sections: ``dhs.params.Params``) and refuses a key that is not
in the file with the closest one it has ("did you mean"), before anything is queued or written;
only then does it call ``dvc exp run --queue`` (the default) or ``--temp`` with the same
overrides. Both run the experiment in a copy of the repository: the workspace, ``params.yaml``
included, is left as it was. A refusal exits 2 with one line naming the key.

The table (the default): for the workspace, the baseline commit and every experiment DVC knows,
it reads ``params.yaml`` and the completeness headline files as DVC recorded them, and each one's
detail file (``metrics/completeness/{arch}.json``, git-tracked, so read from the same revision),
and writes one row per (experiment, arch, threshold): completeness overall and at theta_E/PSF >= 1,
with Wilson and region-bootstrap intervals, AUROC, n_controls, and the params that differ from the
baseline commit (the ablation's "change"). Output: ``ablations.csv`` and ``ablations.md``. Failed,
queued and running experiments are left out and named: DVC shows a failed queued experiment with
the metrics files of the commit it started from (the baseline's, git-tracked), not results of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dhs import atomic, headline
from dhs.errors import StageError


class ExperimentsError(StageError, RuntimeError):
    pass


def exp_show(repo: str | Path = ".", all_commits: bool = False) -> list[dict]:
    cmd = ["dvc", "exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    r = subprocess.run([sys.executable, "-m", *cmd], cwd=repo, capture_output=True, text=True)   # this environment's DVC
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
    """(label, rev, params, metrics, state) for the workspace, each commit and each experiment;
    ``state`` is DVC's executor state of a queued or temporary experiment (queued, running,
    success, failed), None where DVC names none."""
    for entry in shown:
        yield _run(entry, "workspace" if entry.get("rev") == "workspace" else f"commit {str(entry.get('rev'))[:7]}")
        for exp in entry.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            for rev in exp.get("revs") or []:
                yield _run(rev, rev.get("name") or exp.get("name") or str(rev.get("rev"))[:7], state)


def _run(entry: dict, label: str, state: str | None = None) -> dict:
    data = entry.get("data") or {}
    params = _flatten((data.get("params") or {}).get("params.yaml", {}).get("data", {}))
    metrics = {path: (m or {}).get("data", {}) for path, m in (data.get("metrics") or {}).items()}
    return {"label": label, "rev": entry.get("rev"), "params": params, "metrics": metrics, "error": entry.get("error"),
            "state": state}


UNFINISHED = ("queued", "running", "failed")


def unfinished(run: Mapping[str, Any]) -> str | None:
    """Why a run has no results of its own (failed, queued, running), or None. A failed queued
    experiment is listed by DVC with its start commit's metrics files (git-tracked, so the
    baseline's): its verdict and ECE columns in `dvc exp show` are not its own."""
    if run.get("state") in UNFINISHED:
        return str(run["state"])
    return "failed" if run.get("error") else None


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
    """One row per (finished run, finder, operating point), from the summary DVC recorded for the
    run (``summary.json``: its finders and gate verdicts) and the completeness detail file at the
    run's revision."""
    all_runs = list(runs(shown))
    base = next((r for r in all_runs if r["label"].startswith("commit")), all_runs[0] if all_runs else None)
    if base is None:
        raise ExperimentsError("dvc exp show returned nothing: is this a DVC repository with a commit?")
    rows = []
    for r in all_runs:
        if unfinished(r):
            continue
        summary = r["metrics"].get(headline.SUMMARY) or {}
        for arch in sorted(k for k, v in summary.items() if k != "data" and isinstance(v, dict)):
            m = detail_at(repo, r["rev"], f"metrics/completeness/{arch}.json")
            if not m or "headline" not in m:
                continue
            for name, h in m["headline"].items():
                t = (m.get("threshold_by_name") or {}).get(name, {})
                row = {"experiment": r["label"], "rev": str(r["rev"])[:10], "arch": arch, "threshold": name,
                       "n_controls": t.get("n_controls"), "n_controls_above": t.get("n_controls_above"),
                       "low_count": bool(t.get("low_count")), "auroc": m.get("auroc"), "gates": summary[arch].get("gates"),
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


def _cell(v: Any) -> str:
    text = f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
    return text.replace("|", "\\|")


def to_markdown(df: pd.DataFrame) -> str:
    """The runs and what each changed (once per run), then the numbers: one row per run, finder and
    operating point, the threshold's controls (low count: FPR x controls < the minimum, a handful of
    controls set it) and the gate verdict beside the completeness."""
    if df.empty:
        return "No completeness metrics found in any experiment: run `dvc exp run` first.\n"
    runs_seen = df.drop_duplicates("experiment")[["experiment", "rev", "change"]]
    lines = ["| run | revision | what it changes |", "|---|---|---|"]
    lines += [f"| {_cell(r.experiment)} | {_cell(r.rev)} | {_cell(r.change)} |" for r in runs_seen.itertuples()]
    cols = ["experiment", "arch", "threshold", "n_controls_above", "n_controls", "low_count", "completeness_all", "bootstrap_all",
            "wilson_all", "completeness_theta_psf_ge_1", "wilson_theta_psf_ge_1", "auroc", "gates"]
    heads = ["run", "finder", "threshold", "controls above", "controls", "low count", "completeness", "region bootstrap 95 %",
             "Wilson 95 %", "completeness theta_E/PSF >= 1", "Wilson 95 %", "AUROC", "gates"]
    lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for _, r in df[cols].iterrows():
        cells = [("yes" if v else "no") if k == "low_count" else _cell(v) for k, v in r.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m dhs.experiments [table]", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--out", default="plots/experiments")
    ap.add_argument("--all-commits", action="store_true")
    args = ap.parse_args(argv)
    try:
        shown = exp_show(args.repo, args.all_commits)
        df = ablation_rows(shown, args.repo)
    except ExperimentsError as exc:
        print(f"experiments: FAILED: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic.write_text(out / "ablations.csv", df.to_csv(index=False))
    md = to_markdown(df)
    atomic.write_text(out / "ablations.md", md)
    print(md)
    print(f"experiments: {df['experiment'].nunique() if len(df) else 0} run(s) -> {out}/ablations.csv, ablations.md")
    left = [f"{r['label']} ({why})" for r in runs(shown) if (why := unfinished(r))]
    if left:
        print(f"experiments: left out, no results of their own: {', '.join(left)} (`dvc queue logs <name>` says why one "
              f"failed; `dvc exp show --hide-failed --hide-queued` hides them there)")
    return 0


# --------------------------------------------------------------------------- checked runs

PARAMS_FILE = "params.yaml"


class Refused(ExperimentsError):
    """An override the checked runner refuses, before anything is queued or written (one line)."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _parse(override: str):
    from dvc.utils.hydra import to_hydra_overrides
    from hydra.errors import OverrideParseException

    try:
        return to_hydra_overrides([override])[0]
    except OverrideParseException as exc:
        raise Refused(f"-S {override!r} is not an override DVC can read ({_one_line(str(exc).splitlines()[0])}); "
                      f"write key=value, +key=value, ++key=value or ~key") from None


def _schema_below(node) -> tuple[set[str] | None, Any]:
    """The names the schema allows below ``node`` (None: free names) and how to step down to one."""
    from dhs.params.fields import Map, Section
    from dhs.params.schema import SECTIONS

    if node is SECTIONS:
        return set(SECTIONS), SECTIONS.get
    if isinstance(node, Section):
        return set(node.fields), node.fields.get
    if isinstance(node, Map):
        return (set(node.key.choices) if node.closed else None), (lambda _k: node.value)
    return None, (lambda _k: None)


def check_key(raw: Mapping[str, Any], override) -> None:
    """A key that ``-S key=value`` or ``~key`` names must be in params.yaml, as DVC requires.
    Refused with the closest name the schema or the file has there ("did you mean"), or, for a
    key of the schema that the file leaves at its default, with the ``+key=value`` that adds it.
    Keys added with ``+`` / ``++`` are left to the schema, which judges the edited file."""
    from dhs.params.fields import did_you_mean
    from dhs.params.schema import SECTIONS

    if override.is_add() or override.is_force_add():
        return
    parts = override.key_or_group.split(".")
    here: Any = raw
    node: Any = SECTIONS
    for i, part in enumerate(parts):
        key, parent = ".".join(parts[: i + 1]), ".".join(parts[:i])
        if not isinstance(here, Mapping):
            raise Refused(f"-S {override.input_line}: {parent} is a value in {PARAMS_FILE}, not a mapping with a key {part!r}")
        allowed, down = _schema_below(node)
        if part not in here:
            if allowed is not None and part not in allowed:
                names = sorted(set(map(str, here)) | allowed)
                close = did_you_mean([part], names)   # " (did you mean 'epochs'?)"
                hint = close.replace(" (did you mean '", f" (did you mean '{parent + '.' if parent else ''}", 1)
                where = f"'{parent}' has" if parent else f"{PARAMS_FILE}'s sections are"
                raise Refused(f"-S {override.input_line}: unknown key '{key}'{hint}; {where} {names}")
            if override.is_delete():
                raise Refused(f"-S {override.input_line}: '{key}' is not in {PARAMS_FILE}: nothing to remove")
            default = " (it takes its default)" if allowed is not None else ""
            raise Refused(f"-S {override.input_line}: '{key}' is not in {PARAMS_FILE}{default}; add it with "
                          f"-S '+{override.input_line}'")
        here, node = here[part], down(part)


def apply_overrides(params_file: str | Path, overrides: Sequence[str]) -> dict[str, Any]:
    """``params_file`` with ``overrides`` applied by DVC's own writer (what `dvc exp run -S` does
    to params.yaml), on a copy: the mapping a stage of that experiment would read."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as dvc_apply

    from dhs.params import load_params

    with tempfile.TemporaryDirectory(prefix="dhs-exp-") as tmp:
        copy = Path(tmp) / PARAMS_FILE
        shutil.copyfile(params_file, copy)
        try:
            dvc_apply(str(copy), list(overrides))
        except InvalidArgumentError as exc:
            why = _one_line(str(exc.__cause__ or exc).split("\n")[0])
            raise Refused(f"-S {' -S '.join(overrides)}: DVC cannot apply it ({why})") from None
        return load_params(copy)


def check_overrides(overrides: Sequence[str], repo: str | Path = ".", queue: bool = True) -> list[list[str]]:
    """Every experiment ``dvc exp run -S overrides`` would make (one, or one per combination of a
    sweep such as ``train.lr=1e-3,3e-3``, which DVC takes with --queue only), checked by the
    params schema; returns their overrides. Raises ``Refused`` with one line naming the key."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps

    from dhs.params import Params, ParamsError, load_params

    by_file = to_path_overrides(overrides)
    others = sorted(set(by_file) - {PARAMS_FILE})
    if others:
        raise Refused(f"overrides of {others}: this project's params are {PARAMS_FILE} (write -S section.key=value)")
    params_file = Path(repo) / PARAMS_FILE
    try:
        raw = load_params(params_file)
        Params(raw, PARAMS_FILE)
    except ParamsError as exc:
        raise Refused(f"{_one_line(exc)} (in the workspace's {PARAMS_FILE}, before any override)") from None
    listed = by_file.get(PARAMS_FILE, [])
    parsed = [_parse(o) for o in listed]
    for o in parsed:
        check_key(raw, o)
    sweep = any(o.is_sweep_override() for o in parsed)
    if sweep and not queue:
        raise Refused(f"-S {' -S '.join(o.input_line for o in parsed if o.is_sweep_override())}: a sweep runs with --queue "
                      f"only (one queued experiment per combination)")
    combos = [c[PARAMS_FILE] for c in get_hydra_sweeps({PARAMS_FILE: listed})] if sweep else [list(listed)]
    for combo in combos:
        edited = apply_overrides(params_file, combo) if combo else raw
        try:
            Params(edited, PARAMS_FILE)
        except ParamsError as exc:
            raise Refused(f"{_one_line(exc)} (with -S {' -S '.join(combo)})") from None
    return combos


def run_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m dhs.experiments run",
        description="Check the overrides against the params schema, then `dvc exp run --queue` (default) or --temp with "
                    "them. Both run in a copy of the repository: params.yaml and the outputs in the workspace are left "
                    "as they are. A refusal exits 2 with one line naming the key; nothing is queued or written.")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--queue", dest="temp", action="store_false",
                      help="queue the experiment (default); `dvc queue start -j 1` runs the queue")
    mode.add_argument("--temp", dest="temp", action="store_true", help="run it now in a temporary copy")
    ap.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="OVERRIDE",
                    help="as for dvc exp run: section.key=value, +key=value, ++key=value, ~key; a,b sweeps (--queue)")
    ap.add_argument("-n", "--name", help="the experiment's name (a sweep's: NAME-1, NAME-2, ...)")
    ap.add_argument("--check", action="store_true", help="check only: call no DVC command")
    ap.add_argument("--repo", default=".", help="the repository (default: here)")
    ap.set_defaults(temp=False)
    args = ap.parse_args(argv)
    try:
        combos = check_overrides(args.overrides, args.repo, queue=not args.temp)
    except Refused as exc:
        print(f"experiments: refused, nothing queued or run: {exc}", file=sys.stderr)
        return 2
    what = f"{len(combos)} experiments (a sweep)" if len(combos) > 1 else "1 experiment"
    if args.check:
        print(f"experiments: checked, {what}: {PARAMS_FILE} with the overrides is valid; nothing queued or run")
        return 0
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", PARAMS_FILE], cwd=args.repo).returncode
    if dirty == 1:
        print(f"experiments: note: {PARAMS_FILE} differs from HEAD (`git diff {PARAMS_FILE}`); the experiment starts from "
              f"the file as it is in the workspace", file=sys.stderr)
    cmd = ["dvc", "exp", "run", "--temp" if args.temp else "--queue", *(["-n", args.name] if args.name else []),
           *(a for o in args.overrides for a in ("-S", o))]
    print(f"experiments: checked, {what}; {' '.join(cmd)}", flush=True)
    # this interpreter's DVC, and its environment's `python` for the stages (as `make repro` sets PATH)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    rc = subprocess.run([sys.executable, "-m", *cmd], cwd=args.repo, env=env).returncode
    if rc != 0:
        print(f"experiments: FAILED: `{' '.join(cmd)}` exited {rc} (the message above); "
              + ("DVC records no experiment for a failed --temp run; the workspace is as it was" if args.temp else
                 "nothing was queued"), file=sys.stderr)
    elif not args.temp:
        print("experiments: queued. `dvc queue start -j 1` runs the queue; `dvc queue status` and `dvc queue logs <name>` "
              "follow it. A failed one shows State 'Failed' in `dvc exp show`, with the metrics of the commit it started "
              "from, not its own (`dvc exp show --hide-failed` hides it; `dvc exp remove <name>` drops it)")
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return run_main(argv[1:])
    return table_main(argv[1:] if argv[:1] == ["table"] else argv)


if __name__ == "__main__":
    sys.exit(main())
