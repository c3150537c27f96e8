"""benchmarks/silence.py: the longest silence per stage of a command's output, timed for real."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

FAKE_REPRO = textwrap.dedent("""
    import sys, time
    print("Running stage 'quick':", flush=True)
    for i in range(3):
        print(f"quick {i}", flush=True); time.sleep(0.1)
    print("Running stage 'slow':", flush=True)
    time.sleep(1.5)
    sys.stderr.write("slow: 50%\\r"); sys.stderr.flush(); time.sleep(0.2)
    print("slow: done", flush=True)
""")


def test_the_longest_silence_of_each_stage_is_measured_and_judged_against_the_limit(tmp_path):
    fake = tmp_path / "fake_repro.py"
    fake.write_text(FAKE_REPRO)
    log = tmp_path / "run.log"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "silence.py"), "--log", str(log), "--limit", "1.0", "--",
                        sys.executable, str(fake)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stdout + r.stderr                     # 'slow' said nothing for 1.5 s > 1 s
    rows = {line.split()[0]: [float(x) for x in line.split()[1:3]] for line in r.stdout.splitlines()
            if line.startswith(("quick ", "slow "))}
    assert rows["quick"][1] < 0.5 and 1.4 < rows["slow"][1] < 3.0, r.stdout
    assert "slow: 50%" in log.read_text()                              # a carriage return ends a line too
    ok = subprocess.run([sys.executable, str(REPO / "benchmarks" / "silence.py"), "--limit", "5", "--", sys.executable, str(fake)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "longest silence of any stage: 1." in ok.stdout, ok.stdout
