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


def _first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same first convolution taking ``in_channels`` inputs (fresh weights: nothing is pretrained)."""
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     bias=conv.bias is not None)


def resnet18_trunk(stem: str = "cifar", in_channels: int = 3) -> nn.Module:
    """ResNet-18 without its classifier: (B, C, H, W) -> (B, 512)."""
    net = torchvision.models.resnet18(weights=None)
    if stem == "cifar":
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif stem == "imagenet":
        net.conv1 = _first_conv(net.conv1, in_channels)
    else:
        raise ValueError(f"resnet stem must be 'cifar' or 'imagenet', got {stem!r}")
    net.fc = nn.Identity()
    return net


def resnet18(stem: str = "cifar", in_channels: int = 3) -> nn.Module:
    trunk = resnet18_trunk(stem, in_channels)
    return _OneLogit(nn.Sequential(trunk, nn.Linear(512, 1)))


def efficientnet_b0(in_channels: int = 3) -> nn.Module:
    net = torchvision.models.efficientnet_b0(weights=None, num_classes=1)
    net.features[0][0] = _first_conv(net.features[0][0], in_channels)
    return _OneLogit(net)


def convnext_tiny(in_channels: int = 3) -> nn.Module:
    net = torchvision.models.convnext_tiny(weights=None, num_classes=1)
    net.features[0][0] = _first_conv(net.features[0][0], in_channels)
    return _OneLogit(net)
