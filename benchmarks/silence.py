"""The longest silences of a pipeline run: runs a command (default ``dvc repro``), passes its
output through with the time since the start in front of every line, and at the end prints, for
each stage DVC ran, its duration and the longest interval in which it printed nothing.

    python benchmarks/silence.py [--log silence.log] [--limit 30] [-- dvc repro ...]

A line counts when it ends in a newline or a carriage return (progress bars redraw with ``\\r``).
Exit status: the command's, or 3 when a stage was silent for longer than ``--limit`` seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

STAGE_LINE = re.compile(r"^(?:Running|Verifying|Stage) stage '([^']+)'")


def silences(events: list[tuple[float, str]], end: float) -> list[dict]:
    """Per stage (from DVC's "Running stage 'x'" lines): start, duration and longest silence, in s."""
    out: list[dict] = []
    for t, line in events:
        m = STAGE_LINE.match(line)
        if m and (not out or out[-1]["stage"] != m.group(1)):
            out.append({"stage": m.group(1), "start": t, "times": [t]})
        elif out:
            out[-1]["times"].append(t)
    for i, s in enumerate(out):
        stop = out[i + 1]["start"] if i + 1 < len(out) else end
        times = s.pop("times") + [stop]
        s["duration"] = stop - s["start"]
        s["longest_silence"] = max(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else s["duration"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", default=None, help="also write the timed lines to this file")
    ap.add_argument("--limit", type=float, default=30.0, help="seconds of silence a stage may not exceed")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    cmd = [x for x in a.command if x != "--"] or ["dvc", "repro"]
    t0 = time.monotonic()
    events: list[tuple[float, str]] = []
    log = open(a.log, "w") if a.log else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    buf = b""
    while True:
        chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(1)
        if not chunk:
            break
        buf += chunk
        parts = re.split(rb"[\r\n]", buf)
        buf = parts.pop()
        for raw in parts:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            t = time.monotonic() - t0
            events.append((t, line))
            text = f"[{t:8.1f}] {line}"
            print(text, flush=True)
            if log:
                log.write(text + "\n")
    rc = proc.wait()
    end = time.monotonic() - t0
    rows = silences(events, end)
    print(f"\n{'stage':40s} {'duration s':>11s} {'longest silence s':>18s}")
    for s in rows:
        flag = "  > limit" if s["longest_silence"] > a.limit else ""
        print(f"{s['stage']:40s} {s['duration']:11.1f} {s['longest_silence']:18.1f}{flag}")
    worst = max((s["longest_silence"] for s in rows), default=0.0)
    print(f"longest silence of any stage: {worst:.1f} s (limit {a.limit:g} s); command exit status {rc}; {end:.0f} s in all")
    if log:
        log.close()
    return rc if rc else (3 if worst > a.limit else 0)


if __name__ == "__main__":
    sys.exit(main())
