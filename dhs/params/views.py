"""Config objects as views of the schema: the keys, their defaults and their checks live in
dhs/params/schema.py only; a stage's config dataclass names the keys it reads as fields (without
defaults) and is built from the checked section by ``view``.

    @dataclass(frozen=True)
    class CalibrationConfig:
        SECTION = "calibration"   # the params section this views
        method: str               # a key of the section: no default here, the schema has it
        ...
        fprs: tuple[float, ...]   # not a key of the section: passed to view() by the caller

    cfg = view(CalibrationConfig, p["calibration"], source, fprs=tuple(p["evaluation"]["fprs"]))

``CalibrationConfig`` with every default is ``view(CalibrationConfig, {})``.
tests/params/test_views.py checks every such dataclass: its fields are keys of its section or
are given by the caller, and none repeats a default of the schema.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from dhs.params import checked

T = TypeVar("T")


def frozen(value: Any) -> Any:
    """Lists (at any depth) as tuples, so a frozen config is hashable and cannot be changed in place."""
    if isinstance(value, (list, tuple)):
        return tuple(frozen(x) for x in value)
    if isinstance(value, Mapping):
        return {k: frozen(x) for k, x in value.items()}
    return value


def view(cls: type[T], values: Mapping[str, Any] | None, source: str = "params.yaml", **extra: Any) -> T:
    """An instance of the dataclass ``cls`` from its params section (``cls.SECTION``), checked by
    the schema: each field named like a key of the section takes that key's checked value (lists
    as tuples); ``extra`` gives the fields that are not keys of the section."""
    section = cls.SECTION  # type: ignore[attr-defined]
    v = checked(section, values, source)
    names = [f.name for f in dataclasses.fields(cls)]
    kw = {k: frozen(v[k]) for k in names if k in v and k not in extra}
    unknown = sorted(set(extra) - set(names))
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kw and f.name not in extra
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if unknown or missing:
        raise TypeError(f"{cls.__name__}: " + (f"{unknown} are not fields; " if unknown else "")
                        + (f"fields {missing} are neither keys of params section '{section}' nor given" if missing else ""))
    return cls(**kw, **extra)


def viewed_keys(cls: type) -> set[str]:
    """The keys of ``cls.SECTION`` that ``cls`` holds as fields."""
    from dhs.params.schema import SECTIONS

    return {f.name for f in dataclasses.fields(cls)} & set(SECTIONS[cls.SECTION].fields)  # type: ignore[attr-defined]
