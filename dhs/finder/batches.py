"""The training batches of one rank, from one of two sources (``train.data``):

- ``CachedBatches`` (``cache``): this rank's shard of the selected rows of the cached train split
  (``dhs.finder.rows``), in an order that is a function of (train.seed, epoch);
- ``RenderedBatches`` (``simulate``): batches rendered on the fly by the simulated survey
  (``dhs.finder.fresh``), a function of (simulate.seed, train.seed, block, rank).

Both are a ``BatchSource``: the loop asks each step for ``batch(step)`` and never which source it has.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from dhs.finder.fresh import BELOW_MIN_SNR, SURPLUS, USED, FreshBatches
from dhs.finder.rows import balance_strata, balanced_rows, host_kind_mix, host_kind_rows, training_rows
from dhs.imaging.cache import CachedSplit, open_split
from dhs.models.checkpoint import TrainingError, metadata_matrix, resolve_device, standardise
from dhs.models.colours import host_colours_nmgy, split_host_colours
from dhs.models.loader import NormalisedSplit, NormConfig, augmented, iterate_batches, normalize, shard_indices
from dhs.models.spec import ModelSpec
from dhs.simulate.config import SimConfig

if TYPE_CHECKING:
    from dhs.finder.training import TrainConfig


@dataclass(frozen=True)
class Placement:
    """Where this process trains: its rank among ``world`` (1 without DDP) and its device."""
    rank: int
    world: int
    device: torch.device
    distributed: bool

    @classmethod
    def here(cls, device: str) -> "Placement":
        """This process: a rank of the initialised process group, or the only one; ``device``
        is train.device (auto: this rank's own GPU, ``LOCAL_RANK``)."""
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        return cls(rank, world, resolve_device(device, local_rank=int(os.environ.get("LOCAL_RANK", 0))), distributed)

    @property
    def amp(self) -> bool:
        """bf16 autocast: on a GPU only."""
        return self.device.type == "cuda"

    def parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` as this process trains it: wrapped in DDP across the ranks, or itself."""
        if not self.distributed:
            return model
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)


@dataclass
class Batch:
    """One step's training batch on the device."""
    x: torch.Tensor              # (B, C, N, N) normalised and augmented, channels_last
    y: torch.Tensor              # (B,) float32 labels, 1 = injection
    extras: list[torch.Tensor]   # the inputs after the image: hybrid metadata, host colours
    theta: torch.Tensor | None   # (B,) theta_E [arcsec] targets with a theta_E head (0 on controls)
    rows: np.ndarray             # rows of the train split (rendered: positions in the batch)
    ids: pd.Series               # their task ids, for a message naming the batch


class BatchSource(Protocol):
    """What the training loop asks of its batches, whichever ``train.data`` gives them."""
    spec: ModelSpec                 # the model's, at the val split's stamp size
    meta_stats: dict | None         # the hybrid metadata's mean and std, kept in the checkpoints
    seen: list[np.ndarray]          # the rows drawn, kept with train.record_rows (cached rows only)

    def batch(self, step: int) -> Batch:
        """Step ``step``'s batch on the device, normalised and augmented with the training-only
        corruptions (``dhs.models.loader``), the augmentation generator seeded by (train.seed,
        step): a resumed run draws the batches the straight run drew."""

    def fingerprint(self) -> str:
        """What defines the batches beyond the cache and the step (the params hash holds it)."""

    def preload_nbytes(self) -> int:
        """Bytes that normalising the train rows once on the device takes."""

    def preload(self, desc: str | None) -> None:
        """Normalise the train rows once on the device (``desc``: a progress bar's title, or None)."""

    def accounting(self, from_step: int) -> dict:
        """The metrics' ``n_train``, ``train_rows`` and ``train_label_balance`` of a run from ``from_step``."""


def augmentation_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """The generator of step ``step``'s augmentation draws: a function of (train.seed, step)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def metadata_stats(meta: np.ndarray | None) -> dict | None:
    """Per-column mean and std (+1e-6) of the hybrid's metadata, NaN ignored; None without columns."""
    if meta is None:
        return None
    mu, sd = np.nanmean(meta, 0), np.nanstd(meta, 0) + 1e-6
    return {"mean": mu.tolist(), "std": sd.tolist()}


def extra_inputs(meta: np.ndarray | None, colours: np.ndarray | None, rows: np.ndarray, device) -> list[torch.Tensor]:
    """The model's inputs after the image: hybrid metadata, then host colours, for these rows."""
    return [torch.from_numpy(a[rows]).to(device) for a in (meta, colours) if a is not None]


def fresh_inputs(rows: pd.DataFrame, raw: torch.Tensor, spec: ModelSpec, meta_stats: Mapping | None, device) -> list[torch.Tensor]:
    """The model's inputs after the image for a rendered batch (``train.data: simulate``): hybrid
    metadata standardised like the cached splits', then host colours from the raw pixels."""
    out = []
    if spec.metadata:
        out.append(torch.from_numpy(standardise(metadata_matrix(rows, spec.metadata, where="a rendered batch"), meta_stats)).to(device))
    if spec.colour:
        out.append(torch.from_numpy(host_colours_nmgy(raw.float().cpu().numpy())).to(device))
    return out


class _StepStream:
    """Rows of step s for this rank: a function of (seed, s) only."""

    def __init__(self, n: int, per_rank_batch: int, steps_per_epoch: int, seed: int, rank: int, world: int):
        self.n, self.b, self.spe, self.seed, self.rank, self.world = n, per_rank_batch, steps_per_epoch, seed, rank, world
        self._cache: tuple[int, np.ndarray] | None = None

    def rows(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.spe)
        if self._cache is None or self._cache[0] != epoch:
            need = self.spe * self.b
            shard = shard_indices(self.n, self.rank, self.world, shuffle=True, seed=self.seed, epoch=epoch)
            parts, sub = [shard], 0
            # an epoch longer than the shard re-shuffles this rank's own shard, so ranks stay disjoint
            while sum(map(len, parts)) < need:
                sub += 1
                parts.append(np.random.default_rng([self.seed, epoch, sub, self.rank]).permutation(shard))
            self._cache = (epoch, np.concatenate(parts)[:need])
        return self._cache[1][k * self.b : (k + 1) * self.b]


class CachedBatches:
    """Batches of the cached train split: the rows of ``training_rows`` (each control, the visible
    injections), repeated by host kind and class balance, this rank's shard of them each epoch."""

    def __init__(self, cfg: TrainConfig, split: CachedSplit, spec: ModelSpec, norm: NormConfig, augment: bool, at: Placement):
        self.cfg, self.split, self.spec, self.norm, self.augment, self.device = cfg, split, spec, norm, augment, at.device
        # host colours from the raw stamps (dhs.models.colours), independent of the normalisation
        self.colours = split_host_colours(split) if spec.colour else None
        self.theta = None
        if spec.theta_head:
            self.theta = np.nan_to_num(pd.to_numeric(split.meta["theta_e_arcsec"], errors="coerce").to_numpy(np.float32), nan=0.0)
        meta = metadata_matrix(split.meta, spec.metadata, where="split train")
        self.meta_stats = metadata_stats(meta)
        self.meta = None if meta is None else standardise(meta, self.meta_stats)
        self.unique_rows, self.excluded = training_rows(split.meta, split.labels, cfg.min_arc_snr, cfg.min_arc_snr_column)
        rows = host_kind_rows(self.unique_rows, split.meta, cfg.host_kind_repeat)
        if cfg.balance_classes:
            rows = balanced_rows(rows, split.labels, balance_strata(split.meta, cfg.balance_by))
        self.epoch_rows = rows
        self.stream = _StepStream(len(rows), max(1, cfg.batch_size // at.world), cfg.steps_per_epoch, cfg.seed, at.rank, at.world)
        self.inputs: CachedSplit | NormalisedSplit = split
        self.seen: list[np.ndarray] = []

    def fingerprint(self) -> str:
        return ""  # the cache's digest covers the split, the params the selection of its rows

    def preload_nbytes(self) -> int:
        return NormalisedSplit.nbytes(self.split, len(self.unique_rows))

    def preload(self, desc: str | None) -> None:
        self.inputs = NormalisedSplit(self.split, self.norm, self.device, self.unique_rows, self.cfg.eval_batch_size, desc=desc)

    def batch(self, step: int) -> Batch:
        rows = self.epoch_rows[self.stream.rows(step)]
        if self.cfg.record_rows:
            self.seen.append(rows)
        gen = augmentation_generator(self.cfg.seed, step, self.device)
        # training=True: the training-only corruptions of ``norm`` (core dropout) apply here and nowhere else
        x, y, _ = next(iterate_batches(self.inputs, rows, len(rows), self.norm, self.device, augment=self.augment, generator=gen,
                                       training=True))
        theta = torch.from_numpy(self.theta[rows]).to(self.device) if self.theta is not None else None
        return Batch(x.contiguous(memory_format=torch.channels_last), y, extra_inputs(self.meta, self.colours, rows, self.device),
                     theta, rows, self.split.meta["task_id"].iloc[rows])

    def accounting(self, from_step: int) -> dict:
        cfg = self.cfg
        return {"n_train": len(self.split),
                "train_rows": {"used": int(len(self.unique_rows)), "excluded": self.excluded, "min_arc_snr": cfg.min_arc_snr,
                               "min_arc_snr_column": cfg.min_arc_snr_column,
                               "epoch_rows": int(len(self.epoch_rows)), "balance_classes": cfg.balance_classes,
                               "balance_by": list(cfg.balance_by), "host_kind_repeat": dict(cfg.host_kind_repeat)},
                "train_label_balance": float(self.split.labels[self.epoch_rows].mean())}


class RenderedBatches:
    """Batches rendered on the fly by the simulated survey ``sim`` (``dhs.finder.fresh``): the
    visible injections and controls at an exact label fraction per block, pixels rounded through
    the val split's dtype; hybrid metadata standardised with the val split's statistics."""

    def __init__(self, cfg: TrainConfig, sim: SimConfig, val_split: CachedSplit, spec: ModelSpec, norm: NormConfig, augment: bool,
                 at: Placement):
        if cfg.balance_by:
            raise TrainingError(f"train.balance_by {list(cfg.balance_by)} balances the cached train split; with train.data: "
                                f"simulate every rendered block is exactly balanced already: set train.balance_by: []")
        if cfg.host_kind_repeat:
            sim = dataclasses.replace(sim, host_kinds=host_kind_mix(sim.host_kinds, cfg.host_kind_repeat))
        self.cfg, self.spec, self.norm, self.augment, self.device = cfg, spec, norm, augment, at.device
        self.per_rank = max(1, cfg.batch_size // at.world)
        self.fresh = FreshBatches(sim, self.per_rank, cfg.seed, at.rank, at.device, cfg.min_arc_snr,
                                  0.5 if cfg.balance_classes else 1.0 - sim.control_fraction, str(val_split.images.dtype),
                                  cfg.simulate_block_stamps, snr_column=cfg.min_arc_snr_column)
        self.meta_stats = metadata_stats(metadata_matrix(val_split.meta, spec.metadata, where="split val"))
        self.seen: list[np.ndarray] = []  # rendered stamps are no rows of a split

    def fingerprint(self) -> str:
        return self.fresh.fingerprint()

    def preload_nbytes(self) -> int:
        return 0  # rendered on the device, nothing to normalise beforehand

    def preload(self, desc: str | None) -> None:
        pass

    def batch(self, step: int) -> Batch:
        gen = augmentation_generator(self.cfg.seed, step, self.device)
        raw, y, rows = self.fresh.batch(step)
        x = augmented(normalize(raw, self.norm), self.norm, self.augment, gen, training=True)
        extras = fresh_inputs(rows, raw, self.spec, self.meta_stats, self.device)
        theta = torch.from_numpy(rows["theta_e_arcsec"].to_numpy(np.float32)).to(self.device) if self.spec.theta_head else None
        return Batch(x.contiguous(memory_format=torch.channels_last), y, extras, theta, np.arange(len(rows)), rows["task_id"])

    def accounting(self, from_step: int) -> dict:
        # what this process rendered (a resumed run counts from where it resumed), every stamp accounted for
        cfg, counts = self.cfg, self.fresh.counts
        return {"n_train": int(counts[USED]),
                "train_rows": {"rendered": int(sum(counts.values())), "used": int(counts[USED]),
                               "excluded": {BELOW_MIN_SNR: int(counts[BELOW_MIN_SNR]), SURPLUS: int(counts[SURPLUS])},
                               "min_arc_snr": cfg.min_arc_snr, "min_arc_snr_column": cfg.min_arc_snr_column,
                               "balance_classes": cfg.balance_classes, "host_kind_repeat": dict(cfg.host_kind_repeat),
                               "block_stamps": self.fresh.steps_per_block * self.per_rank, "from_step": from_step},
                "train_label_balance": self.fresh.positive_fraction}


def open_batches(cfg: TrainConfig, cache_dir: str | Path, sim: SimConfig | None, norm: NormConfig, augment: bool,
                 at: Placement) -> tuple[BatchSource, CachedSplit]:
    """The batch source of ``cfg.data`` (its ``spec``: the model's, at the val split's stamp
    size) and the val split. Refused: an empty split, rendered batches without a survey or at
    another stamp size than the cached val split's."""
    simulate = cfg.data == "simulate"
    if simulate and sim is None:
        raise TrainingError("train.data is simulate, which renders the batches with the simulated survey, but none was given: "
                            "it needs stamps.source: synthetic (for real stamps use train.data: cache)")
    train_split = None if simulate else open_split(cache_dir, "train")
    val_split = open_split(cache_dir, "val")
    if (train_split is not None and len(train_split) == 0) or len(val_split) == 0:
        raise TrainingError("train and val splits must both hold stamps" if train_split is not None else "the val split must hold stamps")
    stamp_size = int(val_split.images.shape[-1])
    if simulate and sim.stamp_size != stamp_size:
        raise TrainingError(f"simulate.stamp_size is {sim.stamp_size} but the cached val split holds {stamp_size} px stamps: "
                            f"rerun the stamps stage")
    spec = cfg.spec(stamp_size, norm.channels)
    if simulate:
        return RenderedBatches(cfg, sim, val_split, spec, norm, augment, at), val_split
    return CachedBatches(cfg, train_split, spec, norm, augment, at), val_split
