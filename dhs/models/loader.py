"""Reading the cache for training and inference: sharding, normalisation, augmentation.

Normalisation (``NormConfig``), applied batched in torch on whatever device holds the batch:

- ``annulus_common`` (default): per stamp, subtract each band's median in an outer annulus
  (the sky level, far from host core and arc) and divide all bands by one robust scale, the
  MAD x 1.4826 of the pooled annulus pixels. One scale for g, r and z keeps the inter-band
  flux ratios, i.e. the arc's colour (per-band scaling discards it: docs/conventions.md,
  shortcuts). Statistics
  come from the annulus, never from the centre, whose brightness carries the label.
- ``annulus_per_band``: each band scaled by its own annulus MAD (for comparison).
- ``none``: raw nMgy.
Optionally (``radial_profile_subtract``), after scaling: per stamp and band, subtract the
azimuthal median profile (median of each integer-radius annulus, linearly interpolated in
radius) about the host's centre as measured on the stamp (``radial_profile_centre: host``,
``dhs.imaging.centring``) or about the stamp centre (``stamp``, the earlier behaviour). A round
host vanishes and what is left is non-axisymmetric structure: arcs, companions, the quadrupole
of an elliptical host. The median (not the mean) keeps an arc that covers a minority of its
annulus. It also removes the axisymmetric part of the central brightness, the core-brightness
shortcut (docs/conventions.md, shortcuts). About the stamp centre, a host half a pixel off
leaves a dipole in the core that a finder reads as a lens; catalogue cutouts put hosts at
arbitrary sub-pixel positions, so the measured centre is the default.
Then values are clipped to +-``clip`` (20: a clip at 10 flattened bright arcs).

Input (``input``): ``residual`` gives the network that one (3, H, W) view. ``raw_and_residual``
gives (6, H, W): first the annulus-normalised stamp before the host's removal, asinh-stretched,
asinh(x / ``raw_softening``) (sky noise near-linear, a host core of 1000 noise units ~6.5), then
the host-subtracted view above. A removal that takes part of an arc or ring with the host (an
arc covering most of its annulus moves the annulus' median) leaves the raw view intact; raw and
subtracted images together do better than either (Ishida et al. 2024, arXiv 2411.07492).

Core dropout (``core_dropout_p``, ``core_dropout_radius_px``; training only): with
probability p per stamp, the central disc r_px <= radius of the normalised image is replaced by
Gaussian noise with each band's sky median and robust sigma measured in the normalisation
annulus, so the network cannot rely on the centre alone. It is applied only by
``iterate_batches(..., training=True)`` (the training loop), never by ``normalize``, evaluation
or inference; it is part of ``NormConfig`` so the checkpoint records how the model was trained.

Shifts (``shift_px``; training only, like core dropout): each stamp is rolled by a random whole
number of pixels in [-shift_px, shift_px] per axis (circular: a few edge pixels wrap), so the
network meets hosts off the stamp centre by more than the data's own sub-pixel and centroid
scatter and cannot key on the exact centre (the shift gate checks it).

Augmentation: the 8 rotations/flips of the square, one per stamp, as a single gather, so it
runs batched on the GPU. The stamp centre (N-1)/2 is fixed under all of them.

Sharding: ``shard_indices`` splits row indices over (rank, worker) without padding, so every
row is seen exactly once per epoch across all ranks and workers (a padding sampler duplicates
rows and corrupts completeness counts: docs/conventions.md, evaluation rules).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from dhs.imaging.cache import CachedSplit, annulus_mask_np
from dhs.params import checked
from dhs.params.views import view
from dhs.imaging.centring import MAD_TO_SIGMA, subtract_radial_profile_about_host
from dhs.imaging.geometry import annulus_table, core_mask


@dataclass(frozen=True)
class NormConfig:
    """A view of the normalisation keys of the ``preprocess`` section (each key, its default and
    its check in dhs.params.schema; ``augment`` is the loader's, not the normalisation's). A
    checkpoint records it whole; ``NormConfig.from_params({})`` is the schema's default."""
    SECTION: ClassVar[str] = "preprocess"
    mode: str
    clip: float
    annulus_inner_frac: float  # of the half-width: 20.8 px of 32 for 64x64 stamps
    annulus_outer_frac: float
    radial_profile_subtract: bool  # subtract the azimuthal median profile (inference too)
    radial_profile_centre: str  # about the measured host centre | about the stamp centre ("stamp")
    radial_profile_shape: str  # circle | ellipse: annuli of the host's measured shape (centre "host" only)
    radial_profile_statistic: str  # median | low_quantile: the host level of an annulus from its lower tail (ellipse only)
    residual_noise_scale: bool  # after the subtraction, divide by the noise measured on the residual
    residual_noise_profile: bool  # then each annulus by its own residual scatter where it exceeds that noise
    input: str  # residual: the stamp after the host's removal | raw_and_residual: also the raw stamp
    raw_softening: float  # raw view: asinh(x / this), x the annulus-normalised stamp (noise units)
    shift_px: int  # training only: random whole-pixel shifts up to this per axis
    core_dropout_p: float  # training only: probability per stamp of replacing the core by noise
    core_dropout_radius_px: float  # training only: radius of that core disc, pixels

    @property
    def channels(self) -> int:
        """Input channels of the network: 3 (one g, r, z view) or 6 (raw and host-subtracted)."""
        return 6 if self.input == "raw_and_residual" else 3

    @classmethod
    def from_params(cls, p: Mapping[str, Any], source: str = "params.yaml") -> "NormConfig":
        """The normalisation keys of the ``preprocess`` section (checked by dhs.params.schema)."""
        return view(cls, p, source)


