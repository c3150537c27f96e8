"""Thresholds at a target FPR on controls: within one control of the target, never above it."""

from __future__ import annotations

import numpy as np
import pytest

from dhs.evaluation.thresholds import ThresholdError, fixed_threshold, threshold_at_fpr


@pytest.mark.parametrize("fpr", [0.1, 0.05, 0.01, 0.003, 1e-3])
def test_fpr_threshold_within_one_control(fpr):
    rng = np.random.default_rng(int(fpr * 1e4))
    for n in (37, 1000, 2149, 6000):
        s = rng.random(n)
        t = threshold_at_fpr(s, fpr)
        achieved = (s > t.score).mean()
        assert achieved <= fpr + 1e-12 and achieved > fpr - 1.0 / n, (n, achieved)
        assert t.n_controls_above == (s > t.score).sum() and t.n_controls == n
        assert t.low_count == (fpr * n < 10)
    # heavy ties: the achieved FPR never exceeds the target
    s = np.round(rng.random(5000), 2)
    t = threshold_at_fpr(s, 0.01)
    assert (s > t.score).mean() <= 0.01
    assert fixed_threshold(s, 0.5).n_controls_above == (s > 0.5).sum()
    with pytest.raises(ThresholdError, match="no control"):
        threshold_at_fpr([], 0.01)
    with pytest.raises(ThresholdError, match="NaN"):
        threshold_at_fpr([0.1, np.nan], 0.01)


def test_operating_points_are_shown_in_words_and_colour_scales_fit_the_data():
    from dhs.evaluation.display import colour_top
    from dhs.evaluation.thresholds import fpr_name, operating_point_label, score_name

    assert [operating_point_label(fpr_name(f)) for f in (0.1, 0.01, 0.001, 1e-4)] == ["FPR 10%", "FPR 1%", "FPR 0.1%", "FPR 0.01%"]
    assert operating_point_label(score_name(0.5)) == "score > 0.5"
    assert operating_point_label("small_cnn fpr_0.01") == "small_cnn FPR 1%"
    assert operating_point_label("proxy t=0.8") == "proxy t=0.8" and operating_point_label("fpr_x") == "fpr_x"
    # a surface whose cells all lie at or below 0.15 gets a 0-0.2 scale; a full one 0-1; an empty one 0-1
    assert colour_top([0.02, 0.15, np.nan]) == 0.2 and colour_top([0.3, 0.95]) == 1.0 and colour_top([np.nan]) == 1.0
    assert colour_top([0.0]) == 0.05
