"""One entry point for every stage script: its arguments, its error contract and its exit status.

A stage script (``stages/<name>.py``) declares a ``Stage``: the stage's name, whether it runs once
per arch (``--arch``), its path options with their defaults, the function that does the work
(``dhs.<package>.stage``), and the error types that mean "the stage could not run". ``main``
parses the arguments, calls the function with them, and turns those errors, and any
``ParamsError``, into one line on stderr, ``<stage>[ <arch>]: FAILED: <message>``, and exit
status 2. Every stage function validates the whole params file first (``dhs.params.load``), so
a bad value anywhere is refused before any work. While the stage runs, a ``Heartbeat`` says it is
still working after every 25 s of silence (``DHS_HEARTBEAT_S`` sets the interval; 0 turns it off).
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhs.params import ParamsError
from dhs.params.schema import FINDER_NAME as NAME


def banner(lines: list[str], width: int = 100) -> str:
    """``lines`` wrapped to ``width`` and framed in '!' so a warning is not lost in a DVC log."""
    import textwrap

    wrapped = [w for line in lines for w in (textwrap.wrap(line, width - 4, subsequent_indent="  ") or [""])]
    return "\n".join(["!" * width, *(f"! {x}" for x in wrapped), "!" * width])


def disk_full(exc: BaseException) -> str | None:
    """The one-line message for a write that failed because a disk (or quota) is full, or None
    for any other error. torch reports it as a RuntimeError without an errno ("file write
    failed"); the OS as ENOSPC / EDQUOT with the file's name."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = exc.filename or "an output"
    elif isinstance(exc, RuntimeError) and ("No space left" in text or "file write failed" in text):
        m = re.search(r"writing file (\S+?):", text)
        where = m.group(1) if m else "an output (torch.save)"
    else:
        return None
    free = ""
    try:
        d = Path(str(where)).resolve().parent
        while not d.exists():
            d = d.parent
        free = f"; {shutil.disk_usage(d).free / 2**20:.0f} MiB free there now"
    except (OSError, ValueError):
        pass
    return (f"no space left on the device holding {where}{free}. Nothing was lost: every output is written to a "
            f"temporary beside it and renamed only when whole, so the previous outputs are intact and the temporary "
            f"is removed; free space there and rerun")


HEARTBEAT_ENV = "DHS_HEARTBEAT_S"   # seconds of silence after which a stage says it is still working (0: never)
HEARTBEAT_S = 25.0


class _Watched:
    """A text stream that remembers when it was last written to and its last non-empty line."""

    def __init__(self, stream, beat: "Heartbeat"):
        self._stream, self._beat = stream, beat

    def write(self, text: str) -> int:
        self._beat.heard(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class Heartbeat:
    """While a stage runs, a line on stderr after every ``interval_s`` seconds in which it printed
    nothing: ``<stage>: still working, <elapsed> in (last: <its last line>)``, so no phase of a
    stage is silent for long, whatever it does (a phase that reports its own progress is not
    interrupted). Output of child processes that write to the file descriptors directly is not seen."""

    def __init__(self, label: str, interval_s: float):
        self.label, self.interval_s = label, interval_s
        self.t0 = self.last = time.monotonic()
        self.last_line = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def heard(self, text: str) -> None:
        self.last = time.monotonic()
        lines = [x.strip() for x in text.replace("\r", "\n").split("\n") if x.strip()]
        if lines:
            self.last_line = lines[-1]

    def _run(self, err) -> None:
        while not self._stop.wait(min(1.0, self.interval_s / 4)):
            now = time.monotonic()
            if now - self.last >= self.interval_s:
                m, s = divmod(int(now - self.t0), 60)
                what = f" (last: {self.last_line[:120]})" if self.last_line else ""
                err.write(f"{self.label}: still working, {m}m{s:02d}s in{what}\n")
                err.flush()
                self.last = now

    def __enter__(self) -> "Heartbeat":
        if self.interval_s > 0:
            self._saved = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = _Watched(sys.stdout, self), _Watched(sys.stderr, self)
            self._thread = threading.Thread(target=self._run, args=(self._saved[1],), daemon=True, name="dhs-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            sys.stdout, sys.stderr = self._saved


def heartbeat_interval() -> float:
    raw = os.environ.get(HEARTBEAT_ENV, "")
    try:
        return max(0.0, float(raw)) if raw.strip() else HEARTBEAT_S
    except ValueError:
        return HEARTBEAT_S


@dataclass(frozen=True)
class Option:
    """``--flag`` on the command line, passed to the stage function as keyword ``name``."""

    flag: str
    name: str
    default: Any = None
    help: str | None = None
    action: str | None = None   # "store_true" / "store_false": a flag without a value


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Any]
    doc: str = ""
    options: Sequence[Option] = ()
    errors: tuple[type[BaseException], ...] = ()
    per_arch: bool = False
    # the exit status from the stage's result (gates: 1 when an enforced gate fails); default 0
    status: Callable[[Any, str], int] | None = None

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        ap = argparse.ArgumentParser(description=self.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        if self.per_arch:
            ap.add_argument("--arch", required=True)
        ap.add_argument("--params", default="params.yaml")
        for o in self.options:
            if o.action:
                ap.add_argument(o.flag, dest=o.name, action=o.action, help=o.help)
            else:
                ap.add_argument(o.flag, dest=o.name, default=o.default, help=o.help)
        return ap.parse_args(argv)

    def label(self, args: argparse.Namespace) -> str:
        return f"{self.name} {args.arch}" if self.per_arch else self.name

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = self.parse(argv)
        if self.per_arch and not re.fullmatch(NAME, args.arch):
            # a name becomes paths (data/models/<arch>, metrics/*/<arch>.json): a safe character set only
            print(f"{self.name}: FAILED: --arch {args.arch!r} is not a finder name (a lower case letter, then lower case "
                  f"letters, digits or '_', at most 40); the names are those of finders.measure", file=sys.stderr)
            return 2
        kwargs = {o.name: getattr(args, o.name) for o in self.options}
        label = self.label(args)
        try:
            with Heartbeat(label, heartbeat_interval()):
                result = self.run(args.arch, args.params, **kwargs) if self.per_arch else self.run(args.params, **kwargs)
        except (ParamsError, *self.errors) as exc:
            print(f"{label}: FAILED: {exc}", file=sys.stderr)
            return 2
        except (OSError, RuntimeError) as exc:
            full = disk_full(exc)
            if full is None:
                raise
            print(f"{label}: FAILED: {full}", file=sys.stderr)
            return 2
        return self.status(result, label) if self.status is not None else 0
