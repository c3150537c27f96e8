"""Extra heads and inputs on top of any architecture (the seed's experiment plan).

- **theta_E head** (``theta_head``): a second output regressing the Einstein radius in arcsec,
  trained with a Huber loss on injections only (controls have no theta_E; their term is masked
  out), beside the classification logit. The model then returns (B, 2): [logit, theta_E].
- **colour conditioning** (``colour``): the host's g-r and r-z colours measured *from the
  stamp* in nMgy before normalisation (``dhs.models.colours``; never from truth columns), passed as the
  last forward argument and concatenated to the features before the last layer.

``attach_heads`` takes a built model whose last layer is a Linear with one output, swaps that
layer for these heads, and keeps the rest (trunk, metadata MLP) untouched.
"""

from __future__ import annotations

import torch
from torch import nn

def _last_single_output_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    found = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod.out_features == 1:
            found = name
    if found is None:
        raise ValueError(f"{type(model).__name__} has no final Linear layer with one output to replace")
    parent_name, _, attr = found.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr, getattr(parent, attr)


class _Heads(nn.Module):
    def __init__(self, in_features: int, colour: bool, theta_head: bool):
        super().__init__()
        self.colour, self.theta_head = colour, theta_head
        extra = 2 if colour else 0
        self.logit = nn.Linear(in_features + extra, 1)
        self.theta = nn.Sequential(nn.Linear(in_features + extra, 64), nn.ReLU(inplace=True), nn.Linear(64, 1)) if theta_head else None
        self._colours: torch.Tensor | None = None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if self.colour:
            feats = torch.cat([feats, self._colours.to(feats.dtype)], dim=1)
        logit = self.logit(feats)
        if self.theta is None:
            return logit
        # softplus: theta_E > 0
        return torch.cat([logit, nn.functional.softplus(self.theta(feats))], dim=1)


class WithHeads(nn.Module):
    """``model`` with its final one-output Linear replaced by the heads above."""

    def __init__(self, model: nn.Module, colour: bool = False, theta_head: bool = False):
        super().__init__()
        parent, attr, last = _last_single_output_linear(model)
        self.heads = _Heads(last.in_features, colour, theta_head)
        setattr(parent, attr, self.heads)
        self.model = model
        self.colour, self.theta_head = colour, theta_head

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        """``args``: the hybrid's metadata if any, then the (B, 2) host colours when ``colour``."""
        if self.colour:
            if not args:
                raise ValueError("a colour-conditioned model needs the host colours (dhs.models.colours) as its last argument")
            self.heads._colours, args = args[-1], args[:-1]
        try:
            return self.model(x, *args)
        finally:
            self.heads._colours = None


def split_outputs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits (B,), theta_E prediction (B,) or None) from a model output."""
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, 0], out[:, 1]
    return out, None
