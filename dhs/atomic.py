"""Files: atomic outputs, and the digest that names a file's content.

Atomic: write to a temporary sibling, then rename into place. A stage killed at any moment
leaves either the previous output or the new one, never a half-written file or directory.
``writing(path)`` gives that temporary path to code that writes files itself (parquet, torch);
``write_bytes``/``write_text``/``write_json``/``save_figure`` and ``atomic_dir`` use it.

A killed writer (SIGKILL: no cleanup runs) leaves its temporary ``.<name>.<random>.tmp``
behind. The writer holds an exclusive ``flock`` on its temporary for as long as it (or a worker
process it forked) lives, and the kernel drops that lock when the last of them dies, so
``sweep_stale(path)`` removes exactly the temporaries of ``path`` nobody holds any more and
never one a live run is writing. ``atomic_dir`` sweeps when it starts; a stage may sweep its
outputs' temporaries first thing (the stamps stage does).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def writing(path: str | os.PathLike, fixed_tmp: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is synced and renamed onto
    ``path``, on error removed. ``fixed_tmp``: the sibling is ``<name>.tmp`` (for writers that
    record the file's name inside it, e.g. torch.save), else a unique name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = None
    if fixed_tmp:
        tmp = str(path.with_name(path.name + ".tmp"))
    else:
        lock, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        fcntl.flock(lock, fcntl.LOCK_EX)  # ours while we live: sweep_stale leaves it alone
        os.chmod(tmp, 0o644)   # an output, readable like any other file (mkstemp makes it private)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not exc.filename:
            # a failed write() names no file: name the output it was for
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        if lock is not None:
            os.close(lock)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with writing(path) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 8 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_figure(path: str | os.PathLike, fig, dpi: int = 110, **savefig_kw: Any) -> None:
    """A matplotlib figure as PNG, atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, **savefig_kw)
    finally:
        plt.close(fig)
    write_bytes(path, buf.getvalue())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON: NaN and infinities (an empty bin's ratio, a missing interval) become null,
    which every parser reads; bare NaN is not JSON."""
    write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n")


def _finite(o: Any) -> Any:
    import math

    import numpy as np

    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    return o


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sweep_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries (``.<name>.*.tmp``) and set-aside old copies (``.<name>.old-*``)
    of ``path`` that no live process holds: what a killed run of its writer left behind. A
    temporary whose writer (or a worker process of it) is still alive is locked and kept."""
    path = Path(path)
    removed = []
    for stale in sorted([*path.parent.glob(f".{path.name}.*.tmp"), *path.parent.glob(f".{path.name}.old-*")]):
        try:
            fd = os.open(stale, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live run is writing it
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            removed.append(stale)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def scratch_dir(beside: str | os.PathLike, tag: str = "scratch") -> Iterator[Path]:
    """Yield a temporary working directory beside ``beside`` (``.<name>.<tag>-*.tmp``), removed
    when the block ends, however it ends. Locked like ``atomic_dir``'s temporary, so one a
    SIGKILL left behind is removed by the next ``sweep_stale(beside)``."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{beside.name}.{tag}-", suffix=".tmp", dir=beside.parent))
    lock = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(lock)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` whole, on error it is removed.

    The temporary is locked (``flock``) while this process or a worker it forks lives, so a run
    killed with SIGKILL leaves it unlocked, and the next run of the same output removes it
    (``sweep_stale``) without touching one a live run is writing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    lock = os.open(tmp, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
    finally:
        os.close(lock)
