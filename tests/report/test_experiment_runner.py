"""The checked way to run experiments (`python -m dhs.experiments run`) and what DVC does without it.

- Overrides are applied as `dvc exp run -S` applies them (DVC's own writer, on a copy) and the
  result checked by the params schema, its rules and the rules across sections; an unknown key is
  refused with the closest one ("did you mean"), exit 2 and one line, before anything is queued.
- A valid override is queued (default) or run now (--temp) by real DVC, and params.yaml in the
  workspace is byte-identical afterwards.
- Failed and queued experiments are left out of the ablation table: DVC lists a failed queued
  experiment with its start commit's (git-tracked) metrics files, the baseline's.
- A workspace `dvc exp run` refused by the lock has already rewritten params.yaml, and a Ctrl-C
  leaves params.yaml rewritten and the stage's tracked outputs deleted; the commands of
  docs/dvc-workflows.md ("Running experiments safely") bring the workspace back.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dhs import experiments
from dhs.experiments import Refused, check_overrides
from dhs.params.fields import REQUIRED
from dhs.params.schema import SECTIONS
from tests.conftest import REPO

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}

# A one-stage pipeline on the project's params boundary: it checks the whole params.yaml as every
# stage does, refuses train.lr 0.123 as a stage would refuse something only it can judge, sleeps
# on train.lr 0.0042 (to be interrupted), and writes a git-tracked metric and a DVC-cached output.
PROBE = '''\
import json, os, sys, time
from pathlib import Path
from dhs.params import ParamsError, load
try:
    p = load()
except ParamsError as exc:
    sys.exit(f"probe: FAILED: {exc}")
lr = p["train"]["lr"]
if lr == 0.123:
    sys.exit("probe: FAILED: a refusal only the stage can make")
if lr == 0.0042:
    Path(os.environ["PROBE_MARK"]).write_text("started")
    time.sleep(120)
Path("data").mkdir(exist_ok=True)
Path("data/out.txt").write_text(f"lr {lr}\\n")
json.dump({"epochs": p["train"]["epochs"], "lr": lr}, open("metrics/probe.json", "w"))
'''
PROBE_DVC = """\
stages:
  probe:
    cmd: python probe.py
    deps: [probe.py]
    params: [train]
    outs: [data/out.txt]
    metrics:
      - metrics/probe.json:
          cache: false
