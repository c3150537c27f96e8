"""Batched injection engine written in torch: the same code runs on CPU and GPU.

Coordinates are in arcsec on the sky plane, x along image columns and y along image rows,
origin at the stamp centre ((N-1)/2, (N-1)/2) in 0-indexed pixel units, which keeps the
optical axis fixed under rot90/flip. Profiles are pure functions of tensors that broadcast:
parameters carry a trailing singleton so a (B, 1) parameter meets a (B, P) coordinate batch.
"""
