"""Scoring stamps with a trained model, exactly as it was trained to see them.

``load_trained`` restores the best checkpoint with the normalisation and the hybrid's metadata
standardisation stored in it, so every consumer (inference, gates, known lenses) feeds the
model what training fed it. ``score_split`` scores every row of a cached split once, in row
order, without a padding sampler (DOMAIN pitfall 4); ``score_images`` scores arbitrary nMgy
arrays (cutouts, probed stamps).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dhs.stamps.cache import CachedSplit
from dhs.finder.colours import host_colours_nmgy, split_host_colours
from dhs.finder.loader import NormConfig, iterate_batches, normalize
from dhs.models import ModelSpec, build_model
from dhs.models.heads import split_outputs
from dhs.finder.training import TrainingError, load_checkpoint, metadata_tensor, resolve_device, standardise


@dataclass
class TrainedModel:
    model: torch.nn.Module
    spec: ModelSpec
    norm: NormConfig
    meta_stats: dict | None
    device: torch.device
    checkpoint: Path
    step: int

    def meta_for(self, meta: pd.DataFrame | None, n: int) -> torch.Tensor | None:
        """Standardised hybrid metadata for ``n`` rows; columns absent from ``meta`` are imputed
        with the train mean (as training does for missing values)."""
        if not self.spec.metadata:
            return None
        cols = list(self.spec.metadata)
        m = np.full((n, len(cols)), np.nan, np.float32)
        if meta is not None:
            for j, c in enumerate(cols):
                if c in meta.columns:
                    m[:, j] = pd.to_numeric(meta[c], errors="coerce").to_numpy(np.float32)
        m[~np.isfinite(m)] = np.nan
        return torch.from_numpy(standardise(m, self.meta_stats)).to(self.device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, meta: torch.Tensor | None, colours: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B,); ``forward_all`` also returns the theta_E head's output when there is one."""
        return self.forward_all(x, meta, colours)[0]

    @torch.no_grad()
    def forward_all(self, x: torch.Tensor, meta: torch.Tensor | None, colours: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # float32, not bf16 autocast: bf16 logits carry 8 bits of mantissa, which ties the highest
        # control scores and moves a high-purity threshold by whole controls
        x = x.contiguous(memory_format=torch.channels_last)
        if self.spec.colour and colours is None:
            raise TrainingError("this model is colour-conditioned: pass the host colours (dhs.finder.colours)")
        args = [a for a in (meta, colours if self.spec.colour else None) if a is not None]
        out = self.model(x, *args)
        logits, theta = split_outputs(out.float())
        return logits, theta


def load_trained(model_dir: str | Path, device: str = "auto", which: str = "best") -> TrainedModel:
    """The model of ``model_dir/checkpoint_{which}.pt`` in eval mode on ``device``."""
    path = Path(model_dir) / f"checkpoint_{which}.pt"
    if not path.exists():
        raise TrainingError(f"{path} not found; run `dvc repro train` first")
    ckpt = load_checkpoint(path)
    spec = ModelSpec.from_dict(ckpt["spec"])
    norm = NormConfig(**json.loads(ckpt["norm"])) if "norm" in ckpt else NormConfig()
    meta_stats = json.loads(ckpt["meta_stats"]) if ckpt.get("meta_stats") else None
    if spec.metadata and meta_stats is None:
        raise TrainingError(f"{path}: a hybrid checkpoint without its metadata statistics; retrain it")
    dev = resolve_device(device)
    model = build_model(spec)
    model.load_state_dict(ckpt["model"])
    model = model.to(dev).to(memory_format=torch.channels_last).eval()
    return TrainedModel(model, spec, norm, meta_stats, dev, path, int(ckpt.get("step", -1)))


def _check_size(tm: TrainedModel, size: int, what: str) -> None:
    if size != tm.spec.stamp_size:
        raise TrainingError(f"{what} holds {size}x{size} stamps but {tm.checkpoint} was trained on "
                            f"{tm.spec.stamp_size}x{tm.spec.stamp_size}; score with a model of the same stamp size")


def score_split(tm: TrainedModel, split: CachedSplit, batch_size: int = 512, progress: bool = True,
                return_theta: bool = False):
    """float64 logits of every row of ``split``, in row order, each row scored exactly once;
    with ``return_theta``, (logits, theta_E predictions in arcsec or None)."""
    n = len(split)
    logits = np.full(n, np.nan, dtype=np.float64)
    theta = np.full(n, np.nan, dtype=np.float64) if tm.spec.theta_head else None
    if n == 0:
        return (logits, theta) if return_theta else logits
    _check_size(tm, int(split.images.shape[-1]), f"split {split.split}")
    meta = None
    if tm.spec.metadata:
        meta = metadata_tensor(split, tm.spec.metadata)
        meta = torch.from_numpy(standardise(meta, tm.meta_stats)).to(tm.device)
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


def score_images(tm: TrainedModel, images_nmgy: np.ndarray, meta: pd.DataFrame | None = None, batch_size: int = 512) -> np.ndarray:
    """float64 logits of (N, 3, S, S) nMgy images; normalisation statistics measured on the fly
    in the training annulus (the cache stores them precomputed; the values are the same)."""
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


def sigmoid(logits: Sequence[float] | np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