"""


def run(cwd, *args, **kw):
    return subprocess.run(args, cwd=cwd, env={**ENV, **kw.pop("env", {})}, capture_output=True, text=True, **kw)


def git_repo(root: Path, dvc_yaml: str, probe: bool) -> Path:
    """A git + DVC repository holding the project's params.yaml byte for byte and ``dvc_yaml``;
    with ``probe``, the probe stage run and its outputs committed (as the project commits
    metrics/)."""
    root.mkdir()
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text(dvc_yaml)
    (root / "metrics").mkdir()
    (root / "metrics" / ".gitkeep").write_text("")
    cmds = [["git", "init", "-q"], ["dvc", "init", "-q"]]
    if probe:
        (root / "probe.py").write_text(PROBE)
        cmds.append(["dvc", "repro", "-q"])
    cmds += [["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline"]]
    for cmd in cmds:
        res = run(root, *cmd)
        assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    return root


def checked_run(root, *args):
    return run(root, sys.executable, "-m", "dhs.experiments", "run", *args)


def shown_experiments(root) -> dict[str, dict]:
    res = run(root, sys.executable, "-m", "dvc", "exp", "show", "--json")
    assert res.returncode == 0, res.stderr
    return {e.get("name") or e["revs"][0]["rev"][:7]: e for entry in json.loads(res.stdout)
            for e in entry.get("experiments") or []}


def unchanged(root) -> None:
    """params.yaml byte for byte as committed at the start, and nothing else changed either."""
    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=root, capture_output=True, check=True).stdout
    assert (root / "params.yaml").read_bytes() == committed
    status = run(root, "git", "status", "--porcelain")
    assert status.stdout == "", status.stdout


# --------------------------------------------------------------------------- the check, in process

@pytest.fixture
def params_dir(tmp_path):
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "params.orig").write_bytes((tmp_path / "params.yaml").read_bytes())
    return tmp_path


def untouched(params_dir) -> bool:
    return (params_dir / "params.yaml").read_bytes() == (params_dir / "params.orig").read_bytes()


def refused(overrides, root, queue=True) -> str:
    with pytest.raises(Refused) as info:
        check_overrides(overrides, root, queue=queue)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_keys_are_refused_with_the_closest_key(params_dir):
    msg = refused(["train.epoch=3"], params_dir)
    assert msg.startswith("-S train.epoch=3: unknown key 'train.epoch' (did you mean 'train.epochs'?); 'train' has [")
    # Hydra's own hint for it, +train.epoch=3, adds a key the schema refuses, naming the same one
    assert "unknown keys ['epoch'] in 'train' (did you mean 'epochs'?)" in refused(["+train.epoch=3"], params_dir)
    assert "unknown key 'trian' (did you mean 'train'?); params.yaml's sections are [" in refused(["trian.lr=0.1"], params_dir)
    assert "unknown key 'completeness.spark.mastr' (did you mean 'completeness.spark.master'?)" in refused(
        ["completeness.spark.mastr=yarn"], params_dir)
    assert "train.lr is a value in params.yaml, not a mapping" in refused(["train.lr.x=1"], params_dir)
    assert untouched(params_dir)


def test_values_are_checked_by_every_rule_of_the_schema(params_dir):
    assert "train.epochs must be an integer >= 1, got 0 (with -S train.epochs=0)" in refused(["train.epochs=0"], params_dir)
    # a rule across sections: the plotted FPR must be an operating FPR
    assert "completeness.plot_fpr must be one of evaluation.fprs [0.1, 0.001]" in refused(
        ["evaluation.fprs=[0.1,0.001]"], params_dir)
    # a section's own rule (calibration fitted and judged on one split)
    assert "calibration.fit_split and eval_split are both 'test'" in refused(["calibration.fit_split=test"], params_dir)
    assert "not an override DVC can read" in refused(["train.lr=[1,"], params_dir)
    assert "this project's params are params.yaml" in refused(["other.yaml:a.b=1"], params_dir)


def test_valid_overrides_parse_as_dvc_writes_them(params_dir):
    # YAML scalars and lists as Hydra reads them, on/off choices written back bare, ++ into a free mapping
    for overrides in (["evaluation.fprs=[0.01,0.001]", "completeness.plot_fpr=0.001"], ["calibration.survey_prevalence=1e-4"],
                      ["simulate.compile=off", "train.preload=on"], ["++completeness.spark.conf={spark.executor.memory: 8g}"],
                      ["~simulate.priors.theta_e_arcsec", "+simulate.priors.theta_e_arcsec={dist: grid, values: [0.3, 0.6]}"],
                      []):
        assert check_overrides(overrides, params_dir) == [overrides]
    assert untouched(params_dir)


def test_sweeps_are_checked_one_combination_at_a_time_and_only_queued(params_dir):
    # (DVC's sweep writes each value back in its own form: 1e-3 as 0.001)
    assert check_overrides(["train.epochs=2,3", "train.lr=1e-3"], params_dir) == [
        ["train.epochs=2", "train.lr=0.001"], ["train.epochs=3", "train.lr=0.001"]]
    assert "train.epochs must be an integer >= 1, got 0 (with -S train.epochs=0)" in refused(["train.epochs=2,0"], params_dir)
    assert "a sweep runs with --queue only" in refused(["train.epochs=2,3"], params_dir, queue=False)


def test_a_schema_key_the_file_leaves_out_is_added_with_plus(tmp_path):
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    name = next(k for k, f in SECTIONS["train"].fields.items() if f.default is not REQUIRED and k in p["train"]
                and isinstance(p["train"][k], (int, float)) and not isinstance(p["train"][k], bool))
    value = copy.deepcopy(p["train"].pop(name))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert f"'train.{name}' is not in params.yaml (it takes its default); add it with -S '+train.{name}={value}'" in refused(
        [f"train.{name}={value}"], tmp_path)
    assert check_overrides([f"+train.{name}={value}"], tmp_path) == [[f"+train.{name}={value}"]]


def test_an_invalid_workspace_file_is_refused_before_any_override(tmp_path):
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["train"]["epoch"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert "(in the workspace's params.yaml, before any override)" in refused(["train.lr=1e-3"], tmp_path)


def test_refusal_exits_2_with_one_line_naming_the_key(params_dir, capsys):
    assert experiments.main(["run", "--repo", str(params_dir), "-S", "train.epoch=3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("experiments: refused, nothing queued or run: -S train.epoch=3: unknown key 'train.epoch' "
                          "(did you mean 'train.epochs'?)")
    assert experiments.main(["run", "--check", "--repo", str(params_dir), "-S", "train.epochs=2,3"]) == 0
    assert "checked, 2 experiments (a sweep)" in capsys.readouterr().out


# --------------------------------------------------------------------------- the table

def test_failed_and_queued_experiments_are_left_out_of_the_table(tmp_path):
    """DVC lists a failed queued experiment with the metrics of the commit it started from (its
    stash commit holds the baseline's git-tracked metrics files): rows from it would put the
    baseline's numbers under the failed experiment's name and change."""
    detail = "metrics/completeness/small_cnn.json"
    (tmp_path / "metrics/completeness").mkdir(parents=True)
    shutil.copyfile(REPO / detail, tmp_path / detail)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "b"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    metrics = {"summary.json": {"data": {"small_cnn": {"auroc": 0.9, "gates": "PASS"}, "data": {"source": "synthetic"}}}}

    def exp(name, state, error=None, lr=1e-3):
        rev_entry = {"rev": rev, "name": name, "data": {"rev": rev, "metrics": metrics,
                                                        "params": {"params.yaml": {"data": {"train": {"lr": lr}}}}}}
        if error:
            rev_entry["error"] = error
        return {"name": name, "executor": {"state": state} if state else None, "revs": [rev_entry]}

    shown = [{"rev": rev, "name": "main", "data": {"metrics": metrics, "params": {"params.yaml": {"data": {"train": {"lr": 2e-3}}}}},
              "experiments": [exp("done", "success"), exp("temp-run", None),
                              exp("junk", "failed", {"msg": "Experiment run failed", "type": ""}, lr=0.123),
                              exp("waiting", "queued"), exp("busy", "running")]}]
    df = experiments.ablation_rows(shown, tmp_path)
    assert set(df["experiment"]) == {f"commit {rev[:7]}", "done", "temp-run"} and set(df["gates"]) == {"PASS"}
    md = experiments.to_markdown(df)
    assert md.count("train.lr=0.001") == 2        # what a run changes is said once per run, not on each of its rows
    assert "| low count |" in md and "| gates |" in md and len(df) == 3 * 3
    assert {r["label"]: experiments.unfinished(r) for r in experiments.runs(shown)} == {
        f"commit {rev[:7]}": None, "done": None, "temp-run": None, "junk": "failed", "waiting": "queued", "busy": "running"}


# --------------------------------------------------------------------------- with real DVC

@pytest.mark.slow
def test_refused_before_the_queue_grows_and_queued_leaving_params_yaml_byte_identical(tmp_path):
    """The project's params.yaml and dvc.yaml: nothing runs, the queue is what is checked."""
    root = git_repo(tmp_path / "repo", (REPO / "dvc.yaml").read_text(), probe=False)

    res = checked_run(root, "-S", "train.epoch=3")
    assert res.returncode == 2 and res.stdout == "", res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and "'train.epoch' (did you mean 'train.epochs'?)" in res.stderr
    res = checked_run(root, "-S", "+train.epoch=3")
    assert res.returncode == 2 and "unknown keys ['epoch'] in 'train' (did you mean 'epochs'?)" in res.stderr
    assert shown_experiments(root) == {}
    assert run(root, "git", "rev-parse", "--verify", "-q", "refs/exps/celery/stash").returncode != 0   # no queue at all
    unchanged(root)

    res = checked_run(root, "-n", "lr-5e-4", "-S", "train.lr=5.0e-4", "-S", "evaluation.fprs=[0.1,0.01]")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "dvc exp run --queue -n lr-5e-4" in res.stdout and "dvc queue start -j 1" in res.stdout
    exps = shown_experiments(root)
    assert list(exps) == ["lr-5e-4"] and exps["lr-5e-4"]["executor"]["state"] == "queued"
    queued = exps["lr-5e-4"]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert queued["train"]["lr"] == 5.0e-4 and queued["evaluation"]["fprs"] == [0.1, 0.01]
    unchanged(root)

    # without the check, DVC queues the junk key Hydra suggests; the stage refuses it only when it runs
    res = run(root, sys.executable, "-m", "dvc", "exp", "run", "--queue", "-n", "junk", "-S", "+train.epoch=3")
    assert res.returncode == 0 and "junk" in shown_experiments(root)
    unchanged(root)


@pytest.mark.slow
def test_temp_runs_now_and_a_failed_queued_run_is_shown_with_the_baseline_metrics(tmp_path):
    root = git_repo(tmp_path / "repo", PROBE_DVC, probe=True)
    baseline = json.loads((root / "metrics/probe.json").read_text())

    res = checked_run(root, "--temp", "-n", "lr3", "-S", "train.lr=0.003")
    assert res.returncode == 0, res.stdout + res.stderr
    exps = shown_experiments(root)
    assert exps["lr3"]["revs"][0]["data"]["metrics"]["metrics/probe.json"]["data"]["lr"] == 0.003
    unchanged(root)
    res = checked_run(root, "--temp", "-n", "refused-by-stage", "-S", "train.lr=0.123")
    assert res.returncode != 0 and "a refusal only the stage can make" in res.stderr
    assert "DVC records no experiment for a failed --temp run" in res.stderr
    assert "refused-by-stage" not in shown_experiments(root)
    unchanged(root)

    # a queued experiment that fails when it runs: DVC shows it with the baseline's metrics
    res = checked_run(root, "-n", "bad", "-S", "train.lr=0.123")
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        assert run(root, "dvc", "queue", "start", "-j", "1").returncode == 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = ((shown_experiments(root).get("bad") or {}).get("executor") or {}).get("state")
            if state in ("failed", "success"):
                break
            time.sleep(2)
    finally:
        run(root, "dvc", "queue", "stop")
    bad = shown_experiments(root)["bad"]
    assert bad["executor"]["state"] == "failed"
    data = bad["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 0.123                 # its own params
    assert data["metrics"]["metrics/probe.json"]["data"] == baseline                     # the baseline's metrics
    assert "a refusal only the stage can make" in run(root, "dvc", "queue", "logs", "bad").stdout
    table = run(root, sys.executable, "-m", "dhs.experiments", "--out", str(tmp_path / "tables"))
    assert table.returncode == 0, table.stderr
    assert "left out, no results of their own: bad (failed)" in table.stdout
    unchanged(root)


def wait_for(cond, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
def test_an_interrupted_workspace_run_and_the_way_back(tmp_path):
    root = git_repo(tmp_path / "repo", PROBE_DVC, probe=True)
    mark = tmp_path / "started"
    before = {p: (root / p).read_bytes() for p in ("params.yaml", "dvc.lock", "metrics/probe.json", "data/out.txt")}

    def default_sigint():
        signal.signal(signal.SIGINT, signal.SIG_DFL)   # as in a terminal, whatever this process ignores

    first = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "-S", "train.lr=0.0042"], cwd=root,
                             env={**ENV, "PROBE_MARK": str(mark)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True, preexec_fn=default_sigint)
    try:
        assert wait_for(mark.exists), "the stage never started"
        # DVC rewrote params.yaml and removed the stage's outputs before running it
        assert (root / "params.yaml").read_bytes() != before["params.yaml"]
        assert not (root / "metrics/probe.json").exists()
        # a second workspace run is refused by the lock, after it rewrote params.yaml too
        second = run(root, sys.executable, "-m", "dvc", "exp", "run", "-S", "train.epochs=3", timeout=120)
        assert second.returncode != 0
        assert yaml.safe_load((root / "params.yaml").read_text())["train"]["epochs"] == 3
        os.killpg(first.pid, signal.SIGINT)   # Ctrl-C
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode != 0
    assert (root / "params.yaml").read_bytes() != before["params.yaml"] and not (root / "metrics/probe.json").exists()
    assert run(root, "git", "symbolic-ref", "-q", "HEAD").returncode == 0   # after Ctrl-C, HEAD is back on the branch

    # the way back (docs/dvc-workflows.md, "Running experiments safely")
    paths = ["params.yaml", "dvc.lock", "metrics"]   # (+ plots, dvclive in the project)
    for cmd in (["git", "rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *paths],
                ["git", "restore", "--source=HEAD", "--staged", "--worktree", "--", *paths], ["dvc", "checkout"]):
        res = run(root, *cmd)
        assert res.returncode == 0, (cmd, res.stdout, res.stderr)
    assert {p: (root / p).read_bytes() for p in before} == before
    assert run(root, "git", "status", "--porcelain").stdout == ""
    assert "up to date" in run(root, "dvc", "status").stdout
