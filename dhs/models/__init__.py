"""Lens-finder architectures: one builder per arch, each returning a module that maps a
(B, 3, H, W) normalised stamp (and, for the hybrid, a (B, M) metadata vector) to one logit.

- ``spec``: the arch names, ``ModelSpec`` and the metadata the hybrid may not see (no torch).
- ``registry``: ``build_model(spec)``.
- ``small_cnn``, ``torchvision_nets``, ``hybrid``: the networks; ``heads``: theta_E head and colour inputs.
"""
