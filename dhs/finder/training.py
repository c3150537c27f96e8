"""The training loop: one arch, single process or one rank of a torchrun DDP job.

Read it top to bottom: build the model; resume from ``checkpoint_last.pt`` if its params hash
matches and the run it holds is unfinished; then for every step draw the next batch of this
rank's shard of the shuffled train split (augmented on the device, with core dropout if
``norm.core_dropout_p`` > 0: training only, see ``dhs.models.loader``), take an AdamW step
under a warmup + cosine schedule with gradient clipping; at each epoch end evaluate the whole
val split, keep ``checkpoint_best.pt`` (lowest val loss) and ``checkpoint_last.pt``.

Why val loss for the best checkpoint: it uses every val stamp and moves smoothly; TPR at
FPR 1e-4 on a few thousand controls is set by a handful of negatives and is noise
(docs/conventions.md, evaluation rules).
Val AUC is logged beside it.

Determinism: the batch of step s is a function of (seed, s) only (epoch permutation, position
in it, augmentation generator seeded by the step), so N steps straight and N/2 + kill + resume
N/2 give identical weights on CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from dhs import atomic

from dhs.evaluation.auc import auroc
from dhs.models.checkpoint import (TrainingError, load_checkpoint, metadata_matrix, resolve_device, save_checkpoint,
                                   standardise)
from dhs.models.colours import host_colours_nmgy, split_host_colours
from dhs.finder.curves import write_curves
from dhs.finder.fresh import BELOW_MIN_SNR, SURPLUS, USED, FreshBatches
from dhs.finder.throughput import throughput_record
from dhs.models.loader import NormalisedSplit, NormConfig, augmented, iterate_batches, normalize, shard_indices
from dhs.models.heads import split_outputs
from dhs.models.registry import build_model
from dhs.models.spec import ModelSpec
from dhs.params import ParamsError, checked
from dhs.params.rules import check_metadata_columns
from dhs.params.schema import ARCHS
from dhs.simulate.config import SimConfig
from dhs.imaging.cache import CachedSplit, open_split

STEM_ARCHS = ("resnet18", "hybrid")   # the archs built on a ResNet trunk, which train.stem shapes (dhs.models)

PRESETS = {
    # the seed's recommended production configuration (SEED-phase5-plan.md)
    "production": {"epochs": 5, "steps_per_epoch": 5000, "batch_size": 256, "lr": 3e-4, "weight_decay": 1e-4},
    "demo": {},
}


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    epochs: int = 3
    steps_per_epoch: int = 100
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    grad_clip: float = 1.0
    seed: int = 1
    stem: str = "cifar"
    hybrid_metadata: tuple[str, ...] = ()
    eval_batch_size: int = 512
    nproc: int = 1
    device: str = "auto"
    record_rows: bool = False
    colour_conditioning: bool = False  # host g-r, r-z from the stamp as extra inputs (dhs.models.heads)
    theta_head: bool = False           # second output regressing theta_E on injections (masked on controls)
    theta_loss_weight: float = 0.1     # weight of the Huber loss on theta_E [arcsec] beside the BCE
    min_arc_snr: float = 0.0           # train on injections with <min_arc_snr_column> >= this (and every control); 0 = all
    min_arc_snr_column: str = "arc_snr"  # arc_snr (peak pixel) | arc_snr_int (matched filter: what a person sees)
    balance_classes: bool = False      # repeat the training injections to about as many as the controls
    balance_by: tuple[str, ...] = ()   # ... within each cell of these columns' tercile bins (cache data)
    host_kind_repeat: Mapping[str, int] = dataclasses.field(default_factory=dict)  # rows on hosts of a kind taken k times
    preload: str = "auto"              # normalise the train and val rows once and keep them on the device: auto | on | off
    preload_max_gb: float = 4.0        # auto preloads when both splits take at most this much
    data: str = "cache"                # cache: the cached train split | simulate: batches rendered on the fly (dhs.finder.fresh)
    simulate_block_stamps: int = 4096  # data simulate: stamps rendered at once (part of the trajectory)

    @classmethod
    def from_params(cls, p: Mapping[str, Any], arch: str, source: str = "params.yaml") -> "TrainConfig":
        """The ``train`` section (checked by dhs.params.schema) for one arch: the common values,
        then ``overrides[arch]``, then the preset (the production preset is the seed's
        configuration and wins over the demo's per-arch values)."""
        v = dict(checked("train", p, source))
        if arch not in ARCHS:
            raise ParamsError(f"{source}: unknown arch {arch!r}; the archs are {list(ARCHS)}")
        overrides, preset = v.pop("overrides"), v.pop("preset")
        v.pop("archs")
        merged = {**v, **(overrides.get(arch) or {}), **PRESETS[preset]}
        merged["hybrid_metadata"] = tuple(merged["hybrid_metadata"] or ())
        merged["balance_by"] = tuple(merged["balance_by"] or ())
        merged["host_kind_repeat"] = dict(merged["host_kind_repeat"] or {})
        if arch == "hybrid":
            try:
                check_metadata_columns(merged["hybrid_metadata"])
            except ValueError as exc:
                raise ParamsError(f"{source}: train.hybrid_metadata: {exc}") from None
        return cls(arch=arch, **merged)

    def spec(self, stamp_size: int, channels: int = 3) -> ModelSpec:
        meta = self.hybrid_metadata if self.arch == "hybrid" else ()
        return ModelSpec(self.arch, stamp_size, self.stem, tuple(meta), colour=bool(self.colour_conditioning), theta_head=bool(self.theta_head),
                         channels=channels)

    def params_hash(self, norm: NormConfig, augment: bool, data_digest: str = "") -> str:
        d = dataclasses.asdict(self)
        for k in ("eval_batch_size", "device", "record_rows", "preload", "preload_max_gb"):  # none changes the trajectory
            d.pop(k)
        if not d["host_kind_repeat"]:  # the default: runs made before the knob existed keep their hash
            d.pop("host_kind_repeat")
        # keys this arch does not read: changing them rebuilds the outputs, never retrains
        if self.arch not in STEM_ARCHS:
            d.pop("stem")
        if self.arch != "hybrid":
            d.pop("hybrid_metadata")
        if not self.theta_head:
            d.pop("theta_loss_weight")
        d["norm"] = dataclasses.asdict(norm)
        d["augment"] = augment
        # the code that defines the trajectory: a fix to it must retrain, not "resume" a finished run
        d["code"] = _source_digest()
        d["data"] = data_digest  # new stamps must retrain, not resume a run made on other data
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


def cache_digest(cache_dir: str | Path) -> str:
    """Fingerprint of the training data: manifest and the train/val metadata (task ids, stats)."""
    h = hashlib.sha256()
    for rel in ("manifest.json", "train/meta.parquet", "val/meta.parquet"):
        p = Path(cache_dir) / rel
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


def _source_digest() -> str:
    import dhs.contract.norm_stats   # the cache's stored stats and the loader's annulus mask
    import dhs.models.checkpoint
    import dhs.models.colours
    import dhs.models.loader
    import dhs.models
    import dhs.imaging.cache
    import dhs.imaging.centring
    import dhs.imaging.geometry

    files = sorted(Path(dhs.models.__file__).parent.glob("*.py")) + [Path(f) for f in (
        __file__, dhs.models.loader.__file__, dhs.imaging.geometry.__file__, dhs.imaging.centring.__file__, dhs.imaging.cache.__file__,
        dhs.models.colours.__file__, dhs.models.checkpoint.__file__, dhs.contract.norm_stats.__file__)]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


CURVE_EVERY = 10  # steps between two points of the training-loss curve
# steps between two reads of the non-finite-loss flag: each read waits for the device, so an
# accelerator reads it every few steps (the error still names the first bad step); the CPU has
# nothing to wait for
NONFINITE_CHECK_EVERY = {"cpu": 1, "default": 10}
THROUGHPUT_FILE = "throughput.json"  # in the model directory: the timing of the last run that trained
TEST_FILE = "test_at_best.json"       # in the model directory: the best checkpoint's test metrics, under its sha256


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr`` then cosine decay to 0 over the run."""
    total = cfg.epochs * cfg.steps_per_epoch
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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


def training_rows(meta: pd.DataFrame, labels: np.ndarray, min_arc_snr: float,
                  column: str = "arc_snr") -> tuple[np.ndarray, dict[str, int]]:
    """Rows of the train split the finder learns from: every control, and the injections whose
    arc is visible enough (``column >= min_arc_snr``, column ``arc_snr`` or ``arc_snr_int``; all
    with 0). A simulated population that reaches below detectability (sources to r ~ 27) has many
    injections with no visible arc; as training positives they are label noise, while they stay in
    validation, test and every completeness measurement. Returns the rows and the excluded counts
    by reason."""
    n = len(labels)
    if min_arc_snr <= 0:
        return np.arange(n), {}
    if column not in meta.columns:
        raise TrainingError(f"train.min_arc_snr is {min_arc_snr:g} but the train split has no {column} column (real data "
                            f"rarely has one): set train.min_arc_snr: 0")
    snr = pd.to_numeric(meta[column], errors="coerce").to_numpy(np.float64)
    inj = labels == 1
    missing = inj & ~np.isfinite(snr)
    faint = inj & np.isfinite(snr) & (snr < min_arc_snr)
    keep = ~(missing | faint)
    return np.flatnonzero(keep), {f"injection_{column}_below_min": int(faint.sum()), f"injection_{column}_missing": int(missing.sum())}


def host_kind_rows(rows: np.ndarray, meta: pd.DataFrame, repeat: Mapping[str, int]) -> np.ndarray:
    """``rows`` with each row whose ``host_kind`` is in ``repeat`` taken that many times, controls
    and injections alike. The FPR-0.01 threshold is set by the few controls a finder scores
    highest, and those are mostly look-alike hosts (blue companions, chance alignments, spirals,
    rings: a few percent of the hosts); repeating them makes the finder meet them more often. Both
    labels are repeated so that the label stays independent of the host's kind, as it is in the
    survey (injections and controls share one host population)."""
    if not repeat:
        return rows
    if "host_kind" not in meta.columns:
        raise TrainingError(f"train.host_kind_repeat {dict(repeat)} needs a host_kind column, which the train split does not have "
                            f"(only the simulated survey records it): set train.host_kind_repeat: {{}}")
    kinds = meta["host_kind"].astype(str).to_numpy()[rows]
    times = np.ones(len(rows), dtype=np.int64)
    for kind, k in repeat.items():
        times[kinds == kind] = int(k)
    return np.repeat(rows, times)


def host_kind_mix(host_kinds: Mapping[str, float], repeat: Mapping[str, int]) -> dict[str, float]:
    """The relative frequencies of host kinds with ``repeat`` applied: what rendered training
    batches draw, the same mix that repeating the cached rows gives."""
    return {kind: float(f) * int(repeat.get(kind, 1)) for kind, f in host_kinds.items()}


def balanced_rows(rows: np.ndarray, labels: np.ndarray, strata: np.ndarray | None = None) -> np.ndarray:
    """``rows`` with the injections repeated to as many as the controls (k = controls /
    injections: each floor(k) times, and a fixed pseudo-random (k - floor(k)) of them once more;
    at least once), so that a training batch holds as many injections as controls. With visible arcs a
    minority of the injections, this keeps the positives from being outvoted by the controls.

    ``strata`` (one integer per row of the split): k is set within each stratum instead. Keeping
    only visible arcs makes the label depend on what sets visibility (a shallow brick keeps a fifth
    of its injections, a deep one half), which a finder learns as "shallow means no lens"; balanced
    per stratum of depth, seeing and host brightness, the label is independent of them again.
    A stratum without injections keeps its controls once."""
    if strata is None:
        strata = np.zeros(len(labels), dtype=np.int64)
    parts = []
    st = strata[rows]
    for s in np.unique(st):
        r = rows[st == s]
        pos, neg = r[labels[r] == 1], r[labels[r] == 0]
        k = max(1.0, len(neg) / max(len(pos), 1))
        # the extra copies go to a fixed pseudo-random subset: rows are ordered by brick, so the
        # first ones would favour some regions of the sky
        extra = np.random.default_rng([int(s) & 0xFFFFFFFF, len(pos)]).permutation(len(pos))[: int(round((k - int(k)) * len(pos)))]
        parts += [neg, np.repeat(pos, int(k)), pos[np.sort(extra)]]
    return np.sort(np.concatenate(parts), kind="stable")


def balance_strata(meta: pd.DataFrame, columns: tuple[str, ...], n_bins: int = 3) -> np.ndarray | None:
    """One integer per row: the cell of ``columns``' quantile bins (``n_bins`` each, from the rows
    themselves; missing values in a bin of their own). None without columns."""
    if not columns:
        return None
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        raise TrainingError(f"train.balance_by names {missing}, which the train split does not have; its columns include "
                            f"{[c for c in ('psfdepth_r', 'psfsize_r', 'host_r_mag') if c in meta.columns]}")
    cell = np.zeros(len(meta), dtype=np.int64)
    for c in columns:
        v = pd.to_numeric(meta[c], errors="coerce").to_numpy(np.float64)
        finite = np.isfinite(v)
        edges = np.quantile(v[finite], np.linspace(0, 1, n_bins + 1)[1:-1]) if finite.any() else np.array([])
        b = np.where(finite, np.searchsorted(edges, v, side="right"), n_bins)
        cell = cell * (n_bins + 1) + b
    return cell


def training_loss(logits: torch.Tensor, y: torch.Tensor, theta_pred: torch.Tensor | None = None,
                  theta_true: torch.Tensor | None = None, theta_loss_weight: float = 0.1) -> torch.Tensor:
    """BCE on the logits, plus, with a theta_E head, ``theta_loss_weight`` x the Huber loss of
    theta_E [arcsec] (beta 0.2) averaged over the injections of the batch only: controls carry
    theta_E = 0 in the data and must not pull the head towards it."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), y)
    if theta_pred is not None:  # theta_E regression on injections only: controls have no theta_E
        w = y.float()
        huber = F.smooth_l1_loss(theta_pred.float(), theta_true, reduction="none", beta=0.2)
        loss = loss + theta_loss_weight * (huber * w).sum() / w.sum().clamp_min(1.0)
    return loss


