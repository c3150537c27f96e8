"""Read params.yaml sections with errors that name the file, the key and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    pass


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found; run from the repository root")
    with open(path) as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, Mapping):
        raise ParamsError(f"{path} must hold a mapping at the top level")
    return dict(params)


def section(params: Mapping[str, Any], name: str, allowed: set[str] | None = None, source: str = "params.yaml") -> dict[str, Any]:
    if name not in params:
        raise ParamsError(f"{source} has no '{name}' section")
    sec = params[name]
    if not isinstance(sec, Mapping):
        raise ParamsError(f"{source}: '{name}' must be a mapping, got {type(sec).__name__}")
    if allowed is not None:
        unknown = sorted(set(sec) - allowed)
        if unknown:
            raise ParamsError(f"{source}: unknown keys {unknown} in '{name}'; allowed keys are {sorted(allowed)}")
    return dict(sec)
