"""Checkpoints: the one place they are written, loaded, checked and turned back into a model.

A checkpoint (``data/models/{arch}/checkpoint_{best,last}.pt``) holds the weights, the model's
spec (``dhs.models.spec.ModelSpec``: arch, stamp size, stem, hybrid metadata, heads), the
normalisation it was trained with, the hybrid's metadata statistics, the step, the params hash
and (``last``) the optimiser and RNG state. Loading is ``weights_only`` (no code runs) and
refuses a checkpoint made for another arch or stamp size. Every way a load can fail (a file
holding code, which the weights-only load refuses; a truncated or damaged file; a dict
lacking a key; another arch) is one ``CheckpointError`` naming the file and what to do.
``set_aside_unusable`` moves a ``checkpoint_last.pt`` that cannot be resumed out of the model
directory (to ``<models>/unusable/<arch>/``) so training starts afresh instead of failing
until someone deletes it. ``load_trained`` gives the model in
eval mode with everything inference needs (``TrainedModel``), so the infer stage, the gates and
the known-lens stage all see a model exactly as training left it.

The hybrid's metadata inputs are prepared here, once, for training and every consumer:
``metadata_matrix`` reads the columns (NaN where missing or infinite) and ``standardise`` applies
the train statistics stored in the checkpoint (missing values become the train mean, 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dhs import atomic, devices
from dhs.errors import StageError
from dhs.models.loader import NormConfig
from dhs.models.heads import split_outputs
from dhs.models.registry import build_model
from dhs.models.spec import ModelSpec


class TrainingError(StageError, RuntimeError):
    """A model could not be trained, restored from its checkpoint or scored."""


class CheckpointError(TrainingError):
    """A checkpoint file that cannot be used; the message names the file and what to do."""

    def __init__(self, path: Path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


# what every checkpoint this pipeline writes holds (save_checkpoint); a resumable one also the optimiser
REQUIRED_KEYS = ("model", "spec", "step", "params_hash")
RESUME_KEYS = ("optimizer",)


def _refusal(exc: BaseException) -> str:
    """The reason torch gives for refusing a pickle, without its advice to load it unsafely."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [ln for ln in lines if "weights_only" not in ln and "PyTorch 2.6" not in ln and "documentation" not in ln]
    reason = keep[0] if keep else type(exc).__name__
    return reason.split(". ")[0].rstrip(".")[:200]


# train.device (or a scoring device) -> a torch device: the project's one rule (dhs.devices); auto is
# cuda:<local_rank> (a DDP rank passes its own), refused as a TrainingError
resolve_device = partial(devices.resolve_device, local_rank=0, key="train.device", error=TrainingError)


def metadata_matrix(meta: pd.DataFrame | None, columns: Sequence[str], n: int | None = None,
                    where: str | None = None) -> np.ndarray | None:
    """(N, M) float32 observing-condition columns for the hybrid, NaN where missing or infinite
    (imputed with the train mean after ``standardise``); None when there are no columns.

    A column absent from ``meta`` is an error naming ``where`` (a cached split: training and
    inference), or, without ``where``, all NaN (cutouts and probes, which carry no conditions)."""
    if not columns:
        return None
    n = len(meta) if n is None else n
    missing = [c for c in columns if meta is None or c not in meta.columns]
    if missing and where is not None:
        raise TrainingError(f"hybrid metadata columns {missing} are not in the cache of {where}")
    m = np.full((n, len(columns)), np.nan, np.float64)
    for j, c in enumerate(columns):
        if c not in missing:
            m[:, j] = pd.to_numeric(meta[c], errors="coerce").to_numpy(np.float64)
    m[~np.isfinite(m)] = np.nan
    return m.astype(np.float32)


