"""The field kinds the params schema is written in, and the one error style of the boundary.

Every refusal reads ``<file>: <key> must be <what is allowed>, got <value given>`` (a few fields
word the requirement their own way, keeping that shape), unknown keys read ``<file>: unknown
keys [...] in '<section>' (did you mean '<closest allowed key>'?); allowed keys are [...]`` (the
hint where difflib finds a close one) and missing ones ``<file>: <key> missing [...]``. ``check``
returns the value normalised (ints as int, numbers as float, lists as lists) with defaults filled
in for absent keys.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dhs.errors import StageError


class ParamsError(StageError, ValueError):
    pass


class _Required:
    def __repr__(self) -> str:
        return "required"


REQUIRED = _Required()


def refuse(source: str, key: str, requirement: str, value: Any) -> ParamsError:
    """The one message style: ``<file>: <key> <requirement>, got <value>``."""
    return ParamsError(f"{source}: {key} {requirement}, got {value!r}")


def did_you_mean(unknown: Sequence[Any], allowed: Iterable[Any]) -> str:
    """`` (did you mean 'epochs'?)`` for the unknown names that have a close allowed one (difflib,
    ignoring case), naming which is meant where several are unknown; '' where none has."""
    by_lower = {str(a).lower(): str(a) for a in allowed}
    pairs = []
    for u in unknown:
        close = difflib.get_close_matches(str(u).lower(), list(by_lower), n=1, cutoff=0.6)
        if close and by_lower[close[0]] != str(u):
            pairs.append((str(u), by_lower[close[0]]))
    if not pairs:
        return ""
    if len(unknown) == 1:
        return f" (did you mean {pairs[0][1]!r}?)"
    return " (did you mean " + ", ".join(f"{m!r} for {u!r}" for u, m in pairs) + "?)"


def unknown_keys(source: str, unknown: Sequence[Any], where: str, allowed: Iterable[Any],
                 allowed_words: str | None = None) -> ParamsError:
    """The one unknown-key message: ``<file>: unknown keys [...] in '<where>' (did you mean ...?);
    allowed keys are [...]`` (or ``allowed_words`` in place of the list)."""
    allowed = sorted(str(a) for a in allowed)
    return ParamsError(f"{source}: unknown keys {list(unknown)} in '{where}'{did_you_mean(unknown, allowed)}; allowed keys are "
                       f"{allowed_words or allowed}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _looks_numeric(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return isinstance(v, str)


@dataclass(frozen=True)
class Field:
    default: Any = REQUIRED
    nullable: bool = False
    must: str | None = None   # the requirement in words, where the generic wording is not the clearest
    doc: str = ""

    def what(self) -> str:
        return "valid"

    def requirement(self) -> str:
        return self.must or f"must be {self.what()}" + (" or null" if self.nullable else "")

    def check(self, v: Any, key: str, source: str) -> Any:
        if v is None and self.nullable:
            return None
        return self._check(v, key, source)

    def _check(self, v: Any, key: str, source: str) -> Any:
        return v

    def fail(self, v: Any, key: str, source: str, requirement: str | None = None) -> ParamsError:
        return refuse(source, key, requirement or self.requirement(), v)


@dataclass(frozen=True)
class Bool(Field):
    def what(self) -> str:
        return "true or false"

    def _check(self, v, key, source):
        if not isinstance(v, bool):
            raise self.fail(v, key, source)
        return v


@dataclass(frozen=True)
class Int(Field):
    lo: int | None = None
    hi: int | None = None

    def what(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"an integer in [{self.lo}, {self.hi}]"
        if self.lo is not None:
            return f"an integer >= {self.lo}"
        if self.hi is not None:
            return f"an integer <= {self.hi}"
        return "an integer"

    def _check(self, v, key, source):
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(v, key, source)
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise self.fail(v, key, source)
        return int(v)


@dataclass(frozen=True)
class AutoInt(Int):
    """``auto`` (the stage decides, and says so) or an integer in the bounds."""

    def what(self) -> str:
        return f"'auto' or {super().what()}"

    def _check(self, v, key, source):
        return "auto" if v == "auto" else super()._check(v, key, source)


@dataclass(frozen=True)
class Float(Field):
    """A number; ``lo``/``hi`` bound it (``open_lo``/``open_hi`` exclude the bound); ``finite``
    refuses NaN and infinities. A string that reads as a number is refused with the YAML hint."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    finite: bool = True
    unit: str = ""

    def bounds(self) -> str:
        u = f" {self.unit}" if self.unit else ""
        if self.lo is not None and self.hi is not None:
            return f"lie in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}{')' if self.open_hi else ']'}{u}"
        if self.lo is not None:
            return f"be {'>' if self.open_lo else '>='} {self.lo:g}{u}"
        if self.hi is not None:
            return f"be {'<' if self.open_hi else '<='} {self.hi:g}{u}"
        return f"be a {'finite ' if self.finite else ''}number{u}"

    def what(self) -> str:
        b = self.bounds()
        return "a number" if b.startswith("be a ") else f"a number that must {b}"

    def requirement(self) -> str:
        return self.must or f"must {self.bounds()}" + (" or null" if self.nullable else "")

    def _check(self, v, key, source):
        if not _is_number(v):
            hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if _looks_numeric(v) else ""
            raise self.fail(v, key, source, (self.must or "must be a number") + hint)
        x = float(v)
        if math.isnan(x) or (self.finite and math.isinf(x)):
            raise self.fail(v, key, source, self.must or "must be a finite number")
        if self.lo is not None and (x < self.lo or (self.open_lo and x == self.lo)):
            raise self.fail(v, key, source)
        if self.hi is not None and (x > self.hi or (self.open_hi and x == self.hi)):
            raise self.fail(v, key, source)
        return x


