"""Scores the gates have computed before, kept beside the finder's outputs.

The gates score tens of thousands of probed stamps (masked cores, rings, shuffles, shifts): minutes
on a CPU. Which threshold a gate then applies (``evaluation.fprs``, the gates' limits) does not
change those scores. ``ScoreMemo`` keys every call by the SHA-256 of the finder's checkpoint, the
image bytes and the metadata rows it is given, so a rerun of the stage for another threshold or
limit reads the logits back instead of scoring again, and any change to the finder, the stamps or
the probes scores anew. The file holds only the entries the last run used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from dhs import atomic

MEMO_FILE = "score_memo.npz"


def call_key(finder_sha256: str, images: np.ndarray, meta: pd.DataFrame | None) -> str:
    """SHA-256 of the finder, the images (dtype, shape and bytes) and the metadata rows."""
    h = hashlib.sha256(finder_sha256.encode())
    a = np.ascontiguousarray(images)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B"))
    if meta is not None and len(meta.columns):
        h.update(pd.util.hash_pandas_object(meta.reset_index(drop=True), index=False).to_numpy().tobytes())
        h.update(",".join(map(str, meta.columns)).encode())
    return h.hexdigest()


class ScoreMemo:
    """``memo(images, meta)`` = ``score(images, meta)``, read back where the same call was made by
    the last run; ``save()`` writes the entries this run used (atomically)."""

    def __init__(self, score: Callable[[np.ndarray, pd.DataFrame], np.ndarray], finder_sha256: str, path: str | Path):
        self.score, self.finder_sha256, self.path = score, finder_sha256, Path(path)
        self.kept: dict[str, np.ndarray] = {}
        self.used: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0
        if self.path.is_file():
            try:
                with np.load(self.path) as z:
                    self.kept = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                self.kept = {}   # a damaged memo is no memo: everything is scored again

    def __call__(self, images: np.ndarray, meta: pd.DataFrame) -> np.ndarray:
        key = call_key(self.finder_sha256, images, meta)
        if key in self.kept and len(self.kept[key]) == len(images):
            self.hits += 1
            out = self.kept[key]
        else:
            self.misses += 1
            out = np.asarray(self.score(images, meta))
        self.used[key] = out
        return out.copy()

    def save(self) -> None:
        atomic.write_bytes(self.path, _npz_bytes(self.used))


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
