"""The torch device a params key names: one rule for every stage that computes on a device.

``auto`` is the GPU when torch sees one, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken
as written, and a CUDA device that torch does not see is refused.
"""

from __future__ import annotations

import torch


def resolve_device(device: str, local_rank: int | None = None, key: str = "device",
                   error: type[Exception] = RuntimeError) -> torch.device:
    """``device`` (the value of params key ``key``: auto | cpu | cuda | cuda:N) -> a torch device.

    ``auto``: ``cuda:<local_rank>`` (a DDP rank's own GPU) when torch sees a GPU, ``cuda`` (the
    current GPU) without a rank, else the CPU. A CUDA device that torch does not see raises
    ``error`` (the caller's error class, which its stage reports) naming ``key``."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda" if local_rank is None else f"cuda:{local_rank}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise error(f"{key} is {device!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)
