"""Scoring stamps with a trained model, exactly as it was trained to see them.

The model comes from ``dhs.models.checkpoint.load_trained`` with the normalisation and the
hybrid's metadata statistics stored in its checkpoint, so every consumer (the infer stage, the
gates, the known-lens stage) feeds it what training fed it. ``score_split`` scores every row of a
cached split once, in row order, without a padding sampler (docs/conventions.md, evaluation
rules); ``score_images`` scores arbitrary nMgy arrays (cutouts, probed stamps).

``load_finder`` restores either kind of finder from ``data/models/{name}/checkpoint_best.pt``: a
model trained here (``TrainedModel``) or one made elsewhere and packed by the import stage
(``dhs.models.external.ExternalFinder``); ``score_split`` and ``score_images`` take both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dhs.models.checkpoint import TrainedModel, TrainingError, load_checkpoint, load_trained
from dhs.models.external import ExternalFinder, is_external, load_external
from dhs.models.colours import host_colours_nmgy, split_host_colours
from dhs.models.loader import iterate_batches, normalize
from dhs.imaging.cache import CachedSplit


def _check_size(tm: TrainedModel, size: int, what: str) -> None:
    if size != tm.spec.stamp_size:
        raise TrainingError(f"{what} holds {size}x{size} stamps but {tm.checkpoint} was trained on "
                            f"{tm.spec.stamp_size}x{tm.spec.stamp_size}; score with a model of the same stamp size")


Finder = TrainedModel | ExternalFinder


def load_finder(model_dir: str | Path, device: str = "auto", arch: str | None = None) -> Finder:
    """The finder of ``model_dir/checkpoint_best.pt``, trained here or external, ready to score;
    with ``arch``, a trained checkpoint of another arch, or an external one packed under another
    name, is refused."""
    path = Path(model_dir) / "checkpoint_best.pt"
    if path.exists():
        ckpt = load_checkpoint(path)
        if is_external(ckpt):
            finder = load_external(path, device, ckpt)
            if arch is not None and finder.name != arch:
                raise TrainingError(f"{path} holds the external finder {finder.name}, not {arch}; rerun `dvc repro external@{arch}`")
            return finder
    return load_trained(model_dir, device, arch=arch)


def stamp_size(finder: Finder) -> int:
    return finder.stamp_size if isinstance(finder, ExternalFinder) else finder.spec.stamp_size


def score_split(tm: Finder, split: CachedSplit, batch_size: int = 512, progress: bool = True,
                return_theta: bool = False):
    """float64 logits of every row of ``split``, in row order, each row scored exactly once;
    with ``return_theta``, (logits, theta_E predictions in arcsec or None)."""
    if isinstance(tm, ExternalFinder):
        logits = tm.score_split(split, batch_size, progress)
        return (logits, None) if return_theta else logits
    n = len(split)
    logits = np.full(n, np.nan, dtype=np.float64)
    theta = np.full(n, np.nan, dtype=np.float64) if tm.spec.theta_head else None
    if n == 0:
        return (logits, theta) if return_theta else logits
    _check_size(tm, int(split.images.shape[-1]), f"split {split.split}")
    meta = tm.meta_for(split.meta, n, where=f"split {split.split}")
    colours = torch.from_numpy(split_host_colours(split)).to(tm.device) if tm.spec.colour else None
    scored = np.zeros(n, dtype=np.int64)
    with tqdm(total=n, desc=f"infer {tm.spec.arch} {split.split}", unit="stamp", disable=not progress) as bar:
        for x, _, rows in iterate_batches(split, np.arange(n), batch_size, tm.norm, tm.device):
            idx = torch.from_numpy(rows).to(tm.device)
            out, th = tm.forward_all(x, meta[idx] if meta is not None else None, colours[idx] if colours is not None else None)
            logits[rows] = out.cpu().numpy()
            if theta is not None:
                theta[rows] = th.cpu().numpy()
            np.add.at(scored, rows, 1)
            bar.update(len(rows))
    if not (scored == 1).all():  # the accounting the completeness counts rely on
        raise TrainingError(f"split {split.split}: rows scored {np.bincount(scored).tolist()} times; expected each once")
    return (logits, theta) if return_theta else logits


def score_images(tm: Finder, images_nmgy: np.ndarray, meta: pd.DataFrame | None = None, batch_size: int = 512) -> np.ndarray:
    """float64 logits of (N, 3, S, S) nMgy images; normalisation statistics measured on the fly
    in the training annulus (the cache stores them precomputed; the values are the same)."""
    if isinstance(tm, ExternalFinder):
        return tm.score_images(images_nmgy, meta, batch_size)
    images_nmgy = np.asarray(images_nmgy)
    if images_nmgy.ndim != 4 or images_nmgy.shape[1] != 3:
        raise TrainingError(f"expected (N, 3, S, S) grz images, got shape {images_nmgy.shape}")
    _check_size(tm, images_nmgy.shape[-1], "the input")
    if not np.isfinite(images_nmgy).all():
        raise TrainingError("images contain NaN or Inf pixels; reject those stamps before scoring")
    n = len(images_nmgy)
    m = tm.meta_for(meta, n)
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, batch_size):
        raw = np.ascontiguousarray(images_nmgy[s : s + batch_size], dtype=np.float32)
        col = torch.from_numpy(host_colours_nmgy(raw)).to(tm.device) if tm.spec.colour else None
        x = normalize(torch.from_numpy(raw).to(tm.device), tm.norm)
        out[s : s + batch_size] = tm.forward(x, m[s : s + batch_size] if m is not None else None, col).cpu().numpy()
    return out


