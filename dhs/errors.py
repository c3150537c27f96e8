"""The error contract's base: ``StageError``, "the stage could not run".

Every error of dhs that means "this input (a params value, a file, a row, a column) is refused"
or "a condition the stage needs does not hold" derives from ``StageError``. The runner
(``dhs.runner``) turns any of them into one line, ``<stage>[ <arch>]: FAILED: <message>``, and the
exit status ``dhs.runner.EXIT_REFUSED``; any other exception is an internal error and keeps its
traceback. docs/errors.md holds the table of exit statuses and how a new error joins.

An error keeps the Python base its callers catch as a second base, e.g.
``class ScoresError(StageError, ValueError)``, so ``except ValueError`` still catches it.

This module imports nothing of dhs: it is the bottom of the library tier.
"""

from __future__ import annotations

from pathlib import Path


def where(file: str | Path | None = None, row: int | None = None, key: str | None = None) -> str:
    """``'<file>, row <row>, <key>'`` from the parts given, '' when none is (row: 0-based
    position in the file's table; key: a column of a table or a dotted params key)."""
    parts = [str(file)] if file is not None else []
    parts += [f"row {row}"] if row is not None else []
    parts += [str(key)] if key is not None else []
    return ", ".join(parts)


class StageError(Exception):
    """The stage could not run: the message says what is refused and what to fix.

    ``file``, ``row`` and ``key`` (a column or a params key) say where, when known; the message
    starts with them (``<file>, row <row>, <key>: <message>``), so the one line a failed stage
    prints names them. ``str(exc)`` is that whole line, which also survives pickling (a worker
    process's error keeps its text)."""

    def __init__(self, message: str = "", *, file: str | Path | None = None, row: int | None = None,
                 key: str | None = None):
        place = where(file, row, key)
        super().__init__(f"{place}: {message}" if place else message)
        self.file, self.row, self.key = file, row, key
