"""python -m dhs.selection: a catalogue annotated with P(found), rows outside the calibrated range
flagged and counted, missing or bad columns named."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dhs.selection.function import SelectionFunction
from tests.conftest import REPO


def _catalogue(path, n=100_000, seed=0, rename=None):
    f = SelectionFunction.load(path)
    rng = np.random.default_rng(seed)
    cat = pd.DataFrame({k: rng.uniform(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), n) for k, (lo, hi) in f.input_range.items()})
    cat.insert(0, "name", [f"L{i:06d}" for i in range(n)])
    return f, cat.rename(columns=rename or {})


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dhs.selection", *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_annotates_a_1e5_row_catalogue_and_flags_rows_outside(analytic_file, tmp_path):
    path, _ = analytic_file
    f, cat = _catalogue(path)
    cat.to_csv(tmp_path / "cat.csv", index=False)
    out = _cli("annotate", "--model", path, "--input", tmp_path / "cat.csv", "--output", tmp_path / "out.parquet")
    assert out.returncode == 0, out.stderr
    got = pd.read_parquet(tmp_path / "out.parquet")
    assert len(got) == len(cat) and (got["name"] == cat["name"]).all()            # every row, in order
    inside = f.inside(**{k: cat[k].to_numpy() for k in f.input_range})
    assert (got["sf_in_range"].to_numpy() == inside).all()
    assert 0 < inside.sum() < len(cat)
    assert got.loc[~inside, ["sf_p", "sf_lo", "sf_hi"]].isna().all().all()
    assert got.loc[inside, "sf_p"].between(0, 1).all() and (got.loc[inside, "sf_lo"] <= got.loc[inside, "sf_p"]).all()
    p, _, _ = f(**{k: cat[k].to_numpy() for k in f.input_range})
    np.testing.assert_array_equal(got["sf_p"].to_numpy(), p)
    assert f"{int(inside.sum())} in range, {int((~inside).sum())} outside" in out.stdout
    assert "outside: theta_e_arcsec:" in out.stdout                             # which inputs put rows outside


def test_column_mapping_parquet_in_csv_out(analytic_file, tmp_path):
    path, _ = analytic_file
    f, cat = _catalogue(path, n=500, rename={"theta_e_arcsec": "THETA_E", "magnification": "MU"})
    cat.to_parquet(tmp_path / "cat.parquet", index=False)
    out = _cli("annotate", "--model", path, "--input", tmp_path / "cat.parquet", "--output", tmp_path / "out.csv",
               "--columns", "theta_e_arcsec=THETA_E,magnification=MU", "--prefix", "cnn_")
    assert out.returncode == 0, out.stderr
    got = pd.read_csv(tmp_path / "out.csv")
    assert {"cnn_p", "cnn_lo", "cnn_hi", "cnn_in_range"} <= set(got.columns) and len(got) == 500


@pytest.mark.parametrize("case, match", [
    ("missing", "missing column(s) lens_r_mag"),
    ("mapped_missing", "theta_e_arcsec (column 'TE')"),
    ("not_a_number", "column 'src_r_mag' row 3: 'bright' is not a number"),
    ("bad_mapping", "'theta' is not an input"),
])
def test_bad_catalogues_are_named(analytic_file, tmp_path, case, match):
    path, _ = analytic_file
    _, cat = _catalogue(path, n=20)
    extra = []
    if case == "missing":
        cat = cat.drop(columns=["lens_r_mag"])
    elif case == "mapped_missing":
        extra = ["--columns", "theta_e_arcsec=TE"]
    elif case == "not_a_number":
        cat["src_r_mag"] = cat["src_r_mag"].astype(object)
        cat.loc[3, "src_r_mag"] = "bright"
    else:
        extra = ["--columns", "theta=THETA"]
    cat.to_csv(tmp_path / "cat.csv", index=False)
    out = _cli("annotate", "--model", path, "--input", tmp_path / "cat.csv", "--output", tmp_path / "o.csv", *extra)
    assert out.returncode == 2
    assert match in out.stderr
    assert not (tmp_path / "o.csv").exists()


def test_describe_names_inputs_units_and_ranges(analytic_file):
    path, _ = analytic_file
    out = _cli("describe", "--model", path)
    assert out.returncode == 0, out.stderr
    assert "theta_e_arcsec" in out.stdout and "arcsec" in out.stdout and "non-decreasing" in out.stdout
