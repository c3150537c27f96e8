"""Keyed random numbers: every value is a hash of (run seed, stream, key, counter).

The simulator draws what belongs to a stamp (its noise, the objects in its field, its source's
star-forming knots) from the stamp's *key* (the host id, so a paired control and injection
share it) instead of from a sequential generator. A value then depends only on (seed, stream,
key, counter): never on the batch it was rendered in, the batch size, the device or the order
of rendering, and whole batches are drawn at once by integer arithmetic in torch on the device
that renders, with no per-stamp Python loop.

The hash is Wellons' ``lowbias32`` (an avalanching 32-bit integer mix), applied twice with the
key folded in between; products are taken modulo 2^32 on int64 tensors with 16-bit halves so
no intermediate ever leaves int64's range. Streams separate independent uses (sky noise,
photon noise of the arc, field objects, knots, ...).
"""

from __future__ import annotations

import numpy as np
import torch

from dhs.simulate.fused import fused

_M32 = 0xFFFFFFFF
_INV_2_24 = 1.0 / 16777216.0
_INV_2_32 = 1.0 / 4294967296.0

# stream numbers: one per independent use, never reused
STREAM_SKY = 1
STREAM_ARC_PHOTONS = 2
STREAM_RESAMPLING = 3
STREAM_CENTRE = 10
STREAM_FIELD = 11
STREAM_MORPHOLOGY = 12
STREAM_KNOTS = 13
STREAM_CORE = 14


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 tensors holding values < 2^32."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def stamp_keys(seed: int, stream: int, keys) -> torch.Tensor:
    """(B,) 32-bit generator keys from the run's seed, a stream number and each stamp's key
    (an int64 tensor or array, e.g. the host id)."""
    k = keys.to(torch.int64) if isinstance(keys, torch.Tensor) else torch.from_numpy(np.array(keys, dtype=np.int64))
    s = _hash32(torch.tensor([(int(seed) & _M32) ^ ((int(stream) * 0x9E3779B9) & _M32)], dtype=torch.int64, device=k.device))
    return _hash32(_hash32(s ^ (k & _M32)) ^ ((k >> 32) & _M32))


def _bits(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    return _hash32(_hash32(keys ^ counters) ^ keys)


@fused
def _normals(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    # two 24-bit uniforms in (0, 1) per value (counters 2c and 2c + 1), then Box-Muller;
    # |z| <= 5.8 (the 24-bit floor of u1), a tail probability of 7e-9
    u1 = ((_bits(keys, counters * 2) >> 8).to(torch.float32) + 0.5) * _INV_2_24
    u2 = ((_bits(keys, counters * 2 + 1) >> 8).to(torch.float32) + 0.5) * _INV_2_24
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(6.283185307179586 * u2)


@fused
def _uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    return (_bits(keys, counters).to(torch.float64) + 0.5) * _INV_2_32


def normals(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) float32 N(0, 1) deviates; row b depends only on ``keys[b]``."""
    n = int(np.prod(shape))
    counters = torch.arange(n, device=keys.device, dtype=torch.int64)
    return _normals(keys[:, None], counters[None, :]).reshape((keys.shape[0],) + tuple(shape))


def uniforms(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(B, *shape) float64 uniforms in (0, 1) (32-bit resolution); row b depends only on ``keys[b]``."""
    n = int(np.prod(shape))
    counters = torch.arange(n, device=keys.device, dtype=torch.int64)
    return _uniforms(keys[:, None], counters[None, :]).reshape((keys.shape[0],) + tuple(shape))


def uniforms_np(seed: int, stream: int, keys, n: int) -> np.ndarray:
    """(len(keys), n) float64 uniforms as numpy (for the per-stamp scene draws on the CPU)."""
    return uniforms(stamp_keys(seed, stream, keys), (n,)).cpu().numpy()
