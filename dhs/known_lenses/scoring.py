"""Score known-lens cutouts with a trained model, exactly as training saw stamps.

``dhs.models.inference.load_trained`` restores the checkpoint with its normalisation (annulus
statistics measured per cutout, the training clip) and ``score_images`` applies it to the
(N, 3, S, S) nMgy cubes, so a real cutout is treated like a cached training stamp. Cutouts
larger than the model's stamp are centre-cropped (the lens stays on the central pixel: the size
difference must be even); smaller ones are refused. Hybrid models get no per-lens observing
conditions here: their metadata is imputed with the training mean, as training does for
missing values.

torch is imported only when scoring, so a run without cutouts stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dhs.errors import StageError


class ScoringError(StageError, ValueError):
    pass


def score_table_finder(model_dir: str | Path) -> str | None:
    """Why the finder of ``model_dir`` cannot score cutouts (it is a score table), or None."""
    from dhs.models.checkpoint import load_checkpoint
    from dhs.models.external import is_external

    path = Path(model_dir) / "checkpoint_best.pt"
    if not path.exists():
        return None
    ckpt = load_checkpoint(path)
    if is_external(ckpt) and json.loads(ckpt["external"]).get("format") == "scores":
        return (f"finder {Path(model_dir).name} is a score table: it scores only the stamps it lists, not known-lens cutouts; "
                f"declare its model file to measure its recall on known lenses")
    return None


@dataclass
class Scored:
    logits: np.ndarray           # float64, one per cutout
    checkpoint: Path
    step: int
    normalisation: str
    stamp_size: int
    device: str


def centre_crop(images: np.ndarray, size_px: int) -> np.ndarray:
    """The central ``size_px`` x ``size_px`` of (N, 3, S, S) images."""
    from dhs.imaging.geometry import centre_crop as crop

    out = crop(images, size_px)
    if out is not None:
        return out
    s = images.shape[-1]
    raise ScoringError(f"cutouts are {s}x{s} px but the model takes {size_px}x{size_px}: set known_lenses.size_px to "
                       f"{size_px} (or a larger size differing by an even number) and rerun `dvc repro cutouts`")


def score_cutouts(model_dir: str | Path, arch: str, images_nmgy: np.ndarray, device: str = "auto",
                  batch_size: int = 256) -> tuple[Scored, np.ndarray]:
    """(model logits and provenance, the images as scored) for (N, 3, S, S) nMgy cutouts."""
    from dhs.models.checkpoint import TrainingError
    from dhs.models.external import ExternalFinder
    from dhs.models.inference import load_finder, score_images, stamp_size

    try:
        tm = load_finder(model_dir, device, arch=arch)
        size = stamp_size(tm)
        images = centre_crop(images_nmgy, size)
        logits = score_images(tm, images, batch_size=batch_size)
    except TrainingError as exc:
        raise ScoringError(str(exc)) from None
    label = tm.preprocess_label if isinstance(tm, ExternalFinder) else tm.norm.mode
    return Scored(logits, tm.checkpoint, tm.step, label, size, tm.device.type), images


def checkpoint_mismatch(calibrator, checkpoint: Path) -> str | None:
    """A warning when the calibrator records another checkpoint's SHA-256 than ``checkpoint``."""
    from dhs.atomic import file_sha256

    want = getattr(calibrator, "checkpoint_sha256", "")
    if want and want != file_sha256(checkpoint):
        return f"the calibrator was fitted for another checkpoint than {checkpoint}; rerun `dvc repro calibration`"
    return None
