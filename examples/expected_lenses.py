"""How many lenses will this finder find? A worked example of the selection-function file.

    python examples/expected_lenses.py [--model data/selection/small_cnn.json] [--density 0.05] [--area 14000]
        [--catalogue my_population.parquet [--weight COLUMN]] [--n-stamps 48000]

The expected number of lenses a finder finds over an area A at an operating point is

    N_found = (lens density) x A x <P(found | x)>_population,

with <P> the mean of the selection function over the population of lenses on the sky. This script
takes the population from ``--catalogue`` (any table with the function's seven input columns, one
row per lens, optionally weighted) or, by default, from the simulated survey's physical prior (the
measurement injections weighted back to the sky with ``sky_weight``, drawn here without pixels),
and prints, for every operating point in the file: <P> with its 95 % band (from the model's
coefficient draws, so it is the band of the mean), how much of the population lies outside the
calibrated range (unmeasured, not zero: report it), and N_found for the density and area given.

The default density is a placeholder for illustration (lenses per square degree above the
population's own cuts); use the forecast that matches your population (e.g. Collett 2015 for
LensPop). DR10's footprint is ~14,000 deg^2 in g, r and z.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "data/selection/small_cnn.json"))
    ap.add_argument("--density", type=float, default=0.05, help="lenses per deg^2 in the population (placeholder default)")
    ap.add_argument("--area", type=float, default=14000.0, help="survey area, deg^2")
    ap.add_argument("--catalogue", default=None, help="CSV or parquet with the seven inputs as columns")
    ap.add_argument("--weight", default=None, help="a column of the catalogue with each lens's weight")
    ap.add_argument("--n-stamps", type=int, default=48000, help="size of the simulated survey drawn when no catalogue is given")
    a = ap.parse_args(argv)

    import numpy as np

    from dhs.selection.function import INPUTS, SelectionFunction

    if not Path(a.model).exists():
        print(f"{a.model}: no selection-function file; run `make repro` (or dvc repro selection@small_cnn) first", file=sys.stderr)
        return 2
    if a.catalogue:
        from dhs.selection.cli import _read

        cat = _read(Path(a.catalogue))
        missing = [k for k in INPUTS if k not in cat.columns]
        if missing:
            print(f"{a.catalogue}: missing column(s) {missing}", file=sys.stderr)
            return 2
        x = {k: cat[k].to_numpy(float) for k in INPUTS}
        w = cat[a.weight].to_numpy(float) if a.weight else None
        what = f"{len(cat)} lenses of {a.catalogue}" + (f" weighted by {a.weight}" if a.weight else "")
    else:
        from dhs.params import as_params
        from dhs.selection.closure import population_metadata
        from dhs.selection.inputs import selection_inputs

        sim = as_params(REPO / "params.yaml")["simulate"]
        meta = population_metadata(sim, n_stamps=a.n_stamps, extra_controls={})
        inj = meta[meta["label"] == 1]
        x = selection_inputs(inj)
        w = inj["sky_weight"].to_numpy(float)
        what = f"{len(inj)} lenses of the simulated survey's physical population (measurement draw x sky_weight)"
    print(f"population: {what}")
    print(f"N_found = {a.density:g} lenses/deg^2 x {a.area:g} deg^2 x <P>")
    first = SelectionFunction.load(a.model)
    for name in first.operating_points:
        sf = SelectionFunction.load(a.model, name)
        m = sf.mean(weights=w, **x)
        n_all = a.density * a.area
        print(f"  {name:>10} (score > {sf.threshold:.4g}): <P> = {m['mean']:.4f} [{m['lo']:.4f}, {m['hi']:.4f}]  "
              f"N_found = {n_all * m['mean']:.0f} [{n_all * m['lo']:.0f}, {n_all * m['hi']:.0f}]  "
              f"(outside the calibrated range: {m['n_outside']} lenses, {m['weight_outside_fraction']:.1%} of the weight; "
              f"<P> is over the rest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
