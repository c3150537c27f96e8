"""Config dataclasses are views of the schema: every dataclass of dhs that declares the params
section it views (``SECTION``) holds keys of that section as fields without defaults (the
schema's default is the one default), and its other fields are given by the caller."""

from __future__ import annotations

import dataclasses
import importlib
import inspect

import pytest

from dhs.params import ParamsError
from dhs.params.schema import SECTIONS
from dhs.params.views import view, viewed_keys
from tests.conftest import REPO


def views() -> list[type]:
    out = {}
    for path in sorted((REPO / "dhs").rglob("*.py")):
        if path.name == "__main__.py":
            continue
        mod = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts).replace(".__init__", ""))
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if dataclasses.is_dataclass(obj) and "SECTION" in vars(obj) and obj.__module__ == mod.__name__:
                out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [out[k] for k in sorted(out)]


def test_views_exist():
    assert any(v.__name__ == "CalibrationConfig" for v in views())


@pytest.mark.parametrize("cls", views(), ids=lambda c: c.__name__)
def test_a_view_repeats_no_default_of_the_schema(cls):
    assert cls.SECTION in SECTIONS, f"{cls.__name__}.SECTION names no params section: {cls.SECTION!r}"
    keys = viewed_keys(cls)
    assert keys, f"{cls.__name__} holds no key of params section {cls.SECTION!r}"
    repeated = [f.name for f in dataclasses.fields(cls) if f.name in keys
                and (f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING)]
    assert not repeated, f"{cls.__name__} repeats the schema's defaults of {repeated}; the schema holds them"


def test_view_takes_checked_values_and_refuses_what_the_schema_refuses():
    from dhs.calibration.config import CalibrationConfig

    cfg = CalibrationConfig.from_params({"n_bins": 7}, evaluation={"fprs": [0.05]})
    assert (cfg.n_bins, cfg.method, cfg.fprs) == (7, SECTIONS["calibration"].fields["method"].default, (0.05,))
    assert isinstance(cfg.strategies, tuple)
    with pytest.raises(ParamsError, match="calibration.n_bins"):
        CalibrationConfig.from_params({"n_bins": "many"})
    with pytest.raises(TypeError, match="neither keys"):
        view(CalibrationConfig, {})   # fprs and min_expected_controls come from evaluation