@dataclass(frozen=True)
class Str(Field):
    choices: tuple[str, ...] = ()
    pattern: str | None = None      # a full match; ``what`` says it in words
    words: str = "a non-empty string"

    def what(self) -> str:
        return f"one of {list(self.choices)}" if self.choices else self.words

    def _check(self, v, key, source):
        if isinstance(v, bool) and {"on", "off"} <= set(self.choices):
            # YAML 1.1 (PyYAML, and DVC when `dvc exp run -S` rewrites params.yaml) reads a bare
            # on / off as true / false: for an on/off choice that is what was written
            v = "on" if v else "off"
        if not isinstance(v, str) or not v:
            raise self.fail(v, key, source)
        if self.choices and v not in self.choices:
            raise self.fail(v, key, source)
        if self.pattern is not None and not re.fullmatch(self.pattern, v):
            raise self.fail(v, key, source)
        return v


def Choice(*values: str, default: Any = REQUIRED, **kw) -> Str:  # noqa: N802 - reads as a field kind
    return Str(default=default, choices=tuple(values), **kw)


DEVICE = r"auto|cpu|cuda(:\d+)?"


def Device(default: str = "auto") -> Str:  # noqa: N802
    return Str(default=default, pattern=DEVICE, words="auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class List(Field):
    item: Field = field(default_factory=Field)
    min_len: int = 0
    max_len: int | None = None
    distinct: bool = False
    increasing: bool = False   # strictly, for bin edges

    def what(self) -> str:
        size = " non-empty" if self.min_len == 1 else ""
        count = f" {self.min_len}" if self.min_len > 1 and self.min_len == self.max_len else (
            f" >= {self.min_len}" if self.min_len > 1 else "")
        q = (" distinct" if self.distinct else "") + (" strictly increasing" if self.increasing else "")
        return f"a{size} list of{count}{q} {_items(self.item)}"

    def _check(self, v, key, source):
        if not isinstance(v, (list, tuple)):
            raise self.fail(v, key, source)
        try:
            out = [self.item.check(x, f"{key}[{i}]", source) for i, x in enumerate(v)]
        except ParamsError:
            raise self.fail(v, key, source) from None
        if len(out) < self.min_len or (self.max_len is not None and len(out) > self.max_len):
            raise self.fail(v, key, source)
        if self.distinct and len({repr(x) for x in out}) != len(out):
            dup = sorted({repr(x) for x in out if sum(repr(y) == repr(x) for y in out) > 1})
            raise ParamsError(f"{source}: {key} lists [{', '.join(dup)}] more than once (it must be {self.what()})")
        if self.increasing and any(not b > a for a, b in zip(out, out[1:])):
            raise self.fail(v, key, source)
        return out


def _items(item: Field) -> str:
    """The list's items in words: 'values from [...]', 'numbers that must lie in (0, 1)', 'column names'."""
    if isinstance(item, Str) and item.choices:
        return f"values from {list(item.choices)}"
    what = item.what()
    for single, plural in (("a number", "numbers"), ("an integer", "integers")):
        if what.startswith(single):
            return plural + what[len(single):]
    for a in ("an ", "a "):
        if what.startswith(a):
            what = what[len(a):]
    head, sep, tail = what.partition(" that ")
    return f"{head}s{sep}{tail}"


@dataclass(frozen=True)
class Map(Field):
    """A mapping with free keys (``key`` checks each name) and one kind of value."""

    key: Str = field(default_factory=Str)
    value: Field = field(default_factory=Field)
    required: tuple[str, ...] = ()        # keys that must be there
    closed: bool = False                   # True: only ``key.choices`` are allowed
    min_len: int = 0

    def what(self) -> str:
        return f"a mapping of {self.key.words if not self.key.choices else 'names'} to {self.value.what()}"

    def _check(self, v, key, source):
        if not isinstance(v, Mapping):
            raise self.fail(v, key, source)
        if self.closed:
            unknown = sorted(str(k) for k in v if k not in self.key.choices)
            if unknown:
                raise unknown_keys(source, unknown, key, self.key.choices)
        missing = [k for k in self.required if k not in v]
        if missing:
            raise ParamsError(f"{source}: {key} missing {missing}")
        if len(v) < self.min_len:
            raise self.fail(dict(v), key, source)
        out = {}
        for k, x in v.items():
            if not self.closed:
                self.key.check(k, f"{key} key", source)
            out[k] = self.value.check(x, f"{key}.{k}", source)
        return out


Rule = Callable[[dict, str, str], None]   # (checked values, key, source): raises ParamsError


class Values(dict):
    """A section's values after the schema checked them (defaults filled in)."""


@dataclass(frozen=True)
class Section(Field):
    """A mapping with fixed keys, each a field; ``rules`` check keys against each other."""

    fields: Mapping[str, Field] = field(default_factory=dict)
    rules: Sequence[Rule] = ()
    partial: bool = False      # only the keys given (overrides): no defaults, nothing required, no rules

    def what(self) -> str:
        return f"a mapping with keys {sorted(self.fields)}"

    def has_defaults(self) -> bool:
        return all(f.default is not REQUIRED or (isinstance(f, Section) and f.has_defaults()) for f in self.fields.values())

    def _check(self, v, key, source):
        if isinstance(v, Values):
            return v
        if not isinstance(v, Mapping):
            raise ParamsError(f"{source}: '{key}' must be a mapping, got {type(v).__name__}")
        unknown = sorted(str(k) for k in v if k not in self.fields)
        if unknown:
            raise unknown_keys(source, unknown, key, self.fields)
        if self.partial:
            return Values({k: self.fields[k].check(x, f"{key}.{k}", source) for k, x in v.items()})
        missing = [k for k, f in self.fields.items() if k not in v and f.default is REQUIRED and not isinstance(f, Section)]
        if missing:
            raise ParamsError(f"{source}: {key} missing {missing}")
        out = Values()
        for k, f in self.fields.items():
            if k in v:
                out[k] = f.check(v[k], f"{key}.{k}", source)
            elif f.default is not REQUIRED:
                out[k] = copy.deepcopy(f.default)
            else:  # a nested section: its own defaults
                out[k] = f.check({}, f"{key}.{k}", source)
        for rule in self.rules:
            rule(out, key, source)
        return out
