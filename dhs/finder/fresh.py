"""Training batches rendered on the fly by the simulated survey (``train.data: simulate``).

Every training batch is drawn from the same population and rendered by the same engine, survey
model and noise as the ``stamps`` stage (``dhs.simulate``), on the training device, and never
touches disk: the finder never meets the same stamp twice, so it cannot memorise a fixed set.
Validation and test stay the materialised stamps of the cache, so thresholds and completeness
are reproducible from files.

What a batch holds:

- the train split's population: ``simulate.physical`` with the ``simulate.physical_train``
  overrides (the lenses a finder learns from), controls and injections in the hosts, fields and
  observing conditions of the simulated survey, each block of steps in sky regions of its own;
- injections with ``train.min_arc_snr_column >= train.min_arc_snr`` only (an invisible arc is label noise as a
  training positive, as in cache training); the ones below are rendered, counted and dropped;
- a fraction ``positive_fraction`` of injections (0.5 with ``train.balance_classes``, else
  1 - ``simulate.control_fraction``), exact per block of steps;
- pixels rounded through the cache's dtype (``stamps.cache_dtype``), so the finder trains on
  what inference reads back from the cache; no failed cutouts (the cache holds none either).

Determinism: the stamps of step s on rank r are a function of (simulate.seed, train.seed, block,
rank) with block = s // steps_per_block, drawn through the simulator's keyed generators, so a
resumed run draws the batches the straight run drew, and ranks never share a stamp. A block (a
few thousand stamps) is rendered at once, in ``simulate.batch_size`` chunks, for throughput.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dhs import codebase
from dhs.simulate.config import SimConfig
from dhs.simulate.fused import set_compile_mode
from dhs.simulate.population import config_id, sample_population
from dhs.simulate.survey import render_on_device

BLOCK_STAMPS = 4096  # default stamps rendered at once (train.simulate_block_stamps): keeps a GPU busy, fits its memory

# what each rendered stamp became (every one is counted)
USED, BELOW_MIN_SNR, SURPLUS = "used", "injection_arc_snr_below_min", "rendered_beyond_the_block"


def simulator_imports() -> list[Path]:
    """The project files outside dhs/simulate that the simulator's modules import
    (``dhs.codebase.closure``): the physical population's coefficients and the prior forms in
    dhs/params, the stamp contract, ... A change to any of them changes the rendered batches too."""
    import dhs.simulate

    here = Path(dhs.simulate.__file__).resolve().parent
    files = set().union(*(codebase.closure(f) for f in here.glob("*.py")))
    return sorted(f for f in files if f.parent != here)


def simulator_source_digest(package_dir: Path | None = None) -> str:
    """sha256 of the simulator's code: the files of ``package_dir`` (dhs/simulate by default; by
    name and bytes), then each file of ``simulator_imports`` (by path and bytes)."""
    import dhs.simulate

    root = Path(package_dir) if package_dir is not None else Path(dhs.simulate.__file__).parent
    h = hashlib.sha256()
    for f in sorted(root.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    for f in simulator_imports():
        h.update(f.relative_to(codebase.ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _seed(*parts: int) -> int:
    """A 31-bit seed for one draw, mixed from its parts (independent streams for distinct parts)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0]) & 0x7FFFFFFF


@dataclass
class FreshBlock:
    images: torch.Tensor  # (n, 3, N, N) float32 nMgy on the training device
    labels: torch.Tensor  # (n,) float32
    rows: pd.DataFrame    # the population rows with their rendered metrics, in the same order