def extra_inputs(meta: np.ndarray | None, colours: np.ndarray | None, rows: np.ndarray, device) -> list[torch.Tensor]:
    """The model's inputs after the image: hybrid metadata, then host colours, for these rows."""
    return [torch.from_numpy(a[rows]).to(device) for a in (meta, colours) if a is not None]


def evaluate(model: torch.nn.Module, split: CachedSplit | NormalisedSplit, norm: NormConfig, device: torch.device, batch_size: int,
             meta: np.ndarray | None, amp: bool, colours: np.ndarray | None = None, selected: np.ndarray | None = None,
             balanced: bool = False) -> dict[str, float]:
    """Loss and AUC of every stamp of the split; with ``selected`` (rows), loss and AUC on those
    rows too (``loss_selected``, ``auc_selected``): the training selection, which picks the best
    checkpoint (an invisible arc in the loss only rewards timid scores). ``balanced``: the
    selected loss weights the two classes equally, as balanced training sees them (otherwise a
    class ratio unlike the training one rewards a shifted score, not a better ranking)."""
    model.eval()
    logits = np.empty(len(split.labels), dtype=np.float32)
    with torch.no_grad():
        for x, _, rows in iterate_batches(split, np.arange(len(split.labels)), batch_size, norm, device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x, *extra_inputs(meta, colours, rows, device))
            logits[rows] = split_outputs(out.float())[0].cpu().numpy()
    model.train()
    y = split.labels

    def loss_auc(idx, weighted=False):
        yi = y[idx]
        w = None
        if weighted and 0 < yi.sum() < len(yi):
            w = torch.from_numpy(np.where(yi == 1, 0.5 / yi.sum(), 0.5 / (len(yi) - yi.sum())).astype(np.float32) * len(yi))
        lo = float(F.binary_cross_entropy_with_logits(torch.from_numpy(logits[idx]), torch.from_numpy(yi), weight=w))
        return lo, (auroc(y[idx], logits[idx]) if 0 < y[idx].sum() < len(idx) else float("nan"))

    loss, auc = loss_auc(np.arange(len(y)))
    out = {"loss": loss, "auc": auc, "n": int(len(y))}
    if selected is not None:
        out["loss_selected"], out["auc_selected"] = loss_auc(np.asarray(selected), balanced)
        out["n_selected"] = int(len(selected))
    return out