def annulus_mask(size: int, inner_frac: float, outer_frac: float, device=None) -> torch.Tensor:
    return torch.from_numpy(annulus_mask_np(size, inner_frac, outer_frac)).to(device)


def normalize(x: torch.Tensor, cfg: NormConfig, stats: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W) nMgy -> normalised float32, clipped to +-cfg.clip.

    ``stats`` (B, 7): annulus medians, pooled MAD and per-band MADs measured when the cache was
    built (``dhs.imaging.cache.STATS_COLUMNS``); with them normalising is one subtract and one scale.
    With ``cfg.radial_profile_subtract`` the azimuthal median profile is subtracted before the clip.
    Core dropout is never applied here (training only: ``iterate_batches(training=True)``).
    """
    x = x.float()
    if cfg.mode != "none" and stats is not None:
        med = stats[:, 0:3]
        mad = stats[:, 3:4] if cfg.mode == "annulus_common" else stats[:, 4:7]
        inv = 1.0 / (mad * MAD_TO_SIGMA).clamp_min(1e-12)
        x = x.sub(med[..., None, None]).mul_(inv[..., None, None])  # never modifies the caller's tensor
    elif cfg.mode != "none":
        mask = annulus_mask(x.shape[-1], cfg.annulus_inner_frac, cfg.annulus_outer_frac, x.device)
        ring = x[..., mask]  # (B, C, P)
        med = ring.median(dim=-1).values  # (B, C)
        dev = (ring - med[..., None]).abs()
        if cfg.mode == "annulus_common":
            scale = dev.flatten(1).median(dim=1).values[:, None] * MAD_TO_SIGMA  # (B, 1)
        else:
            scale = dev.median(dim=-1).values * MAD_TO_SIGMA  # (B, C)
        x = (x - med[..., None, None]) / scale.clamp_min(1e-12)[..., None, None]
    raw = torch.asinh(x / cfg.raw_softening) if cfg.input == "raw_and_residual" else None
    if cfg.radial_profile_subtract:
        local = None
        if cfg.radial_profile_centre == "host" and cfg.residual_noise_profile:
            x, local = subtract_radial_profile_about_host(x, shape=cfg.radial_profile_shape, with_noise=True,
                                                          statistic=cfg.radial_profile_statistic)
        elif cfg.radial_profile_centre == "host":
            x = subtract_radial_profile_about_host(x, shape=cfg.radial_profile_shape, statistic=cfg.radial_profile_statistic)
        else:
            x = subtract_radial_profile(x)
        if cfg.residual_noise_scale and cfg.mode != "none":
            sky = residual_noise(x, cfg)
            x = x / sky
            if local is not None:
                # inside a bright host the scatter is its photon noise (and what the profile leaves),
                # many times the sky's: there the residual is put in units of that scatter instead
                x = x / (local / sky).clamp_min(1.0)
    x = x.clamp(-cfg.clip, cfg.clip)
    return x if raw is None else torch.cat([raw, x], dim=1)


def residual_noise(x: torch.Tensor, cfg: NormConfig) -> torch.Tensor:
    """(B, 1 or C, 1, 1) robust sigma (MAD) of the host-subtracted stamp in the outer annulus.

    The annulus MAD of the raw stamp measures the host's own light gradient as well as the noise
    when the host is large and bright, so a stamp of a bright host came out scaled down several
    times and an arc of SNR 10 on it at a fraction of its SNR; measured after the subtraction,
    the scale is the noise, and an arc's normalised amplitude is its SNR on every host."""
    mask = annulus_mask(x.shape[-1], cfg.annulus_inner_frac, cfg.annulus_outer_frac, x.device)
    ring = x[..., mask]  # (B, C, P)
    dev = (ring - ring.median(dim=-1, keepdim=True).values).abs()
    if cfg.mode == "annulus_common":
        s = dev.flatten(1).median(dim=1).values[:, None]
    else:
        s = dev.median(dim=-1).values
    return (s * MAD_TO_SIGMA).clamp_min(1e-6)[..., None, None]


