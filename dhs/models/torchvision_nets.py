"""torchvision backbones adapted to 64x64 / 96x96 stamps, randomly initialised (weights=None:
nothing is downloaded), with a single-logit head.

ResNet-18: ImageNet's 7x7 stride-2 stem and max-pool would shrink a 64 px stamp to 16 px before
the first block and blur arcs a few pixels wide, so the default stem is a 3x3 stride-1 conv
without max-pool (the CIFAR adaptation); ``stem: imagenet`` restores the original.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn


class _OneLogit(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def resnet18_trunk(stem: str = "cifar") -> nn.Module:
    """ResNet-18 without its classifier: (B, 3, H, W) -> (B, 512)."""
    net = torchvision.models.resnet18(weights=None)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem != "imagenet":
        raise ValueError(f"resnet stem must be 'cifar' or 'imagenet', got {stem!r}")
    net.fc = nn.Identity()
    return net


def resnet18(stem: str = "cifar") -> nn.Module:
    trunk = resnet18_trunk(stem)
    return _OneLogit(nn.Sequential(trunk, nn.Linear(512, 1)))


def efficientnet_b0() -> nn.Module:
    return _OneLogit(torchvision.models.efficientnet_b0(weights=None, num_classes=1))


def convnext_tiny() -> nn.Module:
    return _OneLogit(torchvision.models.convnext_tiny(weights=None, num_classes=1))
