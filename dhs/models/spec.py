"""What a model is, without torch: the architectures, a model's spec (arch, stamp size, stem,
hybrid metadata, extra heads) as stored in checkpoints, and which metadata columns the hybrid
may never see. The params schema reads these names, so validating params needs no torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ARCHS = ("small_cnn", "resnet18", "efficientnet_b0", "convnext_tiny", "hybrid")
STEMS = ("cifar", "imagenet")   # the ResNet stem: 3x3 stride 1 without max-pool, or the original

# Columns that carry (or are computed from) the injection: a model that sees any of them reads
# the label instead of the pixels. Matched exactly and by prefix.
FORBIDDEN_METADATA = (
    "is_control", "lens_model", "theta_e_arcsec", "src_", "arc_snr", "magnification", "total_injected_flux",
    "lens_e", "lens_q", "lens_phi_rad", "shear", "experiment_id", "task_id", "host_id", "cache_index", "source_row",
)


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    stamp_size: int
    stem: str = "cifar"
    metadata: tuple[str, ...] = ()
    colour: bool = False       # host g-r, r-z measured from the stamp as extra inputs (dhs.models.heads)
    theta_head: bool = False   # second output regressing theta_E (dhs.models.heads)

    def as_dict(self) -> dict:
        return {"arch": self.arch, "stamp_size": self.stamp_size, "stem": self.stem, "metadata": list(self.metadata),
                "colour": self.colour, "theta_head": self.theta_head}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(arch=d["arch"], stamp_size=int(d["stamp_size"]), stem=d.get("stem", "cifar"), metadata=tuple(d.get("metadata", ())),
                   colour=bool(d.get("colour", False)), theta_head=bool(d.get("theta_head", False)))


def check_metadata_columns(columns: Sequence[str]) -> None:
    bad = [c for c in columns if any(c == f or (f.endswith("_") and c.startswith(f)) or c.startswith(f + "_") for f in FORBIDDEN_METADATA)]
    if bad:
        raise ValueError(f"metadata columns {bad} carry the injection label and may not enter the hybrid model; "
                         f"use observing conditions only (e.g. psfsize_r, psfdepth_r, bad_pixel_frac, wise_brightmask_frac, ebv)")
