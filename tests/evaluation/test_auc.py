"""The one AUC of the pipeline and its bootstrap interval (rows, regions, stratified), and the ROC
curve the report draws: one point per distinct score, its area the Mann-Whitney AUC."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dhs.evaluation.auc import auroc, bootstrap_auroc, roc_curve, thin_curve


def _area(f, t) -> float:
    """Trapezoidal area under a ROC given as (fpr, tpr)."""
    return float(np.trapezoid(t, f)) if hasattr(np, "trapezoid") else float(np.trapz(t, f))


def test_auc_matches_sklearn_with_ties_and_the_bootstrap_interval_covers_it():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(y * 0.5, 1.0), 1)  # coarse scores: many ties
    assert auroc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0 and auroc([0, 1], [0.5, 0.5]) == 0.5
    groups = rng.integers(0, 20, 500)
    b = bootstrap_auroc(y, s, groups, 200, seed=0, unit="region")
    assert b["unit"] == "region" and b["n_regions"] == 20 and b["n_valid"] == 200
    assert b["ci95"][0] < auroc(y, s) < b["ci95"][1] and 0.05 < b["ci95"][1] - b["ci95"][0] < 0.2
    # too few regions: rows instead, and said so
    few = bootstrap_auroc(y, s, groups % 3, 50, seed=0, unit="region")
    assert few["unit"] == "row" and "only 3 regions" in few["note"]
    assert bootstrap_auroc(y, s, None, 0, seed=0)["ci95"] is None
    # deterministic given the seed, and the seed matters
    assert bootstrap_auroc(y, s, groups, 200, seed=0, unit="region") == b
    assert bootstrap_auroc(y, s, groups, 200, seed=1, unit="region")["ci95"] != b["ci95"]


def test_roc_keeps_the_last_point_of_ties_and_its_area_is_the_mann_whitney_auc():
    scores = np.array([0.9, 0.9, 0.8, 0.7, 0.7, 0.7, 0.2, 0.1])
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    f, t = roc_curve(scores, labels)
    assert (f[0], t[0]) == (0.0, 0.0)
    assert len(f) == len(np.unique(scores)) + 1          # one point per distinct score
    np.testing.assert_allclose(f, [0, 0.25, 0.25, 0.75, 0.75, 1.0])
    np.testing.assert_allclose(t, [0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert _area(f, t) == pytest.approx(roc_auc_score(labels, scores))
    rng = np.random.default_rng(3)
    s, y = rng.integers(0, 20, 500) / 20.0, rng.integers(0, 2, 500)
    assert _area(*roc_curve(s, y)) == pytest.approx(roc_auc_score(y, s))
    # the drawn curve is thinned for big tables but keeps its ends and its shape
    s, y = rng.normal(size=50_000), rng.integers(0, 2, 50_000)
    f, t = roc_curve(s + 2 * y, y)
    ff, tt = thin_curve(f, t, 1000)
    assert len(ff) <= 2000 and (ff[0], tt[0], ff[-1], tt[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(ff) >= 0) and _area(ff, tt) == pytest.approx(_area(f, t), abs=2e-3)
