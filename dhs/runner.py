"""One entry point for every stage script: its arguments, its error contract and its exit status.

A stage script (``stages/<name>.py``) declares a ``Stage``: the stage's name, whether it runs once
per arch (``--arch``), its path options with their defaults, and the function that does the work
(``dhs.<package>.stage``). ``main`` parses the arguments, calls the function with them, and ends
with one of the exit statuses below (docs/errors.md: what each means and what to do):

- a ``dhs.errors.StageError`` (every "could not run" error of dhs, ``ParamsError`` included) or a
  full disk: one line on stderr, ``<stage>[ <arch>]: FAILED: <message>``, status ``EXIT_REFUSED``;
- any other exception, an internal error: its traceback, then
  ``<stage>[ <arch>]: INTERNAL ERROR: <type>: <message>``, status ``EXIT_INTERNAL``;
- Ctrl-C (SIGINT): ``<stage>[ <arch>]: INTERRUPTED``, status ``EXIT_INTERRUPTED``;
- otherwise the stage's ``status`` of its result (the gates stage: ``EXIT_GATE_FAILED`` when
  ``gates.enforce`` is true and a gate is not PASS), else ``EXIT_OK``.

Every stage function validates the whole params file first (``dhs.params.load``), so a bad value
anywhere is refused before any work. While the stage runs, a ``Heartbeat`` says it is still
working after every 25 s of silence (``DHS_HEARTBEAT_S`` sets the interval; 0 turns it off).
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
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhs.errors import StageError
from dhs.params.schema import FINDER_NAME as NAME

# The exit statuses of a stage script, the one table of them (docs/errors.md). 1 and 2 keep the
# meanings Python gives them: 1 an uncaught exception, 2 a command line refused (argparse); a
# refused params value or input file is refused input like a bad command line, so it is 2 too.
EXIT_OK = 0
EXIT_INTERNAL = 1      # an internal error (any exception that is not a StageError): traceback kept
EXIT_REFUSED = 2       # refused input: bad command line, params value or input file, missing input, full disk
EXIT_GATE_FAILED = 3   # the stage ran, and gates.enforce is true and a gate is not PASS
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, as a shell reports a process SIGINT ended


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
    per_arch: bool = False
    # the exit status from the stage's result (gates: EXIT_GATE_FAILED when an enforced gate fails); default EXIT_OK
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
            return EXIT_REFUSED
        kwargs = {o.name: getattr(args, o.name) for o in self.options}
        label = self.label(args)
        try:
            with Heartbeat(label, heartbeat_interval()):
                result = self.run(args.arch, args.params, **kwargs) if self.per_arch else self.run(args.params, **kwargs)
        except KeyboardInterrupt:
            print(f"{label}: INTERRUPTED: every output is written whole or not at all, so each is the previous one or the new "
                  f"one; rerun the stage to finish", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - every failure ends in one status of the table
            return failure_status(label, exc)
        return self.status(result, label) if self.status is not None else EXIT_OK


def failure_status(label: str, exc: Exception) -> int:
    """Say why stage ``label`` failed on stderr and return its exit status: a ``StageError`` or a
    full disk is refused input, one line (``EXIT_REFUSED``); any other exception is an internal
    error, its traceback and a last line naming it (``EXIT_INTERNAL``)."""
    full = disk_full(exc)
    if full is not None or isinstance(exc, StageError):
        print(f"{label}: FAILED: {full or exc}", file=sys.stderr)
        return EXIT_REFUSED
    traceback.print_exception(exc, file=sys.stderr)
    what = " ".join(str(exc).split())[:300]
    print(f"{label}: INTERNAL ERROR: {type(exc).__name__}{': ' + what if what else ''}; an error dhs did not foresee, not a "
          f"refusal of the input: the traceback above says where it came from; report it with the command that ran", file=sys.stderr)
    return EXIT_INTERNAL