def standardise(meta: np.ndarray, stats: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Standardise with the train statistics; missing values become the train mean (0)."""
    z = (meta - np.asarray(stats["mean"], np.float32)) / np.asarray(stats["std"], np.float32)
    return np.nan_to_num(z, nan=0.0).astype(np.float32)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist()}


def save_checkpoint(path: Path, model: torch.nn.Module, opt, step: int, spec: ModelSpec, params_hash: str, extra: dict) -> None:
    # a fixed temporary name: torch names the records inside the file after it, so the bytes of
    # a checkpoint are a function of its content only
    with atomic.writing(path, fixed_tmp=True) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict() if opt is not None else None, "step": step,
                    "spec": spec.as_dict(), "params_hash": params_hash, "rng": _rng_state(), **extra}, tmp)


def load_checkpoint(path: Path, spec: ModelSpec | None = None, keys: Sequence[str] = REQUIRED_KEYS) -> dict:
    """Load a checkpoint safely (weights_only) and refuse, with a ``CheckpointError`` naming the
    file and what to do, one that holds code, is truncated or damaged, lacks one of ``keys``, or
    was made for another arch or stamp size than ``spec``."""
    import pickle

    path = Path(path)
    redo = "delete it and train again (`dvc repro train`), or restore it (`dvc checkout` / `dvc pull`)"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(path, f"refused: it holds Python objects that a checkpoint of this pipeline never holds "
                                    f"({_refusal(exc)}); the file was replaced or tampered with. Do not load it: {redo}") from None
    except FileNotFoundError:
        raise CheckpointError(path, "not found; run `dvc repro train` first") from None
    except Exception as exc:  # noqa: BLE001 - zip/EOF/legacy-format errors: the file is truncated or damaged
        detail = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
        raise CheckpointError(path, f"not a readable checkpoint: truncated or damaged ({type(exc).__name__}: {detail}); "
                                    f"{redo}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(path, f"holds a {type(ckpt).__name__}, not a checkpoint of this pipeline; {redo}")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(path, f"not a complete checkpoint of this pipeline: it lacks {missing} "
                                    f"(has {sorted(map(str, ckpt))[:12]}); {redo}")
    have = ckpt["spec"] if isinstance(ckpt["spec"], dict) else {}
    if not {"arch", "stamp_size"} <= set(have):
        raise CheckpointError(path, f"its 'spec' does not name an arch and stamp size ({ckpt['spec']!r:.80}); {redo}")
    if spec is not None and (have.get("arch") != spec.arch or have.get("stamp_size") != spec.stamp_size):
        raise CheckpointError(path, f"was trained for arch={have.get('arch')} stamp_size={have.get('stamp_size')}, not "
                                    f"arch={spec.arch} stamp_size={spec.stamp_size}; delete it or point to the right model")
    return ckpt


def set_aside_unusable(model_dir: str | Path, arch: str, stamp_size: int | None) -> list[str]:
    """Before training ``arch``: move a ``checkpoint_last.pt`` that cannot be resumed (unreadable,
    refused, incomplete, another arch or stamp size) to ``<models>/unusable/<arch>/`` so that
    training starts afresh; a ``checkpoint_best.pt`` that cannot be loaded goes there too, and
    then the last one with it (a resumed run would keep a best loss whose weights are gone).
    Returns one message per file moved."""
    model_dir = Path(model_dir)
    aside = model_dir.parent / "unusable" / arch
    messages: list[str] = []
    reasons = {}
    for which, keys in (("last", REQUIRED_KEYS + RESUME_KEYS), ("best", REQUIRED_KEYS)):
        path = model_dir / f"checkpoint_{which}.pt"
        if not path.exists():
            continue
        try:
            ckpt = load_checkpoint(path, keys=keys)
            got = (ckpt["spec"].get("arch"), ckpt["spec"].get("stamp_size"))
            if got[0] != arch or (stamp_size is not None and got[1] != stamp_size):
                raise CheckpointError(path, f"was trained for arch={got[0]} stamp_size={got[1]}, not arch={arch} "
                                            f"stamp_size={stamp_size}")
        except CheckpointError as exc:
            reasons[which] = str(exc)
    if "best" in reasons and "last" not in reasons and (model_dir / "checkpoint_last.pt").exists():
        reasons["last"] = f"{model_dir / 'checkpoint_last.pt'}: set aside with the unusable checkpoint_best.pt"
    for which, why in sorted(reasons.items(), reverse=True):
        src = model_dir / f"checkpoint_{which}.pt"
        aside.mkdir(parents=True, exist_ok=True)
        dst = aside / src.name
        os.replace(src, dst)
        messages.append(f"{why.split(': ', 1)[0]} cannot be used ({why.split(': ', 1)[-1]}); moved to {dst}; "
                        f"training starts afresh")
    return messages


@dataclass
class TrainedModel:
    model: torch.nn.Module
    spec: ModelSpec
    norm: NormConfig
    meta_stats: dict | None
    device: torch.device
    checkpoint: Path
    step: int

    def meta_for(self, meta: pd.DataFrame | None, n: int, where: str | None = None) -> torch.Tensor | None:
        """Standardised hybrid metadata for ``n`` rows on the model's device (``metadata_matrix``:
        absent columns are an error naming ``where``, else imputed with the train mean)."""
        m = metadata_matrix(meta, self.spec.metadata, n, where)
        return None if m is None else torch.from_numpy(standardise(m, self.meta_stats)).to(self.device)

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
            raise TrainingError("this model is colour-conditioned: pass the host colours (dhs.models.colours)")
        args = [a for a in (meta, colours if self.spec.colour else None) if a is not None]
        out = self.model(x, *args)
        logits, theta = split_outputs(out.float())
        return logits, theta


def load_trained(model_dir: str | Path, device: str = "auto", which: str = "best", arch: str | None = None) -> TrainedModel:
    """The model of ``model_dir/checkpoint_{which}.pt`` in eval mode on ``device``; with ``arch``,
    a checkpoint holding another arch is refused."""
    path = Path(model_dir) / f"checkpoint_{which}.pt"
    if not path.exists():
        raise TrainingError(f"{path} not found; run `dvc repro train` first")
    ckpt = load_checkpoint(path)
    try:
        spec = ModelSpec.from_dict(ckpt["spec"])
        norm = NormConfig.from_params(json.loads(ckpt["norm"])) if "norm" in ckpt else NormConfig.from_params({})
        meta_stats = json.loads(ckpt["meta_stats"]) if ckpt.get("meta_stats") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(path, f"its spec or normalisation does not read ({type(exc).__name__}: {exc}); "
                                    f"delete it and train again (`dvc repro train`)") from None
    if arch is not None and spec.arch != arch:
        raise CheckpointError(path, f"holds a {spec.arch} model, not {arch}; delete it and train {arch} again")
    if spec.metadata and meta_stats is None:
        raise CheckpointError(path, "a hybrid checkpoint without its metadata statistics; retrain it")
    dev = resolve_device(device)
    model = build_model(spec)
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CheckpointError(path, f"its weights do not fit a {spec.arch} model ({detail}); delete it and train again "
                                    f"(`dvc repro train`)") from None
    model = model.to(dev).to(memory_format=torch.channels_last).eval()
    return TrainedModel(model, spec, norm, meta_stats, dev, path, int(ckpt.get("step", -1)))
