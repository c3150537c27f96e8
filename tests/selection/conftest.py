from __future__ import annotations

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def small_population():
    """Val and test rows (no pixels) of a small draw of the simulated survey's population."""
    import yaml

    from dhs.selection.closure import population_metadata

    sim = yaml.safe_load(open(REPO / "params.yaml"))["simulate"]
    return population_metadata(sim, n_stamps=6000, n_regions=60, extra_controls={"test": 2.0})


@pytest.fixture(scope="session")
def analytic_file(small_population, tmp_path_factory):
    from dhs.selection.closure import analytic_selection_file

    path = tmp_path_factory.mktemp("sf") / "analytic.json"
    doc = analytic_selection_file(path, small_population, seed=3, n_replicates=20)
    return path, doc
