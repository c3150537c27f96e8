"""The training loop: one arch, single process or one rank of a torchrun DDP job.

Read ``train`` top to bottom: open the batch source of ``train.data`` (``dhs.finder.batches``:
the cached train split, or batches rendered by the simulated survey) and the val split; build
the model; resume from ``checkpoint_last.pt`` if its params hash matches and the run it holds is
unfinished; then for every step take the source's batch of that step (augmented on the device,
with core dropout if ``norm.core_dropout_p`` > 0: training only, see ``dhs.models.loader``) and
an AdamW step under a warmup + cosine schedule with gradient clipping (``step``); at each epoch
end evaluate the whole val split, keep ``checkpoint_best.pt`` (lowest val loss) and
``checkpoint_last.pt`` (``end_of_epoch``).

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
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from dhs import atomic, codebase
from dhs.evaluation.auc import auroc
from dhs.finder.batches import Batch, BatchSource, Placement, extra_inputs, open_batches
from dhs.finder.curves import write_curves
from dhs.finder.rows import training_rows
from dhs.finder.throughput import throughput_record
from dhs.imaging.cache import CachedSplit, open_split
from dhs.models.checkpoint import TrainingError, load_checkpoint, metadata_matrix, save_checkpoint, standardise
from dhs.models.colours import split_host_colours
from dhs.models.heads import split_outputs
from dhs.models.loader import NormalisedSplit, NormConfig, iterate_batches
from dhs.models.registry import build_model
from dhs.models.spec import ModelSpec
from dhs.params import ParamsError, checked
from dhs.params.rules import check_metadata_columns
from dhs.params.schema import ARCHS
from dhs.params.views import view
from dhs.simulate.config import SimConfig

STEM_ARCHS = ("resnet18", "hybrid")   # the archs built on a ResNet trunk, which train.stem shapes (dhs.models)

PRESETS = {
    # the seed's recommended production configuration (SEED-phase5-plan.md)
    "production": {"epochs": 5, "steps_per_epoch": 5000, "batch_size": 256, "lr": 3e-4, "weight_decay": 1e-4},
    "demo": {},
}


@dataclass(frozen=True)
class TrainConfig:
    """A view of the ``train`` section of params.yaml for one arch (each key, its default and its
    check in dhs.params.schema); ``arch`` is given by the caller."""
    SECTION: ClassVar[str] = "train"
    arch: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float
    seed: int
    stem: str
    hybrid_metadata: tuple[str, ...]
    eval_batch_size: int
    nproc: int
    device: str
    record_rows: bool
    colour_conditioning: bool          # host g-r, r-z from the stamp as extra inputs (dhs.models.heads)
    theta_head: bool                   # second output regressing theta_E on injections (masked on controls)
    theta_loss_weight: float           # weight of the Huber loss on theta_E [arcsec] beside the BCE
    min_arc_snr: float                 # train on injections with <min_arc_snr_column> >= this (and every control); 0 = all
    min_arc_snr_column: str            # arc_snr (peak pixel) | arc_snr_int (matched filter: what a person sees)
    balance_classes: bool              # repeat the training injections to about as many as the controls
    balance_by: tuple[str, ...]        # ... within each cell of these columns' tercile bins (cache data)
    host_kind_repeat: Mapping[str, int]  # rows on hosts of a kind taken k times
    preload: str                       # normalise the train and val rows once and keep them on the device: auto | on | off
    preload_max_gb: float              # auto preloads when both splits take at most this much
    data: str                          # cache: the cached train split | simulate: batches rendered on the fly (dhs.finder.fresh)
    simulate_block_stamps: int         # data simulate: stamps rendered at once (part of the trajectory)

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, arch: str, source: str = "params.yaml") -> "TrainConfig":
        """The ``train`` section (checked by dhs.params.schema) for one arch: the common values,
        then ``overrides[arch]``, then the preset (the production preset is the seed's
        configuration and wins over the demo's per-arch values)."""
        v = checked("train", p, source)
        if arch not in ARCHS:
            raise ParamsError(f"{source}: unknown arch {arch!r}; the archs are {list(ARCHS)}")
        cfg = view(cls, {**v, **(v["overrides"].get(arch) or {}), **PRESETS[v["preset"]]}, source, arch=arch)
        if arch == "hybrid":
            try:
                check_metadata_columns(cfg.hybrid_metadata)
            except ValueError as exc:
                raise ParamsError(f"{source}: train.hybrid_metadata: {exc}") from None
        return cfg

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


# the modules a training run starts from: the loop and the batch sources
TRAINING_MODULES = ("dhs/finder/training.py", "dhs/finder/batches.py")
# files those modules import that do not define the trajectory, and why (a path ending in / is a package)
NOT_TRAJECTORY = {
    "dhs/__init__.py": "the version and the module map",
    "dhs/atomic.py": "how outputs are written",
    "dhs/codebase.py": "which files are hashed here",
    "dhs/devices.py": "which device trains (train.device is no part of the params hash either)",
    "dhs/errors.py": "the classes of the errors a stage reports",
    "dhs/finder/curves.py": "the dvclive curves, rebuilt whole from the checkpoint",
    "dhs/finder/throughput.py": "the timing beside the checkpoints",
    "dhs/params/": "the schema: the checked values it gives are in the params hash themselves",
    "dhs/simulate/": "the renderer: rendered batches' fingerprint holds its code (dhs.finder.fresh); cached batches never run it",
}


def trajectory_files(root: Path = codebase.ROOT) -> list[str]:
    """The files whose code defines a training run's trajectory, as sorted paths relative to
    ``root``: every file of dhs/ that the training modules may import (``dhs.codebase.closure``,
    imports inside functions included), less ``NOT_TRAJECTORY``."""
    files = set().union(*(codebase.closure(root / m, root) for m in TRAINING_MODULES))
    rel = sorted(f.relative_to(root).as_posix() for f in files)
    return [f for f in rel if f.startswith("dhs/") and not any(f == k or (k.endswith("/") and f.startswith(k)) for k in NOT_TRAJECTORY)]


def _source_digest(root: Path = codebase.ROOT) -> str:
    """sha256 of the code that defines the trajectory: for each of ``trajectory_files`` in sorted
    order, its path relative to the repository, a NUL byte and the file's bytes. A change to any
    of them retrains instead of resuming or rebuilding a run from its checkpoint."""
    h = hashlib.sha256()
    for rel in trajectory_files(root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
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


@dataclass
class RunState:
    """What ``checkpoint_last.pt`` carries from one run of the loop to the next."""
    step: int = 0                                                              # optimiser steps taken
    best: dict = dataclasses.field(default_factory=lambda: {"loss": float("inf")})  # the best epoch so far
    history: list[dict] = dataclasses.field(default_factory=list)              # one record per epoch
    curve: list[list[float]] = dataclasses.field(default_factory=list)         # [step, train loss, lr] every CURVE_EVERY steps


class Checkpoints:
    """``checkpoint_best.pt`` and ``checkpoint_last.pt`` of one run in ``out_dir``: each holds
    the params hash ``phash``, the hybrid's metadata statistics and the normalisation."""

    def __init__(self, out_dir: Path, spec: ModelSpec, phash: str, meta_stats: Mapping | None, norm: NormConfig):
        self.dir, self.spec, self.phash = out_dir, spec, phash
        self.last, self.best = out_dir / "checkpoint_last.pt", out_dir / "checkpoint_best.pt"
        self.extra = {"meta_stats": json.dumps(meta_stats), "norm": json.dumps(dataclasses.asdict(norm))}

    def resume(self, model: torch.nn.Module, opt, total: int, arch: str, rank: int) -> RunState:
        """The state to start from: that of ``checkpoint_last.pt`` (weights and optimiser loaded
        into ``model`` and ``opt``) when it was made with these params and, if finished, its best
        checkpoint is there; a fresh one otherwise."""
        say = print if rank == 0 else (lambda *_: None)
        if not self.last.exists():
            return RunState()
        ckpt = load_checkpoint(self.last, self.spec)
        if ckpt["params_hash"] != self.phash:
            say(f"train {arch}: {self.last} was made with other params; starting afresh")
            return RunState()
        if int(ckpt["step"]) >= total and not self.best.exists():
            say(f"train {arch}: {self.last} is a finished run but {self.best.name} is missing; training again")
            return RunState()
        # a finished run (DVC reran the stage for a key that does not change the trajectory:
        # train.archs, eval_batch_size, device, ...) rebuilds its outputs without training;
        # an unfinished one resumes. Either way the curves come whole from the checkpoint.
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = RunState(int(ckpt["step"]), ckpt.get("best", RunState().best), json.loads(ckpt.get("history", "[]")),
                         json.loads(ckpt.get("curve", "[]")))
        say(f"train {arch}: {self.last} is a finished run with these params; outputs rebuilt from it, no training"
            if state.step >= total else f"train {arch}: resuming from {self.last} at step {state.step}/{total}")
        return state

    def save(self, model: torch.nn.Module, opt, state: RunState, improved: bool) -> None:
        """``checkpoint_best.pt`` when this epoch is the best yet (``improved``), and ``checkpoint_last.pt``."""
        if improved:
            save_checkpoint(self.best, model, None, state.step, self.spec, self.phash, {**self.extra, "best": state.best})
        save_checkpoint(self.last, model, opt, state.step, self.spec, self.phash,
                        {**self.extra, "best": state.best, "history": json.dumps(state.history), "curve": json.dumps(state.curve)})


class Validation:
    """The val split a run is selected on: loss and AUC of every stamp, and with a training
    selection (``train.min_arc_snr``, ``train.balance_classes``) on the rows that selection keeps,
    whose loss picks the best checkpoint (an invisible arc in the loss only rewards timid scores)."""

    def __init__(self, split: CachedSplit, spec: ModelSpec, meta_stats: Mapping | None, cfg: TrainConfig, norm: NormConfig,
                 at: Placement):
        self.split, self.inputs, self.cfg, self.norm, self.at = split, split, cfg, norm, at
        self.colours = split_host_colours(split) if spec.colour else None
        meta = metadata_matrix(split.meta, spec.metadata, where="split val")
        self.meta = None if meta is None else standardise(meta, meta_stats)
        self.selected = None
        if cfg.min_arc_snr > 0 or cfg.balance_classes:
            self.selected = training_rows(split.meta, split.labels, cfg.min_arc_snr, cfg.min_arc_snr_column)[0]

    def preload_nbytes(self) -> int:
        return NormalisedSplit.nbytes(self.split, len(self.split))

    def preload(self, desc: str | None) -> None:
        self.inputs = NormalisedSplit(self.split, self.norm, self.at.device, None, self.cfg.eval_batch_size, desc=desc)

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        return evaluate(model, self.inputs, self.norm, self.at.device, self.cfg.eval_batch_size, self.meta, self.at.amp, self.colours,
                        self.selected, self.cfg.balance_classes)


def build(spec: ModelSpec, cfg: TrainConfig, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model, initialised from ``train.seed``, and its AdamW. The global numpy state is
    seeded too: checkpoints keep it, so it must be a function of the seed."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    # channels_last: faster convolutions on GPU (bf16 tensor cores) and on CPU (oneDNN) alike
    model = build_model(spec).to(device).to(memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def preload(cfg: TrainConfig, val: Validation, source: BatchSource, show: bool) -> None:
    """Normalise the val stamps and the train rows once, on the device, when ``train.preload`` is
    on, or auto and both fit in ``train.preload_max_gb`` (normalisation is a function of the stamp
    alone: once, not once per epoch)."""
    need = val.preload_nbytes() + source.preload_nbytes()
    if cfg.preload == "on" or (cfg.preload == "auto" and need <= cfg.preload_max_gb * 2**30):
        val.preload(f"train {cfg.arch}: preprocessing val" if show else None)
        source.preload(f"train {cfg.arch}: preprocessing train" if show else None)


def stop_step(start: int, total: int, steps_per_epoch: int, max_steps: int | None) -> int:
    """Where this run stops: the end of training, or with ``max_steps`` an epoch boundary (where
    checkpoint_last.pt is written) at most that many steps on, and at least one epoch on."""
    if max_steps is None:
        return total
    return min(total, max(start + steps_per_epoch, (start + max_steps) // steps_per_epoch * steps_per_epoch))


class NonFiniteWatch:
    """A non-finite loss, caught without a host sync per step on an accelerator: the first bad
    step is kept on the device and read every ``NONFINITE_CHECK_EVERY`` steps, at epoch ends and
    at the last step, and the error names that step and its batch."""

    def __init__(self, device: torch.device, steps_per_epoch: int, stop: int):
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.every = NONFINITE_CHECK_EVERY.get(device.type, NONFINITE_CHECK_EVERY["default"])
        self.steps_per_epoch, self.stop = steps_per_epoch, stop
        self.recent: dict[int, tuple] = {}

    def check(self, step: int, batch: Batch, loss: torch.Tensor) -> None:
        self.first_bad = torch.where(torch.isfinite(loss.detach()) | (self.first_bad >= 0), self.first_bad, step)
        self.recent[step] = (batch.rows, batch.ids, loss.detach())
        if (step + 1) % self.every == 0 or (step + 1) % self.steps_per_epoch == 0 or step + 1 == self.stop:
            bad = int(self.first_bad)
            if bad >= 0:
                rows, ids, loss = self.recent[bad]
                raise TrainingError(f"non-finite loss {loss.item()} at step {bad} (epoch {bad // self.steps_per_epoch}, batch rows "
                                    f"{rows[:5].tolist()}..., task_ids {ids.iloc[:5].tolist()}...); check the inputs and lower train.lr")
            self.recent.clear()


def step(net: torch.nn.Module, opt, batch: Batch, lr: float, cfg: TrainConfig, amp: bool) -> torch.Tensor:
    """One AdamW step on ``batch`` at learning rate ``lr``, the gradients' norm clipped to
    ``train.grad_clip`` (0: not clipped); returns the batch's loss (on the device)."""
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast(batch.x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits, theta_pred = split_outputs(net(batch.x, *batch.extras))
        loss = training_loss(logits, batch.y, theta_pred, batch.theta, cfg.theta_loss_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    opt.step()
    return loss


def end_of_epoch(epoch: int, state: RunState, loss: torch.Tensor, model: torch.nn.Module, opt, val: Validation,
                 ckpts: Checkpoints, live_dir: Path | None, bar, at: Placement) -> None:
    """Rank 0 evaluates the val split, records the epoch, keeps the checkpoints (the best by the
    loss of what the model is trained to tell apart) and writes the curves; every rank waits."""
    if at.rank == 0:
        v = val(model)
        crit = v.get("loss_selected", v["loss"])
        state.history.append({"epoch": epoch, "step": state.step, "val_loss": v["loss"], "val_auc": v["auc"], "train_loss": loss.item(),
                              **({"val_loss_selected": v["loss_selected"], "val_auc_selected": v["auc_selected"]} if "loss_selected" in v else {})})
        bar.set_postfix(val_loss=f"{v['loss']:.4f}", val_auc=f"{v['auc']:.4f}")
        improved = crit < state.best["loss"]
        if improved:
            state.best = {"loss": crit, "auc": v.get("auc_selected", v["auc"]), "auc_all": v["auc"], "epoch": epoch, "step": state.step}
        ckpts.save(model, opt, state, improved)
        if live_dir is not None:  # progress a person can watch (dvc plots show), once an epoch
            write_curves(live_dir, state.curve, state.history)
    if at.distributed:
        dist.barrier()


def test_at_best(model: torch.nn.Module, ckpts: Checkpoints, cache_dir: str | Path, norm: NormConfig, cfg: TrainConfig,
                 at: Placement, meta_stats: Mapping | None) -> dict:
    """The test metrics of the best checkpoint; {} without it or without a test split (an
    evaluation set may have none). Kept in ``TEST_FILE`` beside it under its sha256 and the test
    split's digest, so that rebuilding a finished run's outputs does not score the test split again."""
    test_split = open_split(cache_dir, "test") if (Path(cache_dir) / "test" / "images.npy").exists() else None
    if test_split is None or not ckpts.best.exists() or not len(test_split):
        return {}
    memo = ckpts.dir / TEST_FILE
    key = {"checkpoint_sha256": atomic.file_sha256(ckpts.best),
           "test_sha256": [atomic.file_sha256(Path(cache_dir) / rel) for rel in ("manifest.json", "test/meta.parquet", "test/images.npy")
                           if (Path(cache_dir) / rel).exists()]}
    if memo.exists():
        try:
            kept = json.loads(memo.read_text())
            if {k: kept.get(k) for k in key} == key and isinstance(kept.get("test"), dict):
                return kept["test"]
        except (OSError, ValueError):
            pass
    print(f"train {cfg.arch}: scoring the {len(test_split)} test stamps with {ckpts.best.name}", flush=True)
    model.load_state_dict(load_checkpoint(ckpts.best, ckpts.spec)["model"])
    meta_test = metadata_matrix(test_split.meta, ckpts.spec.metadata, where="split test")
    if meta_test is not None:
        meta_test = standardise(meta_test, meta_stats)
    col_test = split_host_colours(test_split) if ckpts.spec.colour else None
    test = evaluate(model, test_split, norm, at.device, cfg.eval_batch_size, meta_test, at.amp, col_test)
    atomic.write_json(memo, {**key, "test": test})
    return test


def write_rows_record(out_dir: Path, rank: int, seen: list[np.ndarray], model: torch.nn.Module) -> None:
    """``train.record_rows``: the rows this rank trained on and the sha256 of its final weights."""
    np.save(out_dir / f"seen_rank{rank}.npy", np.concatenate(seen) if seen else np.array([], dtype=np.int64))
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).hexdigest()
    (out_dir / f"weights_rank{rank}.sha256").write_text(digest + "\n")


def write_throughput(out_dir: Path, arch: str, at: Placement, images: int, elapsed_s: float, steps: int,
                     flops_per_image: float | None) -> None:
    """The timing of the steps this run took (beside the deterministic metrics, kept with the
    checkpoints it describes), and a line saying it."""
    name = torch.cuda.get_device_name(at.device) if at.device.type == "cuda" else at.device.type
    rate = throughput_record(images, elapsed_s, steps, at.world, name, flops_per_image)
    atomic.write_json(out_dir / THROUGHPUT_FILE, rate)
    peak = f", {rate['fraction_of_peak']:.1%} of its bf16 peak" if rate["fraction_of_peak"] is not None else ""
    print(f"train {arch}: {steps} steps, {rate['images_per_s']:.0f} images/s on {name} x {at.world} "
          f"({rate['train_gflop_per_image']} GFLOP per image, {rate['achieved_tflops']} TFLOP/s{peak})")


def train(cfg: TrainConfig, cache_dir: str | Path, out_dir: str | Path, norm: NormConfig, augment: bool,
          live_dir: str | Path | None = None, progress: bool = True, max_steps: int | None = None,
          sim: SimConfig | None = None) -> dict:
    """Train one arch; returns the metrics dict (rank 0) or {} (other ranks).

    ``max_steps`` ends this run after that many steps at the latest, stopping at the last
    epoch boundary (so checkpoint_last.pt is the place to resume from), for time-boxed jobs.
    ``sim``: the simulated survey that renders every batch when ``cfg.data`` is ``simulate``.
    """
    at = Placement.here(cfg.device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source, val_split = open_batches(cfg, cache_dir, sim, norm, augment, at)
    val = Validation(val_split, source.spec, source.meta_stats, cfg, norm, at)
    model, opt = build(source.spec, cfg, at.device)
    ckpts = Checkpoints(out_dir, source.spec, cfg.params_hash(norm, augment, cache_digest(cache_dir) + source.fingerprint()),
                        source.meta_stats, norm)
    total = cfg.epochs * cfg.steps_per_epoch
    state = ckpts.resume(model, opt, total, cfg.arch, at.rank)
    net = at.parallel(model)
    start, stop = state.step, stop_step(state.step, total, cfg.steps_per_epoch, max_steps)
    if start < stop:  # not at all for a finished run
        preload(cfg, val, source, progress and at.rank == 0)
    watch = NonFiniteWatch(at.device, cfg.steps_per_epoch, stop)
    bar = tqdm(total=total, initial=start, desc=f"train {cfg.arch}", unit="step", disable=not progress or at.rank != 0)
    t0, images, flops_per_image = time.perf_counter(), 0, None
    model.train()
    for s in range(start, stop):  # s: the optimiser step, the x axis of every curve
        # dropout and stochastic depth (EfficientNet, ConvNeXt) draw from the global RNG: make it
        # a function of (seed, step, rank) so a resumed run draws what the straight run drew
        torch.manual_seed((cfg.seed * 1_000_003 + s) * 1_009 + at.rank)
        batch = source.batch(s)
        if s == start:
            flops_per_image = training_flops(model, batch.x, batch.extras, at.amp) / max(1, len(batch.rows))
        loss = step(net, opt, batch, lr_at(s, cfg), cfg, at.amp)
        watch.check(s, batch, loss)
        images += len(batch.rows) * at.world
        state.step = s + 1
        bar.update(1)
        if at.rank == 0 and s % CURVE_EVERY == 0:
            state.curve.append([s, loss.item(), lr_at(s, cfg)])
        if state.step % cfg.steps_per_epoch == 0:
            end_of_epoch(state.step // cfg.steps_per_epoch, state, loss, model, opt, val, ckpts, live_dir, bar, at)
    bar.close()
    elapsed_s = time.perf_counter() - t0
    if cfg.record_rows:
        write_rows_record(out_dir, at.rank, source.seen, model)
    if at.rank != 0:
        return {}
    if live_dir is not None:
        write_curves(live_dir, state.curve, state.history)
    metrics = {"arch": cfg.arch, "stamp_size": source.spec.stamp_size, "steps": total, "epochs": cfg.epochs,
               "batch_size": cfg.batch_size, "world_size": at.world, "device": at.device.type, "params_hash": ckpts.phash,
               "best": state.best, "history": state.history,
               "test_at_best": test_at_best(model, ckpts, cache_dir, norm, cfg, at, source.meta_stats),
               "completed": stop == total, "n_val": len(val_split), "data": cfg.data,
               "n_parameters": int(sum(p.numel() for p in model.parameters())), **source.accounting(start)}
    if start < total:
        write_throughput(out_dir, cfg.arch, at, images, elapsed_s, stop - start, flops_per_image)
    return metrics
