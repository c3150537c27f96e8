"""Building a model from its spec (``dhs.models.spec``): one builder per arch."""

from __future__ import annotations

from torch import nn

from dhs.models.hybrid import Hybrid
from dhs.models.small_cnn import SmallCNN
from dhs.models.spec import ModelSpec
from dhs.models.torchvision_nets import convnext_tiny, efficientnet_b0, resnet18
from dhs.params.rules import check_metadata_columns
from dhs.params.schema import ARCHS


def build_model(spec: ModelSpec) -> nn.Module:
    model = _build_base(spec)
    if spec.colour or spec.theta_head:
        from dhs.models.heads import WithHeads

        model = WithHeads(model, colour=spec.colour, theta_head=spec.theta_head)
    return model


def _build_base(spec: ModelSpec) -> nn.Module:
    if spec.arch not in ARCHS:
        raise ValueError(f"unknown arch {spec.arch!r}; known: {list(ARCHS)}")
    if spec.stamp_size not in (64, 96):
        raise ValueError(f"stamp_size must be 64 or 96, got {spec.stamp_size}")
    if spec.arch != "hybrid" and spec.metadata:
        raise ValueError(f"{spec.arch} takes no metadata; only the hybrid does")
    if spec.channels not in (3, 6):
        raise ValueError(f"channels must be 3 or 6, got {spec.channels}")
    c = spec.channels
    if spec.arch == "small_cnn":
        return SmallCNN(in_channels=c)
    if spec.arch == "resnet18":
        return resnet18(spec.stem, c)
    if spec.arch == "efficientnet_b0":
        return efficientnet_b0(c)
    if spec.arch == "convnext_tiny":
        return convnext_tiny(c)
    check_metadata_columns(spec.metadata)
    return Hybrid(len(spec.metadata), spec.stem, in_channels=c)
