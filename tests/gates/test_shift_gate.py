"""The shift gate: a scorer that keys on the exact stamp centre fails it, one that does not passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dhs.evaluation.scores import sigmoid
from dhs.gates.config import GatesConfig
from dhs.gates.shift import operating_thresholds, shift_gate, shift_images
from dhs.imaging.centring import subtract_radial_profile_about_host
from dhs.models.loader import subtract_radial_profile


@pytest.fixture(scope="module")
def stamps():
    """Simulated off-centre stamps (physical population, fields, hard negatives), 600 of them."""
    from tests.conftest import small_sim_params
    from dhs.simulate.config import SimConfig
    from dhs.simulate.population import sample_population
    from dhs.simulate.survey import render_batches

    cfg = SimConfig.from_params(small_sim_params(n_stamps=600))
    batches = list(render_batches(sample_population(cfg), cfg))
    rows = __import__("pandas").concat([b.rows for b in batches], ignore_index=True)
    img = np.concatenate([b.images for b in batches])
    ok = rows.cutout_ok.to_numpy() == 1
    return img[ok], rows[ok].reset_index(drop=True)


def _residual_score(subtract):
    """log10 of the squared residual inside 8 px after a radial-profile subtraction, in sky sigma."""
    def score(images, meta):
        x = torch.from_numpy(np.asarray(images, dtype=np.float32))
        sig = torch.tensor(meta["sky_sigma_r_nmgy"].to_numpy(np.float32))[:, None, None]
        res = subtract(x)[:, 1] / sig
        yy, xx = np.indices(res.shape[-2:])
        inner = torch.from_numpy(np.hypot(yy - 31.5, xx - 31.5) < 8)
        return np.log10((res[:, inner] ** 2).mean(dim=1).numpy() + 1e-3)
    return score


def _run(stamps, score):
    img, meta = stamps
    y = (meta.is_control.to_numpy() == 0).astype(int)
    logits = score(img, meta)
    cfg = GatesConfig.from_params({"shift_offsets_px": [[0.5, 0.5], [0.0, 1.0], [2.0, 0.0]]})
    thr = operating_thresholds(None, sigmoid(logits[y == 0]), (0.1, 0.05), 10.0)
    return shift_gate(score, img, meta, y, logits, cfg, thr, 10.0)


def test_a_scorer_keyed_on_the_stamp_centre_fails(stamps):
    r = _run(stamps, _residual_score(subtract_radial_profile))  # profile about the stamp centre
    assert r["status"] == "FAIL" and r["value"] > 1.5
    # decided on the interval: ~300 controls resolve the two-pixel shift's FPR ratio from 1.5
    assert r["decision"] == "beyond" and r["value_ci95"][0] > 1.5, r["detail"]


def test_a_scorer_that_follows_the_host_passes(stamps):
    r = _run(stamps, _residual_score(subtract_radial_profile_about_host))
    assert r["status"] == "PASS", r["detail"]
    assert r["value"] <= 1.5 and r["value_ci95"][0] <= r["value"] <= r["value_ci95"][1]
    assert all(s["auroc_drop_ci95"][0] <= 0.005 for s in r["shifts"])
    assert set(r["gated_thresholds"]) == {"fpr_0.1", "fpr_0.05"}
    one = r["shifts"][1]["thresholds"]["fpr_0.1"]
    assert one["above_unshifted"] == round(0.1 * r["n_controls"]) or abs(one["above_unshifted"] - 0.1 * r["n_controls"]) <= 1


def test_shift_images_rolls_whole_pixels_and_interpolates_fractions():
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(shift_images(x, 1, -2), np.roll(x, (1, -2), axis=(-2, -1)))
    # band-limited images (stamps are PSF-convolved): two half-pixel shifts make one whole
    k = np.fft.fftfreq(16)
    lowpass = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 0.15**2))
    x = np.fft.ifft2(np.fft.fft2(x) * lowpass).real.astype(np.float32)
    half = shift_images(shift_images(x, 0.5, 0.0), 0.5, 0.0)
    np.testing.assert_allclose(half, np.roll(x, 1, axis=-2), atol=1e-3)  # what is left: the Nyquist row
