"""A stage is never silent for long: the runner's heartbeat speaks after each interval of silence,
naming the stage and its last line, and stays quiet while the stage reports its own progress
(real subprocesses running a stage through dhs.runner)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from dhs.runner import Stage

    def run(params, pattern="silent"):
        print("toy: reading the stamps", flush=True)
        if pattern == "silent":
            time.sleep(2.6)                 # one long phase that says nothing
        else:
            for i in range(13):             # a phase that reports its own progress every 0.2 s
                print(f"toy: step {{i}}", file=sys.stderr, flush=True)
                time.sleep(0.2)
        print("toy: done", flush=True)

    sys.exit(Stage("toy", run, options=()).main(sys.argv[1:]) if len(sys.argv) < 2 or sys.argv[1] != "chatty"
             else Stage("toy", lambda p: run(p, "chatty")).main([]))
""")


def run_stage(tmp_path: Path, interval: str, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    script = tmp_path / "toy_stage.py"
    script.write_text(SCRIPT.format(root=str(ROOT)))
    env = {**os.environ, "DHS_HEARTBEAT_S": interval}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=60)
    return r, time.monotonic() - t0


def test_a_silent_phase_gets_heartbeat_lines_naming_the_stage_and_its_last_line(tmp_path):
    r, _ = run_stage(tmp_path, "1")
    assert r.returncode == 0, r.stderr
    beats = [x for x in r.stderr.splitlines() if "still working" in x]
    assert 2 <= len(beats) <= 3, r.stderr                       # 2.6 s of silence, one line per second of it
    assert all(x.startswith("toy: still working, 0m0") and "(last: toy: reading the stamps)" in x for x in beats), beats
    assert r.stdout.splitlines() == ["toy: reading the stamps", "toy: done"]   # the stage's own output untouched


def test_a_stage_reporting_progress_is_not_interrupted(tmp_path):
    r, took = run_stage(tmp_path, "1", "chatty")
    assert r.returncode == 0, r.stderr
    assert took > 2.0 and "still working" not in r.stderr, r.stderr
    assert sum("toy: step" in x for x in r.stderr.splitlines()) == 13


def test_the_heartbeat_can_be_turned_off(tmp_path):
    r, _ = run_stage(tmp_path, "0")
    assert r.returncode == 0 and "still working" not in r.stderr, r.stderr
