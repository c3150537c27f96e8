"""The seed's experiment switches: theta_E head (masked on controls), colour conditioning from the
stamp, the regression summary, and the same population at 64 and 96 px."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dhs.models.loader import NormConfig
from dhs.models.registry import build_model
from dhs.models.spec import ModelSpec
from dhs.models.colours import host_colours_nmgy
from dhs.models.heads import split_outputs
from dhs.evaluation.regression import theta_e_regression_table
from dhs.finder.training import TrainConfig, train, training_loss
from tests.conftest import REPO


def test_host_colours_from_the_stamp_recover_known_colours():
    """A bright host (g-r = 1.2, r-z = 0.7) on a sky pedestal with noise, in nMgy: the colours come
    back from the raw stamp, unclipped (a normalised core would saturate at +-20 sigma)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64] - 31.5
    profile = 3.0 * np.exp(-(xx**2 + yy**2) / (2 * 3.0**2))   # ~3 nMgy/px peak: ~1000 sigma
    f = np.array([10 ** (-0.4 * 1.2), 1.0, 10 ** (0.4 * 0.7)])
    img = f[:, None, None] * profile + np.array([0.01, 0.02, 0.05])[:, None, None] + 0.003 * rng.standard_normal((3, 64, 64))
    c = host_colours_nmgy(img[None])[0]
    assert c[0] == pytest.approx(1.2, abs=0.01) and c[1] == pytest.approx(0.7, abs=0.01)
    assert np.isfinite(host_colours_nmgy(np.zeros((2, 3, 64, 64)))).all()  # blank: floored, not NaN


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18", "hybrid"])
def test_heads_attach_to_any_arch(arch):
    meta = ("psfsize_r",) if arch == "hybrid" else ()
    m = build_model(ModelSpec(arch, 64, metadata=meta, colour=True, theta_head=True)).eval()
    args = (torch.zeros(3, 1),) if meta else ()
    colours = torch.tensor([[1.6, 1.1], [1.7, 1.0], [0.5, 0.3]])
    logits, theta = split_outputs(m(torch.randn(3, 3, 64, 64), *args, colours))
    assert logits.shape == (3,) and theta.shape == (3,) and (theta > 0).all()
    with pytest.raises(ValueError, match="host colours"):
        m(torch.randn(3, 3, 64, 64))
    plain = build_model(ModelSpec(arch, 64, metadata=meta))
    assert split_outputs(plain.eval()(torch.randn(3, 3, 64, 64), *args))[1] is None


def test_theta_loss_is_masked_on_controls(sim_cache, tmp_path):
    """Training with the theta_E head: controls carry theta_E = 0 in the data, and a model that
    regressed them would pull its predictions to 0; the masked loss must not see them."""
    p = yaml.safe_load(open(REPO / "params.yaml"))["train"]
    p.update(epochs=1, steps_per_epoch=3, batch_size=16, theta_head=True, warmup_steps=0)
    cfg = TrainConfig.from_params(p, "small_cnn")
    metrics = train(cfg, sim_cache, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False)
    assert np.isfinite(metrics["best"]["loss"])
    # the loss the training loop takes: a batch of controls only contributes nothing to the theta head's gradient
    model = build_model(ModelSpec("small_cnn", 64, theta_head=True))
    logits, theta = split_outputs(model(torch.randn(4, 3, 64, 64)))
    training_loss(logits, torch.zeros(4), theta, torch.full((4,), 1.5), cfg.theta_loss_weight).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.heads.theta.parameters())
    # and a batch with injections does reach the head (the mask is not all-zero)
    model.zero_grad()
    logits, theta = split_outputs(model(torch.randn(4, 3, 64, 64)))
    training_loss(logits, torch.tensor([1.0, 0.0, 1.0, 0.0]), theta, torch.full((4,), 1.5), cfg.theta_loss_weight).backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in model.heads.theta.parameters())


def test_colour_conditioned_model_trains_and_scores(sim_cache, tmp_path):
    """Colours reach the model in training, inference on the cache and inference on raw arrays,
    with any normalisation (they are measured before it)."""
    from dhs.models.checkpoint import load_trained
    from dhs.models.inference import score_images, score_split
    from dhs.imaging.cache import open_split

    p = yaml.safe_load(open(REPO / "params.yaml"))["train"]
    p.update(epochs=1, steps_per_epoch=2, batch_size=8, colour_conditioning=True, warmup_steps=0)
    cfg = TrainConfig.from_params(p, "small_cnn")
    train(cfg, sim_cache, tmp_path / "m", NormConfig.from_params(dict(radial_profile_subtract=True)), augment=False, progress=False)
    tm = load_trained(tmp_path / "m", "cpu")
    assert tm.spec.colour
    test = open_split(sim_cache, "test")
    a = score_split(tm, test, progress=False)
    b = score_images(tm, np.asarray(test.images, dtype=np.float32))
    np.testing.assert_allclose(a, b, atol=2e-3)  # stored vs on-the-fly annulus statistics


def test_theta_regression_table_on_known_residuals():
    rng = np.random.default_rng(0)
    n = 400
    true = rng.uniform(0.5, 2.5, n)
    psf = np.full(n, 1.25)
    pred = true + np.where(true / psf < 1, 0.3, -0.1)  # biased up where unresolved, down elsewhere
    df = pd.DataFrame({"split": "test", "label": 1, "theta_e_arcsec": true, "theta_e_pred_arcsec": pred, "theta_e_over_psf": true / psf})
    ctl = pd.DataFrame({"split": "test", "label": 0, "theta_e_arcsec": 0.0, "theta_e_pred_arcsec": 1.0, "theta_e_over_psf": np.nan}, index=range(50))
    t = theta_e_regression_table(pd.concat([df, ctl], ignore_index=True), [0, 1, 3]).set_index("theta_e_over_psf_bin")
    assert t.loc["all", "n"] == n  # controls never enter
    assert t.loc["[0, 1)", "bias_arcsec"] == pytest.approx(0.3) and t.loc["[1, 3)", "bias_arcsec"] == pytest.approx(-0.1)
    assert t.loc["[1, 3)", "scatter_arcsec"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="theta_E head"):
        theta_e_regression_table(df.drop(columns=["theta_e_pred_arcsec"]), [0, 1])


def test_same_population_at_64_and_96_px():
    from dhs.simulate.config import SimConfig
    from dhs.simulate.population import sample_population

    p = yaml.safe_load(open(REPO / "params.yaml"))["simulate"]
    p.update(n_stamps=300, n_regions=6)
    a = sample_population(SimConfig.from_params(p))
    q = copy.deepcopy(p)
    q["stamp_size"] = 96
    b = sample_population(SimConfig.from_params(q))
    same = [c for c in a.columns if c not in ("experiment_id", "config_id", "stamp_size")]
    pd.testing.assert_frame_equal(a[same], b[same])
    assert set(b["stamp_size"]) == {96}