def fresh_inputs(rows: pd.DataFrame, raw: torch.Tensor, spec: ModelSpec, meta_stats: Mapping | None, device) -> list[torch.Tensor]:
    """The model's inputs after the image for a rendered batch (``train.data: simulate``): hybrid
    metadata standardised like the cached splits', then host colours from the raw pixels."""
    out = []
    if spec.metadata:
        out.append(torch.from_numpy(standardise(metadata_matrix(rows, spec.metadata, where="a rendered batch"), meta_stats)).to(device))
    if spec.colour:
        out.append(torch.from_numpy(host_colours_nmgy(raw.float().cpu().numpy())).to(device))
    return out


def training_flops(model: torch.nn.Module, x: torch.Tensor, extras: tuple, amp: bool) -> float:
    """FLOPs of one forward and backward pass of ``model`` on the batch ``x`` (torch's FLOP
    counter), on a copy and with the random state restored: counting dispatches differently, and
    the run's own trajectory must not depend on whether it counted (a resumed run counts too)."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), FlopCounterMode(display=False) as counter:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            out = split_outputs(twin(x, *extras))[0]
        out.float().sum().backward()
    return float(counter.get_total_flops())


def test_at_best(model: torch.nn.Module, best_path: Path, spec: ModelSpec, test_split: CachedSplit, cache_dir: str | Path,
                 norm: NormConfig, device: torch.device, cfg: TrainConfig, meta_stats: Mapping | None, amp: bool, memo: Path) -> dict:
    """The test metrics of the best checkpoint, kept in ``memo`` beside it under its sha256 and the
    test split's digest, so that rebuilding a finished run's outputs does not score the test split again."""
    key = {"checkpoint_sha256": atomic.file_sha256(best_path),
           "test_sha256": [atomic.file_sha256(Path(cache_dir) / rel) for rel in ("manifest.json", "test/meta.parquet", "test/images.npy")
                           if (Path(cache_dir) / rel).exists()]}
    if memo.exists():
        try:
            kept = json.loads(memo.read_text())
            if {k: kept.get(k) for k in key} == key and isinstance(kept.get("test"), dict):
                return kept["test"]
        except (OSError, ValueError):
            pass
    print(f"train {cfg.arch}: scoring the {len(test_split)} test stamps with {best_path.name}", flush=True)
    model.load_state_dict(load_checkpoint(best_path, spec)["model"])
    meta_test = metadata_matrix(test_split.meta, spec.metadata, where="split test")
    if meta_test is not None:
        meta_test = standardise(meta_test, meta_stats)
    col_test = split_host_colours(test_split) if spec.colour else None
    test = evaluate(model, test_split, norm, device, cfg.eval_batch_size, meta_test, amp, col_test)
    atomic.write_json(memo, {**key, "test": test})
    return test


def train(cfg: TrainConfig, cache_dir: str | Path, out_dir: str | Path, norm: NormConfig, augment: bool,
          live_dir: str | Path | None = None, progress: bool = True, max_steps: int | None = None,
          sim: SimConfig | None = None) -> dict:
    """Train one arch; returns the metrics dict (rank 0) or {} (other ranks).

    ``max_steps`` ends this run after that many steps at the latest, stopping at the last
    epoch boundary (so checkpoint_last.pt is the place to resume from), for time-boxed jobs.
    ``sim``: the simulated survey that renders every batch when ``cfg.data`` is ``simulate``.
    """
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = resolve_device(cfg.device, local_rank)
    amp = device.type == "cuda"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    # host colours from the raw stamps (dhs.models.colours), independent of the normalisation
    col_train = split_host_colours(train_split) if spec.colour and not simulate else None
    col_val = split_host_colours(val_split) if spec.colour else None
    theta_train = None
    if spec.theta_head and not simulate:
        theta_train = np.nan_to_num(pd.to_numeric(train_split.meta["theta_e_arcsec"], errors="coerce").to_numpy(np.float32), nan=0.0)
    meta_train = None if simulate else metadata_matrix(train_split.meta, spec.metadata, where="split train")
    meta_val = metadata_matrix(val_split.meta, spec.metadata, where="split val")
    # standardise with the train statistics (rendered batches: the val split's), stored in the checkpoint
    meta_ref = meta_val if simulate else meta_train
    if meta_ref is not None:
        mu, sd = np.nanmean(meta_ref, 0), np.nanstd(meta_ref, 0) + 1e-6
        meta_stats = {"mean": mu.tolist(), "std": sd.tolist()}
        meta_val = standardise(meta_val, meta_stats)
        meta_train = None if meta_train is None else standardise(meta_train, meta_stats)
    else:
        meta_stats = None

    val_selected = None
    if cfg.min_arc_snr > 0 or cfg.balance_classes:
        val_selected = training_rows(val_split.meta, val_split.labels, cfg.min_arc_snr, cfg.min_arc_snr_column)[0]
    if simulate:
        if cfg.balance_by:
            raise TrainingError(f"train.balance_by {list(cfg.balance_by)} balances the cached train split; with train.data: "
                                f"simulate every rendered block is exactly balanced already: set train.balance_by: []")
        if cfg.host_kind_repeat:
            sim = dataclasses.replace(sim, host_kinds=host_kind_mix(sim.host_kinds, cfg.host_kind_repeat))
        fresh = FreshBatches(sim, max(1, cfg.batch_size // world), cfg.seed, rank, device, cfg.min_arc_snr,
                             0.5 if cfg.balance_classes else 1.0 - sim.control_fraction, str(val_split.images.dtype),
                             cfg.simulate_block_stamps, snr_column=cfg.min_arc_snr_column)
        train_rows = unique_rows = np.empty(0, np.int64)
        excluded = {}
    else:
        fresh = None
        train_rows, excluded = training_rows(train_split.meta, train_split.labels, cfg.min_arc_snr, cfg.min_arc_snr_column)
        unique_rows = train_rows
        train_rows = host_kind_rows(train_rows, train_split.meta, cfg.host_kind_repeat)
        if cfg.balance_classes:
            train_rows = balanced_rows(train_rows, train_split.labels, balance_strata(train_split.meta, cfg.balance_by))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # the global numpy state is saved in checkpoints: make it a function of the seed
    # channels_last: faster convolutions on GPU (bf16 tensor cores) and on CPU (oneDNN) alike
    model = build_model(spec).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    phash = cfg.params_hash(norm, augment, cache_digest(cache_dir) + (fresh.fingerprint() if simulate else ""))
    total = cfg.epochs * cfg.steps_per_epoch
    start, best = 0, {"loss": float("inf")}
    last_path, best_path = out_dir / "checkpoint_last.pt", out_dir / "checkpoint_best.pt"
    history: list[dict] = []
    curve: list[list[float]] = []  # [step, train loss, lr] every CURVE_EVERY steps, kept in checkpoint_last.pt
    if last_path.exists():
        ckpt = load_checkpoint(last_path, spec)
        if ckpt["params_hash"] != phash:
            if rank == 0:
                print(f"train {cfg.arch}: {last_path} was made with other params; starting afresh")
        elif int(ckpt["step"]) >= total and not best_path.exists():
            if rank == 0:
                print(f"train {cfg.arch}: {last_path} is a finished run but {best_path.name} is missing; training again")
        else:
            # a finished run (DVC reran the stage for a key that does not change the trajectory:
            # train.archs, eval_batch_size, device, ...) rebuilds its outputs without training;
            # an unfinished one resumes. Either way the curves come whole from the checkpoint.
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            start, best, history = int(ckpt["step"]), ckpt.get("best", best), json.loads(ckpt.get("history", "[]"))
            curve = json.loads(ckpt.get("curve", "[]"))
            if rank == 0:
                print(f"train {cfg.arch}: {last_path} is a finished run with these params; outputs rebuilt from it, no training"
                      if start >= total else f"train {cfg.arch}: resuming from {last_path} at step {start}/{total}")
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if distributed else model

    if max_steps is None:
        stop = total
    else:  # end on an epoch boundary (where checkpoint_last.pt is written), at least one epoch on
        stop = min(total, max(start + cfg.steps_per_epoch, (start + max_steps) // cfg.steps_per_epoch * cfg.steps_per_epoch))
    val_inputs, train_inputs = val_split, train_split
    if start < stop:
        need = NormalisedSplit.nbytes(val_split, len(val_split)) + (0 if simulate else NormalisedSplit.nbytes(train_split, len(unique_rows)))
        # normalisation is a function of the stamp alone: once, not once per epoch (and not at all for a finished run)
        if cfg.preload == "on" or (cfg.preload == "auto" and need <= cfg.preload_max_gb * 2**30):
            show = progress and rank == 0
            val_inputs = NormalisedSplit(val_split, norm, device, None, cfg.eval_batch_size,
                                         desc=f"train {cfg.arch}: preprocessing val" if show else None)
            if not simulate:
                train_inputs = NormalisedSplit(train_split, norm, device, unique_rows, cfg.eval_batch_size,
                                               desc=f"train {cfg.arch}: preprocessing train" if show else None)

    per_rank = max(1, cfg.batch_size // world)
    stream = None if simulate else _StepStream(len(train_rows), per_rank, cfg.steps_per_epoch, cfg.seed, rank, world)
    seen: list[np.ndarray] = []
    t0, images, flops_per_image = time.perf_counter(), 0, None
    bar = tqdm(total=total, initial=start, desc=f"train {cfg.arch}", unit="step", disable=not progress or rank != 0)
    model.train()
    # a non-finite loss is caught without a host sync per step on an accelerator: the first bad step
    # is kept on the device and read where the loop syncs anyway (curve points, epoch ends)
    nonfinite_at = torch.full((), -1, dtype=torch.long, device=device)
    recent: dict[int, tuple] = {}
    for step in range(start, stop):
        # dropout and stochastic depth (EfficientNet, ConvNeXt) draw from the global RNG: make it
        # a function of (seed, step, rank) so a resumed run draws what the straight run drew
        torch.manual_seed((cfg.seed * 1_000_003 + step) * 1_009 + rank)
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + step)
        # training=True: the training-only corruptions of ``norm`` (core dropout) apply here and nowhere else
        if simulate:
            raw, y, brows = fresh.batch(step)
            x = augmented(normalize(raw, norm), norm, augment, gen, training=True)
            extras = fresh_inputs(brows, raw, spec, meta_stats, device)
            rows = np.arange(len(brows))
            theta_step = brows["theta_e_arcsec"].to_numpy(np.float32) if spec.theta_head else None
            ids = brows["task_id"]
        else:
            rows = train_rows[stream.rows(step)]
            if cfg.record_rows:
                seen.append(rows)
            x, y, _ = next(iterate_batches(train_inputs, rows, len(rows), norm, device, augment=augment, generator=gen, training=True))
            extras = extra_inputs(meta_train, col_train, rows, device)
            theta_step = theta_train[rows] if spec.theta_head else None
            ids = train_split.meta["task_id"].iloc[rows]
        x = x.contiguous(memory_format=torch.channels_last)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        if step == start:
            flops_per_image = training_flops(model, x, extras, amp) / max(1, len(rows))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = net(x, *extras)
            logits, theta_pred = split_outputs(out)
            theta_true = torch.from_numpy(theta_step).to(device) if theta_pred is not None else None
            loss = training_loss(logits, y, theta_pred, theta_true, cfg.theta_loss_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nonfinite_at = torch.where(torch.isfinite(loss.detach()) | (nonfinite_at >= 0), nonfinite_at, step)
        recent[step] = (rows, ids, loss.detach())
        every = NONFINITE_CHECK_EVERY.get(device.type, NONFINITE_CHECK_EVERY["default"])
        if (step + 1) % every == 0 or (step + 1) % cfg.steps_per_epoch == 0 or step + 1 == stop:
            bad = int(nonfinite_at)
            if bad >= 0:
                b_rows, b_ids, b_loss = recent[bad]
                raise TrainingError(f"non-finite loss {b_loss.item()} at step {bad} (epoch {bad // cfg.steps_per_epoch}, batch rows "
                                    f"{b_rows[:5].tolist()}..., task_ids {b_ids.iloc[:5].tolist()}...); check the inputs and lower train.lr")
            recent.clear()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        images += len(rows) * world
        bar.update(1)
        if rank == 0 and step % CURVE_EVERY == 0:
            curve.append([step, loss.item(), lr_at(step, cfg)])  # the x axis of every curve is the optimiser step
        if (step + 1) % cfg.steps_per_epoch == 0:
            epoch = (step + 1) // cfg.steps_per_epoch
            if rank == 0:
                val = evaluate(model, val_inputs, norm, device, cfg.eval_batch_size, meta_val, amp, col_val, val_selected,
                               cfg.balance_classes)
                crit = val.get("loss_selected", val["loss"])  # the loss of what the model is trained to tell apart
                history.append({"epoch": epoch, "step": step + 1, "val_loss": val["loss"], "val_auc": val["auc"], "train_loss": loss.item(),
                                **({"val_loss_selected": val["loss_selected"], "val_auc_selected": val["auc_selected"]} if "loss_selected" in val else {})})
                bar.set_postfix(val_loss=f"{val['loss']:.4f}", val_auc=f"{val['auc']:.4f}")
                extra = {"meta_stats": json.dumps(meta_stats), "norm": json.dumps(dataclasses.asdict(norm))}
                if crit < best["loss"]:
                    best = {"loss": crit, "auc": val.get("auc_selected", val["auc"]), "auc_all": val["auc"], "epoch": epoch, "step": step + 1}
                    save_checkpoint(best_path, model, None, step + 1, spec, phash, {**extra, "best": best})
                save_checkpoint(last_path, model, opt, step + 1, spec, phash,
                                {**extra, "best": best, "history": json.dumps(history), "curve": json.dumps(curve)})
                if live_dir is not None:  # progress a person can watch (dvc plots show), once an epoch
                    write_curves(live_dir, curve, history)
            if distributed:
                dist.barrier()
    bar.close()
    elapsed = time.perf_counter() - t0
    if cfg.record_rows:
        np.save(out_dir / f"seen_rank{rank}.npy", np.concatenate(seen) if seen else np.array([], dtype=np.int64))
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
        (out_dir / f"weights_rank{rank}.sha256").write_text(digest + "\n")
    if rank != 0:
        return {}
    if live_dir is not None:
        write_curves(live_dir, curve, history)
    # the test split is measured on here only when the dataset has one (an evaluation set may not)
    test_split = open_split(cache_dir, "test") if (Path(cache_dir) / "test" / "images.npy").exists() else None
    test = {}
    if best_path.exists() and test_split is not None and len(test_split):
        test = test_at_best(model, best_path, spec, test_split, cache_dir, norm, device, cfg, meta_stats, amp,
                            out_dir / TEST_FILE)
    metrics = {"arch": cfg.arch, "stamp_size": stamp_size, "steps": total, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
               "world_size": world, "device": device.type, "params_hash": phash, "best": best, "history": history, "test_at_best": test, "completed": stop == total,
               "n_val": len(val_split), "data": cfg.data,
               "n_parameters": int(sum(p.numel() for p in model.parameters()))}
    if simulate:
        # what this process rendered (a resumed run counts from where it resumed), every stamp accounted for
        metrics.update({"n_train": int(fresh.counts[USED]),
                        "train_rows": {"rendered": int(sum(fresh.counts.values())), "used": int(fresh.counts[USED]),
                                       "excluded": {BELOW_MIN_SNR: int(fresh.counts[BELOW_MIN_SNR]), SURPLUS: int(fresh.counts[SURPLUS])},
                                       "min_arc_snr": cfg.min_arc_snr, "min_arc_snr_column": cfg.min_arc_snr_column,
                                       "balance_classes": cfg.balance_classes,
                                       "host_kind_repeat": dict(cfg.host_kind_repeat), "block_stamps": fresh.steps_per_block * per_rank, "from_step": start},
                        "train_label_balance": fresh.positive_fraction})
    else:
        metrics.update({"n_train": len(train_split),
                        "train_rows": {"used": int(len(unique_rows)), "excluded": excluded, "min_arc_snr": cfg.min_arc_snr,
                                       "min_arc_snr_column": cfg.min_arc_snr_column,
                                       "epoch_rows": int(len(train_rows)), "balance_classes": cfg.balance_classes,
                                       "balance_by": list(cfg.balance_by), "host_kind_repeat": dict(cfg.host_kind_repeat)},
                        "train_label_balance": float(train_split.labels[train_rows].mean())})
    if start < total:  # a timing: beside the (deterministic) metrics, kept with the checkpoints it describes
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
        rate = throughput_record(images, elapsed, stop - start, world, name, flops_per_image)
        atomic.write_json(out_dir / THROUGHPUT_FILE, rate)
        peak = f", {rate['fraction_of_peak']:.1%} of its bf16 peak" if rate["fraction_of_peak"] is not None else ""
        print(f"train {cfg.arch}: {stop - start} steps, {rate['images_per_s']:.0f} images/s on {name} x {world} "
              f"({rate['train_gflop_per_image']} GFLOP per image, {rate['achieved_tflops']} TFLOP/s{peak})")
    return metrics
