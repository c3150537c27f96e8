"""Extra heads and inputs on top of any architecture (the seed's experiment plan).

- **theta_E head** (``theta_head``): a second output regressing the Einstein radius in arcsec,
  trained with a Huber loss on injections only (controls have no theta_E; their term is masked
  out), beside the classification logit. The model then returns (B, 2): [logit, theta_E].
- **colour conditioning** (``colour``): the host's g-r and r-z colours measured *from the
  stamp* (never from truth columns) in a central aperture, concatenated to the features before
  the last layer. With ``annulus_common`` normalisation all bands share one scale, so flux
  ratios, hence colours, survive normalisation; colours are asinh-softened
  (-2.5 log10 of ratios with fluxes floored at ``flux_floor`` in sky-sigma units) so a faint or
  negative aperture flux gives a bounded value instead of NaN.

``attach_heads`` takes a built model whose last layer is a Linear with one output, swaps that
layer for these heads, and keeps the rest (trunk, metadata MLP) untouched.
"""

from __future__ import annotations

import torch
from torch import nn

COLOUR_APERTURE_RADIUS_PX = 4.0  # ~1 arcsec at 0.262 arcsec/px: the host's core, where its light dominates


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


def aperture_colours(x: torch.Tensor, radius_px: float = COLOUR_APERTURE_RADIUS_PX, flux_floor: float = 1.0) -> torch.Tensor:
    """(B, 3, H, W) grz (sky-subtracted, one common scale) -> (B, 2) [g-r, r-z] in magnitudes."""
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2,
                            torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2, indexing="ij")
    mask = ((xx * xx + yy * yy) <= radius_px * radius_px).to(x.dtype)
    flux = (x * mask).sum(dim=(-2, -1))  # (B, 3)
    # softened: f -> (f + sqrt(f^2 + 4 floor^2)) / 2 is ~f for f >> floor and ~floor near 0
    soft = 0.5 * (flux + torch.sqrt(flux * flux + 4 * flux_floor * flux_floor))
    mag = -2.5 * torch.log10(soft)
    return torch.stack([mag[:, 0] - mag[:, 1], mag[:, 1] - mag[:, 2]], dim=1)


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

    def forward(self, x: torch.Tensor, *meta) -> torch.Tensor:
        if self.colour:
            self.heads._colours = aperture_colours(x.float())
        out = self.model(x, *meta)
        self.heads._colours = None
        return out


def split_outputs(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits (B,), theta_E prediction (B,) or None) from a model output."""
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, 0], out[:, 1]
    return out, None
