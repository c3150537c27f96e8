"""The small CNN: a lens finder that trains on a laptop CPU in minutes.

Three blocks of two 3x3 convolutions (batch norm, ReLU) and a 2x2 max-pool take a 64 px stamp to
an 8x8 map of ``4 * width`` features (receptive field 36 px, 9.4 arcsec: an arc and its counter-
image together). The head pools that map onto a ``grid`` x ``grid`` layout and reads it with a
small MLP, so it knows *where* a feature sits relative to the host: a real field has neighbours,
stars and companions anywhere in the stamp, and a global average over the whole map (the
previous head) let them drown the arc. The grid cells are 16 px wide, far coarser than the
1-2 px centring error the shift gate checks, so the head cannot key on the exact stamp centre.
Any stamp size works (the adaptive pool fixes the head's input).
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 16, grid: int = 4, hidden: int = 64):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), block(2 * width, 4 * width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(4 * width * grid * grid, hidden),
                                  nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)
