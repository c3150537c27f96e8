"""Fused kernels for the per-sample formulas, via torch.compile, with an eager fallback.

Eager torch evaluates a lensed Sersic as ~40 separate passes over the sample arrays, each
writing a temporary; torch.compile (inductor) turns the same Python into one vectorised loop
(C++/OpenMP on CPU, Triton on GPU) that reads the sample coordinates once and writes one value.
On a 2-core CPU that is ~4x fewer nanoseconds per sub-pixel (benchmarks/bench_injection.py).
The formulas stay ordinary torch code: ``off`` runs exactly the same functions eagerly, and the
tests check that both give the same images.

Modes (``simulate.compile`` in params.yaml, or ``set_compile_mode``):
- ``auto`` (default): compile where it pays (``mode_for_run``: always on a GPU; on a CPU when
  the process renders at least ``AUTO_COMPILE_MIN_STAMPS_CPU`` stamps); if compiling fails on a
  device (no C++ compiler, no Triton), warn once and run that device eagerly from then on.
- ``on``: compile, and let a failure raise.
- ``off``: eager only.

What compiling costs (``python benchmarks/bench_compile.py``, 2-core CPU): the first batch of a
process on an empty inductor cache ~175 s; with the cache that run left, ~28 s, because dynamo
traces the kernels again in every process (the cache spares code generation and the C++
compiler only); eager, ~1 s. The fused kernels then render ~2.5x faster, so compiling pays
above ~12,000 stamps a process on a warm cache and ~80,000 on a cold one. ``auto`` takes the
warm figure: a run of a few hundred or thousand stamps (a test, a quick sweep) renders eagerly.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator

import torch

MODES = ("auto", "on", "off")
_mode = "auto"
_failed_devices: set[str] = set()
log = logging.getLogger(__name__)

# Every fused function below is a closure over its profile, so dynamo sees one code object and
# counts each profile x dtype x sample layout as a recompilation of it; the default limit (8)
# would silently send the later profiles back to eager.
_RECOMPILE_LIMIT = 64


def set_compile_mode(mode: str | bool) -> None:
    """``auto`` | ``on`` | ``off`` (True/False are ``on``/``off``)."""
    global _mode
    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    if mode not in MODES:
        raise ValueError(f"simulate.compile must be one of {MODES}, got {mode!r}")
    _mode = mode


def compile_mode() -> str:
    return _mode


@contextlib.contextmanager
def compile_mode_set_to(mode: str | bool) -> Iterator[None]:
    """``set_compile_mode(mode)`` for the block, the previous mode back after it."""
    previous = _mode
    set_compile_mode(mode)
    try:
        yield
    finally:
        set_compile_mode(previous)


# where compiling pays on a CPU once the inductor cache is warm (benchmarks/bench_compile.py: ~28 s
# of tracing per process against a 2.5x faster render at ~270 stamps/s eager)
AUTO_COMPILE_MIN_STAMPS_CPU = 12_000


def mode_for_run(mode: str | bool, n_stamps: int, device: torch.device | str) -> str:
    """The mode a run of ``n_stamps`` on ``device`` should render with: ``auto`` becomes ``off``
    for a CPU run too small to earn back the compilation, and stays ``auto`` otherwise (GPU runs
    always compile: the break-even there is not measured, and production runs are millions)."""
    if isinstance(mode, bool):
        mode = "on" if mode else "off"
    if mode == "auto" and torch.device(device).type == "cpu" and n_stamps < AUTO_COMPILE_MIN_STAMPS_CPU:
        return "off"
    return mode


def is_compiled_on(device: torch.device | str) -> bool:
    """Whether fused functions currently run compiled on this device type."""
    kind = torch.device(device).type
    return _mode != "off" and kind not in _failed_devices


def fused(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` compiled with dynamic shapes when the mode allows, else ``fn`` itself.

    The device is read from the first tensor argument. ``compile=False`` as a keyword forces
    the eager path for one call (the tests compare the two).
    """
    compiled = None

    @functools.wraps(fn)
    def call(*args, compile: bool | None = None):
        nonlocal compiled
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        if compile is False or (compile is None and not is_compiled_on(device)):
            return fn(*args)
        if compiled is None:
            _raise_recompile_limit()
            compiled = torch.compile(fn, dynamic=True)
        try:
            return compiled(*args)
        except Exception as exc:  # compilation problems surface on the first call
            if _mode == "on" or compile is True:
                raise
            _failed_devices.add(device.type)
            warnings.warn(f"torch.compile failed on {device.type} ({type(exc).__name__}: {str(exc)[:200]}); "
                          f"rendering eagerly (same results, ~4x slower). Set simulate.compile: off to skip the attempt.",
                          RuntimeWarning, stacklevel=2)
            return fn(*args)

    return call


def _raise_recompile_limit() -> None:
    import torch._dynamo.config as dynamo_config

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name) and getattr(dynamo_config, name) < _RECOMPILE_LIMIT:
            setattr(dynamo_config, name, _RECOMPILE_LIMIT)