class FreshBatches:
    """Step -> (images nMgy, labels, rows) of this rank's training batch, rendered on ``device``."""

    def __init__(self, sim: SimConfig, per_rank_batch: int, train_seed: int, rank: int, device: torch.device,
                 min_arc_snr: float = 0.0, positive_fraction: float = 0.5, cache_dtype: str = "float16",
                 block_stamps: int = BLOCK_STAMPS, snr_column: str = "arc_snr"):
        if not 0.0 < positive_fraction < 1.0:
            raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
        merged = {**(sim.physical or {}), **(sim.physical_train or {})}
        # one population for the whole block: the train split's overrides apply to every row, and
        # failed cutouts (which the cache never holds) are not drawn
        self.sim = dataclasses.replace(sim, physical=merged, physical_train={}, failed_cutout_fraction=0.0, paired=False)
        self.b, self.train_seed, self.rank, self.device = per_rank_batch, train_seed, rank, device
        self.min_arc_snr, self.positive_fraction, self.snr_column = float(min_arc_snr), float(positive_fraction), snr_column
        self.round_dtype = {"float16": torch.float16, "float32": None}[cache_dtype]
        self.steps_per_block = max(1, block_stamps // per_rank_batch)
        self.counts: Counter = Counter()  # rendered stamps by what became of them
        self._block: tuple[int, FreshBlock] | None = None
        set_compile_mode(sim.compile)

    def fingerprint(self) -> str:
        """What defines the batches beyond the step: the simulated survey, the draw's settings and
        the simulator's code (a fix to the renderer must retrain, not rebuild a finished run's
        outputs from a checkpoint that learnt from the old stamps)."""
        return (f"{config_id(self.sim)}:{self.steps_per_block}:{self.min_arc_snr}:{self.snr_column}:{self.positive_fraction}:"
                f"{self.round_dtype}:{simulator_source_digest()}")

    def _population(self, n: int, control_fraction: float, *key: int) -> tuple[pd.DataFrame, SimConfig]:
        cfg = dataclasses.replace(self.sim, n_stamps=n, control_fraction=control_fraction,
                                  seed=_seed(self.sim.seed, self.train_seed, self.rank, *key))
        return sample_population(cfg, all_train=True), cfg  # control_fraction 1 or 0: every row a control, or none

    def _render(self, pop: pd.DataFrame, cfg: SimConfig) -> tuple[pd.DataFrame, torch.Tensor]:
        parts, imgs = zip(*render_on_device(pop, cfg, self.device))
        return pd.concat(parts, ignore_index=True), torch.cat(imgs)

    def _draw_block(self, block: int) -> FreshBlock:
        n = self.steps_per_block * self.b
        n_pos = int(round(n * self.positive_fraction))
        n_neg = n - n_pos
        rows_neg, x_neg = self._render(*self._population(n_neg, 1.0, block, 0))
        self.counts[USED] += n_neg
        pos_rows, pos_x, have, attempt, rendered = [], [], 0, 0, 0
        while have < n_pos:
            attempt += 1
            # enough injections for the visible fraction met so far in this block (a first guess of
            # one half), so a block takes one or two rounds of rendering
            frac = 0.5 if rendered == 0 else max(0.05, have / rendered)
            want = max(self.b, int(math.ceil((n_pos - have) / frac * 1.1)))
            rows, x = self._render(*self._population(want, 0.0, block, attempt))
            rendered += len(rows)
            keep = rows[self.snr_column].to_numpy(float) >= self.min_arc_snr
            idx = np.flatnonzero(keep)[: n_pos - have]
            self.counts[BELOW_MIN_SNR] += int((~keep).sum())
            self.counts[SURPLUS] += int(keep.sum()) - len(idx)
            pos_rows.append(rows.iloc[idx])
            pos_x.append(x[torch.as_tensor(idx, device=x.device)])
            have += len(idx)
        self.counts[USED] += n_pos
        rows = pd.concat([rows_neg, *pos_rows], ignore_index=True)
        x = torch.cat([x_neg, *pos_x])
        order = np.random.default_rng(_seed(self.sim.seed, self.train_seed, self.rank, block, 0xB10C)).permutation(len(rows))
        x = x[torch.as_tensor(order, device=x.device)]
        if self.round_dtype is not None:
            x = x.to(self.round_dtype).float()
        rows = rows.iloc[order].reset_index(drop=True)
        labels = torch.as_tensor((rows["is_control"].to_numpy() == 0).astype(np.float32), device=x.device)
        return FreshBlock(x, labels, rows)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
        block, k = divmod(step, self.steps_per_block)
        if self._block is None or self._block[0] != block:
            self._block = (block, self._draw_block(block))
        fb = self._block[1]
        sl = slice(k * self.b, (k + 1) * self.b)
        return fb.images[sl], fb.labels[sl], fb.rows.iloc[sl]