@lru_cache(maxsize=16)
def _annulus_tensors(size: int, device: str) -> tuple[torch.Tensor, ...]:
    t = annulus_table(size)
    return tuple(torch.tensor(a, device=device) for a in (t.index, t.valid, t.interp_lo, t.interp_w))


def radial_profile(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each band's azimuthal median profile, evaluated at every
    pixel's radius (median per integer-radius annulus, linear in radius between annuli)."""
    B, C, H, W = x.shape
    if H != W:
        raise ValueError(f"radial profiles need square stamps, got {H}x{W}")
    idx, valid, lo, w = _annulus_tensors(H, str(x.device))
    flat = x.reshape(B, C, H * W)
    vals = flat[..., idx].masked_fill(~valid, float("nan"))  # (B, C, K, M)
    prof = vals.nanmedian(dim=-1).values  # (B, C, K)
    w = w.to(x.dtype)
    return (prof[..., lo] * (1 - w) + prof[..., lo + 1] * w).reshape(B, C, H, W)


def subtract_radial_profile(x: torch.Tensor) -> torch.Tensor:
    """x minus its azimuthal median profile (see ``radial_profile``): round structure vanishes."""
    return x - radial_profile(x)


def core_dropout(x: torch.Tensor, cfg: NormConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training-time corruption of normalised stamps (B, C, H, W): with probability
    ``cfg.core_dropout_p`` per stamp, pixels with r_px <= ``cfg.core_dropout_radius_px`` become
    Gaussian noise with each band's median and robust sigma (MAD x 1.4826) in the normalisation
    annulus, i.e. they look like empty sky. Draws from ``generator`` (stamp choice, then noise)."""
    if cfg.core_dropout_p <= 0:
        return x
    B, C, H, W = x.shape
    dev = generator.device if generator is not None else x.device
    drop = (torch.rand(B, generator=generator, device=dev) < cfg.core_dropout_p).to(x.device)
    core = torch.from_numpy(core_mask(H, cfg.core_dropout_radius_px)).to(x.device)
    ring = x[..., annulus_mask(H, cfg.annulus_inner_frac, cfg.annulus_outer_frac, x.device)]  # (B, C, P)
    med = ring.median(dim=-1).values
    sigma = (ring - med[..., None]).abs().median(dim=-1).values * MAD_TO_SIGMA
    noise = torch.randn(B, C, int(core.sum()), generator=generator, device=dev).to(x.device, x.dtype)
    out = x.clone()
    fill = out[..., core]  # (B, C, n_core)
    fill = torch.where(drop[:, None, None], med[..., None] + sigma[..., None] * noise, fill)
    out[..., core] = fill
    return out


def _dihedral_perms(size: int, device) -> torch.Tensor:
    """(8, H*W) source index of each output pixel under the 8 symmetries of the square."""
    idx = torch.arange(size * size, device=device).reshape(size, size)
    out = []
    for flip in (False, True):
        base = idx.flip(-1) if flip else idx
        for k in range(4):
            out.append(torch.rot90(base, k, dims=(-2, -1)).reshape(-1))
    return torch.stack(out)


@lru_cache(maxsize=8)
def _shift_perms(size: int, max_shift: int, device: str) -> torch.Tensor:
    """((2m+1)^2, H*W) source index of each output pixel for every whole-pixel roll (dy, dx), |d| <= m."""
    idx = torch.arange(size * size, device=device).reshape(size, size)
    rng = range(-max_shift, max_shift + 1)
    return torch.stack([torch.roll(idx, (dy, dx), dims=(0, 1)).reshape(-1) for dy in rng for dx in rng])


def augment_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Roll each stamp (B, C, H, W) by a random whole number of pixels in [-max_shift, max_shift]
    per axis, batched (one gather)."""
    if max_shift <= 0:
        return x
    B, C, H, W = x.shape
    perms = _shift_perms(H, int(max_shift), str(x.device))
    t = torch.randint(0, perms.shape[0], (B,), generator=generator, device=generator.device if generator is not None else x.device)
    src = perms[t.to(x.device)]
    return x.reshape(B, C, H * W).gather(2, src[:, None, :].expand(B, C, H * W)).reshape(B, C, H, W)


def augment_dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one random rotation/flip per stamp (B, C, H, W), batched."""
    B, C, H, W = x.shape
    perms = _dihedral_perms(H, x.device)
    t = torch.randint(0, 8, (B,), generator=generator, device=generator.device if generator is not None else x.device)
    src = perms[t.to(x.device)]  # (B, H*W)
    return x.reshape(B, C, H * W).gather(2, src[:, None, :].expand(B, C, H * W)).reshape(B, C, H, W)


def shard_indices(n: int, rank: int = 0, world_size: int = 1, worker: int = 0, num_workers: int = 1,
                  shuffle: bool = False, seed: int = 0, epoch: int = 0) -> np.ndarray:
    """This (rank, worker)'s share of range(n): disjoint across shards, together covering all rows."""
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"rank {rank}/{world_size} worker {worker}/{num_workers} out of range")
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    n_shards = world_size * num_workers
    return order[rank * num_workers + worker :: n_shards]


class StampDataset(torch.utils.data.Dataset):
    """Map-style dataset over a cached split: item i -> (normalised (3, H, W) float32, label).

    ``__getitems__`` fetches a whole batch at once (one memmap read, one normalisation) and
    returns it already stacked; give the DataLoader ``collate_fn=StampDataset.collate``.
    """

    @staticmethod
    def collate(batch):
        return batch

    def __init__(self, split: CachedSplit, norm: NormConfig | None = None):
        norm = NormConfig.from_params({}) if norm is None else norm
        self.split, self.norm = split, norm
        self.labels = split.labels
        self.stats = split.norm_stats(norm.annulus_inner_frac, norm.annulus_outer_frac)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices):
        idx = np.asarray(indices)
        order = np.argsort(idx, kind="stable")
        raw = np.empty((len(idx),) + self.split.images.shape[1:], dtype=self.split.images.dtype)
        raw[order] = self.split.images[idx[order]]  # sorted reads are sequential on disk
        stats = None if self.stats is None else torch.from_numpy(self.stats[idx])
        x = normalize(torch.from_numpy(raw), self.norm, stats)
        return x, torch.from_numpy(self.labels[idx])


