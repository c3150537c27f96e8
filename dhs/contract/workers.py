"""Process pools whose workers end when the process that started them dies.

A ``concurrent.futures.ProcessPoolExecutor`` worker waits for work on a pipe whose write end
every forked sibling also holds, so when the stage is killed (SIGKILL: no cleanup runs) its
workers never see end-of-file: they sit with PPID 1, blocked forever, holding memory and the
open files of the killed run. ``process_pool`` gives each worker a watcher thread that checks
its parent every ``interval_s`` seconds and ends the worker (``os._exit``) once the parent is
gone; the validator and the cache build (dhs.contract.validate, dhs.imaging.cache) use it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PARENT_CHECK_S = 0.5
EXIT_STATUS = 70  # the worker's exit status when it ends because its parent died


def _watch_parent(ppid: int, interval_s: float) -> None:
    while True:
        if os.getppid() != ppid:  # re-parented: the process that started us is gone
            os._exit(EXIT_STATUS)
        time.sleep(interval_s)


def _start_watch(ppid: int, interval_s: float, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    threading.Thread(target=_watch_parent, args=(ppid, interval_s), name="dhs-parent-watch", daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def process_pool(max_workers: int, interval_s: float = PARENT_CHECK_S, initializer: Callable[..., Any] | None = None,
                 initargs: tuple = (), mp_context=None) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` whose workers exit within ``interval_s`` of their parent's death
    (``mp_context``: e.g. fork, for workers that must inherit memory mapped before they start)."""
    return ProcessPoolExecutor(max_workers=max_workers, initializer=_start_watch, mp_context=mp_context,
                               initargs=(os.getpid(), interval_s, initializer, initargs))
