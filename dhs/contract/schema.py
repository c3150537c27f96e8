"""The versioned stamp contract shipped with the package (``stamp_contract_v1.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import pyarrow as pa

CONTRACT_FILE = "stamp_contract_v1.json"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # string | integer | float | binary
    nullable: bool
    unit: str
    required: bool
    description: str

    def accepts(self, arrow_type: pa.DataType) -> bool:
        t = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
        if pa.types.is_null(t):
            # a column every row leaves empty, as pandas writes an all-missing column: the same
            # as nulls in a typed column, so fine where the contract allows nulls
            return self.nullable
        if self.type == "string":
            return pa.types.is_string(t) or pa.types.is_large_string(t)
        if self.type == "integer":
            # 0/1 flags written as booleans by some writers are the same information
            return pa.types.is_integer(t) or pa.types.is_boolean(t)
        if self.type == "float":
            return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t)
        if self.type == "binary":
            return pa.types.is_binary(t) or pa.types.is_large_binary(t)
        raise ValueError(f"contract column {self.name} has unknown type {self.type!r}")

    def arrow_type(self) -> pa.DataType:
        """The Arrow type this column takes in the cache when a file stores it as type null."""
        return {"string": pa.string(), "integer": pa.int64(), "float": pa.float64(), "binary": pa.binary()}[self.type]


@dataclass(frozen=True)
class Contract:
    name: str
    version: int
    partition_key: str
    splits: tuple[str, ...]
    bands: tuple[str, ...]
    band_keys: dict
    stamp_sizes: tuple[int, ...]
    lens_models: tuple[str, ...]
    pixel_scale_arcsec: float
    columns: tuple[Column, ...]

    @property
    def required(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.required)

    @property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    def required_names(self) -> list[str]:
        return [c.name for c in self.required]


@lru_cache(maxsize=1)
def load_contract() -> Contract:
    raw = json.loads(resources.files("dhs.contract").joinpath(CONTRACT_FILE).read_text())
    return Contract(
        name=raw["name"],
        version=int(raw["version"]),
        partition_key=raw["partition_key"],
        splits=tuple(raw["splits"]),
        bands=tuple(raw["bands"]),
        band_keys=dict(raw["band_keys"]),
        stamp_sizes=tuple(raw["stamp_sizes"]),
        lens_models=tuple(raw["lens_models"]),
        pixel_scale_arcsec=float(raw["pixel_scale_arcsec"]),
        columns=tuple(Column(**c) for c in raw["columns"]),
    )
