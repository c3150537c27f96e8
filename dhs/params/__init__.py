"""The params boundary: params.yaml is read and checked here, as a whole, when a stage starts.

- ``load(path)`` -> ``Params``: every section present in the file checked against the schema
  (``dhs.params.schema``), defaults filled in, the rules across sections applied. A bad value
  anywhere in the file stops any stage before it does any work, with one message naming the
  file, the key, what is allowed and the value given.
- ``Params[name]``: a section's checked values; a section the file leaves out takes its defaults
  (or is refused, naming the section, where it has keys without a default).
- ``checked(name, values)``: one section checked on its own (what the config objects of the
  stages call when built from a plain mapping, e.g. in tests).
- ``load_params`` / ``section``: the raw YAML, for tools that read or edit the file as text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from dhs.params.fields import ParamsError, Values, did_you_mean

__all__ = ["Params", "ParamsError", "as_params", "checked", "load", "load_params", "section"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last,
    so a second ``train:`` block would silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """The raw mapping in ``path`` (unchecked)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found; run from the repository root")
    with open(path) as f:
        try:
            params = yaml.load(f, Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ParamsError(f"{path}:{where}: not valid YAML ({what}); fix the file (`git diff {path.name}` shows what "
                              f"changed)") from None
    if not isinstance(params, Mapping):
        raise ParamsError(f"{path} must hold a mapping at the top level")
    return dict(params)


def section(params: Mapping[str, Any], name: str, source: str = "params.yaml") -> dict[str, Any]:
    """A raw section of ``params`` (unchecked), refusing a missing or non-mapping one."""
    if name not in params:
        raise ParamsError(f"{source} has no '{name}' section")
    sec = params[name]
    if not isinstance(sec, Mapping):
        raise ParamsError(f"{source}: '{name}' must be a mapping, got {type(sec).__name__}")
    return dict(sec)


def checked(name: str, values: Mapping[str, Any] | None, source: str = "params.yaml") -> Values:
    """Section ``name`` checked against the schema (values already checked pass through)."""
    from dhs.params.schema import SECTIONS

    return SECTIONS[name].check({} if values is None else values, name, source)


class Params(Mapping):
    """A whole params file, checked: ``params["train"]`` is the train section's values."""

    def __init__(self, raw: Mapping[str, Any], source: str = "params.yaml"):
        from dhs.params.schema import RULES, SECTIONS

        self.source = str(source)
        self.raw = dict(raw)
        unknown = sorted(str(k) for k in self.raw if k not in SECTIONS)
        if unknown:
            raise ParamsError(f"{self.source}: unknown sections {unknown}{did_you_mean(unknown, SECTIONS)}; the sections are "
                              f"{sorted(SECTIONS)}")
        self._values = {name: checked(name, sec, self.source) for name, sec in self.raw.items()}
        for names, rule in RULES:
            if all(n in self._values or SECTIONS[n].has_defaults() for n in names):
                rule(self, self.source)

    def __getitem__(self, name: str) -> Values:
        from dhs.params.schema import SECTIONS

        if name not in self._values:
            if name not in SECTIONS or not SECTIONS[name].has_defaults():
                raise ParamsError(f"{self.source} has no '{name}' section")
            self._values[name] = checked(name, {}, self.source)
        return self._values[name]

    def require(self, *names: str) -> "Params":
        """Refuse a file that leaves out one of the sections a stage is about."""
        for name in names:
            if name not in self.raw:
                raise ParamsError(f"{self.source} has no '{name}' section")
        return self

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


def load(path: str | Path = "params.yaml") -> Params:
    """``path`` read and checked as a whole."""
    return Params(load_params(path), str(path))


def as_params(params: str | Path | Params) -> Params:
    """A ``Params`` from a path (read and checked) or as given."""
    return params if isinstance(params, Params) else load(params)
