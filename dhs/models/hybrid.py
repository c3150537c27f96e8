"""Hybrid: ResNet-18 image trunk + an MLP on observing-condition metadata, fused before the logit.

Only columns that describe how the stamp was observed may enter (PSF, depth, mask fractions,
extinction). Anything that carries the injection label (theta_E, source parameters, arc SNR,
magnification, is_control, ...) would let the model read the answer; ``check_metadata_columns``
refuses those with a clear error.
"""

from __future__ import annotations

import torch
from torch import nn

from dhs.models.torchvision_nets import resnet18_trunk


class Hybrid(nn.Module):
    def __init__(self, n_meta: int, stem: str = "cifar", meta_hidden: int = 64, in_channels: int = 3):
        super().__init__()
        if n_meta < 1:
            raise ValueError("the hybrid model needs at least one metadata column (train.hybrid_metadata)")
        self.trunk = resnet18_trunk(stem, in_channels)
        self.meta = nn.Sequential(nn.Linear(n_meta, meta_hidden), nn.ReLU(inplace=True), nn.Linear(meta_hidden, meta_hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(512 + meta_hidden, 1)

    def forward(self, x: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.trunk(x), self.meta(meta)], dim=1)).squeeze(1)