class ShardedSampler(torch.utils.data.Sampler):
    """Rank-aware sampler without padding (unlike DistributedSampler): no row is ever duplicated."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0):
        self.n, self.rank, self.world_size, self.shuffle, self.seed, self.epoch = n, rank, world_size, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(shard_indices(self.n, self.rank, self.world_size, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch).tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


class NormalisedSplit:
    """Rows of a cached split normalised once and kept as one float32 tensor on the device.

    Normalisation depends on the stamp alone and the training-only augmentations (rotations,
    shifts, core dropout) come after it, so epochs of training can reuse it: each step then only
    gathers and augments. ``iterate_batches`` accepts it in place of the split; the values are
    those ``normalize`` gives batch by batch."""

    def __init__(self, split: CachedSplit, norm: NormConfig, device: torch.device | str = "cpu", rows: np.ndarray | None = None,
                 batch_size: int = 512, desc: str | None = None):
        rows = np.arange(len(split)) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
        self.norm, self.labels, self.images = norm, split.labels, split.images
        self.position = np.full(len(split), -1, dtype=np.int64)
        self.position[rows] = np.arange(len(rows))
        # ``desc``: a progress bar on stderr under that name (the host removal takes minutes on a CPU)
        bar = tqdm(total=len(rows), desc=desc, unit="stamp", disable=desc is None, mininterval=5.0)
        parts = []
        for x, _, _ in iterate_batches(split, rows, batch_size, norm, device):
            parts.append(x)
            bar.update(len(x))
        bar.close()
        self.tensor = torch.cat(parts) if parts else torch.empty((0,) + tuple(split.images.shape[1:]), device=device)

    def take(self, rows: np.ndarray, norm: NormConfig) -> torch.Tensor:
        if norm != self.norm:
            raise ValueError("a NormalisedSplit serves the normalisation it was built with only")
        pos = self.position[rows]
        if (pos < 0).any():
            raise ValueError(f"rows {rows[pos < 0][:5].tolist()} were not normalised in advance")
        return self.tensor[torch.as_tensor(pos, device=self.tensor.device)]

    @staticmethod
    def nbytes(split: CachedSplit, n_rows: int) -> int:
        return int(n_rows * np.prod(split.images.shape[1:]) * 4)


def iterate_batches(split: CachedSplit | NormalisedSplit, indices: np.ndarray, batch_size: int, norm: NormConfig, device: torch.device | str = "cpu",
                    augment: bool = False, generator: torch.Generator | None = None,
                    training: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """Yield (x, y, rows) batches of the given rows: x normalised on ``device``; rows are cache indices.

    ``augment``: one random rotation/flip per stamp. ``training``: also apply the training-only
    augmentations of ``norm`` (whole-pixel shifts, core dropout); evaluation and inference leave
    it False.
    """
    labels = split.labels
    pre = isinstance(split, NormalisedSplit)
    all_stats = None if pre else split.norm_stats(norm.annulus_inner_frac, norm.annulus_outer_frac)
    for s in range(0, len(indices), batch_size):
        rows = np.asarray(indices[s : s + batch_size])
        if pre:
            x = split.take(rows, norm).to(device)
        else:
            order = np.argsort(rows, kind="stable")
            raw = np.empty((len(rows),) + split.images.shape[1:], dtype=split.images.dtype)
            raw[order] = split.images[rows[order]]
            x = torch.from_numpy(raw).to(device, non_blocking=True)
            stats = None if all_stats is None else torch.from_numpy(all_stats[rows]).to(device)
            x = normalize(x, norm, stats)
        yield augmented(x, norm, augment, generator, training), torch.from_numpy(labels[rows]).to(device), rows


def augmented(x: torch.Tensor, norm: NormConfig, augment: bool, generator: torch.Generator | None = None,
              training: bool = False) -> torch.Tensor:
    """A normalised batch as the network meets it: one random rotation/flip per stamp
    (``augment``), then with ``training`` the training-only shifts and core dropout of ``norm``."""
    if augment:
        x = augment_dihedral(x, generator)
    if training:
        x = augment_shift(x, norm.shift_px, generator)
        x = core_dropout(x, norm, generator)
    return x


def preprocess_from_params(p: Mapping[str, Any], source: str = "params.yaml") -> tuple[NormConfig, bool]:
    """``params.yaml`` section ``preprocess`` -> (normalisation, augment on/off). Absent keys take
    their defaults, so params written before radial_profile_subtract / core_dropout_* existed
    still work."""
    v = checked("preprocess", p, source)
    return NormConfig.from_params(v, source), v["augment"]
