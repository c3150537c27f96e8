"""Lens-finder architectures: one builder per arch, each returning a module that maps a
(B, 3, H, W) normalised stamp (and, for the hybrid, a (B, M) metadata vector) to one logit."""

from dhs.models.registry import ARCHS, FORBIDDEN_METADATA, ModelSpec, build_model, check_metadata_columns

__all__ = ["ARCHS", "FORBIDDEN_METADATA", "ModelSpec", "build_model", "check_metadata_columns"]
