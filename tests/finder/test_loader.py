"""The loader: sharding without duplicates, annulus normalisation that keeps colour, batched
augmentation, the preprocess params."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from dhs.contract import validate
from dhs.imaging.cache import build_cache, open_split
from dhs.models.loader import (NormConfig, ShardedSampler, StampDataset, annulus_mask, augment_dihedral, iterate_batches,
                        normalize, shard_indices)


def read_all(root):
    return ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pandas()


@pytest.mark.parametrize("world, workers", [(1, 1), (2, 1), (2, 3), (4, 2)])
def test_shards_are_disjoint_and_cover_every_row(world, workers):
    n = 1003
    for shuffle in (False, True):
        parts = [shard_indices(n, r, world, w, workers, shuffle=shuffle, seed=5, epoch=2) for r in range(world) for w in range(workers)]
        allidx = np.concatenate(parts)
        assert len(allidx) == n and len(np.unique(allidx)) == n
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    a = shard_indices(n, 0, 2, shuffle=True, seed=5, epoch=0)
    b = shard_indices(n, 0, 2, shuffle=True, seed=5, epoch=1)
    assert not np.array_equal(a, b) and np.array_equal(a, shard_indices(n, 0, 2, shuffle=True, seed=5, epoch=0))


def test_dataloader_with_workers_and_ranks_sees_each_row_once(sim_dataset, tmp_path):
    build_cache(validate(sim_dataset, progress=False), tmp_path / "cache", progress=False)
    split = open_split(tmp_path / "cache", "train")
    dataset = StampDataset(split)
    seen = []
    for rank in range(2):
        sampler = ShardedSampler(len(dataset), rank=rank, world_size=2, shuffle=True, seed=1)
        loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=2, collate_fn=StampDataset.collate)
        for x, y in loader:
            assert x.shape[1:] == (3, 64, 64) and x.dtype == torch.float32
            seen.append(len(y))
    assert sum(seen) == len(dataset)
    x0, y0 = dataset[3]
    assert x0.shape == (3, 64, 64) and float(y0) == dataset.labels[3]
    rows = np.concatenate([r for _, _, r in iterate_batches(split, np.arange(len(split)), 7, NormConfig.from_params({}))])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(split)))


def _stamp_with_arc(rng, colour=(0.5, 1.0, 1.6), sky=(0.01, 0.02, 0.05), sigma=(0.003, 0.004, 0.012)):
    x = rng.normal(0, 1, (3, 64, 64)).astype(np.float32) * np.asarray(sigma, np.float32)[:, None, None]
    arc = np.zeros((64, 64), np.float32)
    arc[24:40, 38:41] = 0.2
    for b in range(3):
        x[b] += sky[b] + colour[b] * arc
    return torch.from_numpy(x)[None]


def test_annulus_normalisation_keeps_colour_and_ignores_the_centre():
    rng = np.random.default_rng(0)
    x = _stamp_with_arc(rng)
    cfg = NormConfig.from_params(dict(clip=1e9))
    y = normalize(x, cfg)
    arc = (slice(24, 40), slice(38, 41))
    flux = y[0][:, arc[0], arc[1]].sum(dim=(1, 2))
    np.testing.assert_allclose((flux / flux[1]).numpy(), [0.5, 1.0, 1.6], rtol=0.02)
    # per-band scaling would not keep it: z is 3x noisier than r, so its arc shrinks 3x
    per_band = normalize(x, NormConfig.from_params(dict(mode="annulus_per_band", clip=1e9)))
    f2 = per_band[0][:, arc[0], arc[1]].sum(dim=(1, 2))
    assert float(f2[2] / f2[1]) == pytest.approx(1.6 / 3, rel=0.1)
    # invariant to the sky offsets and to the overall flux scale
    np.testing.assert_allclose(normalize(3.0 * x + 0.7, cfg).numpy(), y.numpy(), atol=1e-3)
    # the centre (where the label lives) does not set the statistics
    x2 = x.clone()
    x2[..., 28:36, 28:36] += 50.0
    diff = (normalize(x2, cfg) - y)[..., annulus_mask(64, 0.65, 1.0)]
    assert diff.abs().max() < 1e-5
    # annulus sky is at 0 with unit scale; clipping applies
    ring = y[..., annulus_mask(64, 0.65, 1.0)]
    assert abs(float(ring.median())) < 0.05
    # one scale for all bands: the bands' noise keeps its ratio (g/z = 0.003/0.012)
    assert float(ring[0, 0].std() / ring[0, 2].std()) == pytest.approx(0.25, rel=0.1)
    assert float(normalize(x2, NormConfig.from_params(dict(clip=20))).max()) == 20.0


def test_augmentation_applies_one_of_the_eight_symmetries_per_stamp():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8).repeat(32, 1, 1, 1)
    out = augment_dihedral(x, torch.Generator().manual_seed(0))
    candidates = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)] + [torch.rot90(x.flip(-1), k, dims=(-2, -1)) for k in range(4)]
    which = []
    for i in range(len(x)):
        m = [j for j, c in enumerate(candidates) if torch.equal(out[i], c[i])]
        assert len(m) == 1
        which.append(m[0])
    assert set(which) == set(range(8))
    # deterministic given the generator
    assert torch.equal(out, augment_dihedral(x, torch.Generator().manual_seed(0)))


@pytest.mark.gpu
def test_normalisation_and_augmentation_on_gpu_match_cpu():
    rng = np.random.default_rng(0)
    x = torch.cat([_stamp_with_arc(rng) for _ in range(16)])
    np.testing.assert_allclose(normalize(x.cuda(), NormConfig.from_params({})).cpu().numpy(), normalize(x, NormConfig.from_params({})).numpy(), atol=1e-5)
    assert augment_dihedral(x.cuda(), torch.Generator(device="cuda").manual_seed(0)).shape == x.shape


def test_bad_norm_params_are_refused():
    with pytest.raises(ValueError, match="mode"):
        NormConfig.from_params({"mode": "zscore"})
    with pytest.raises(ValueError, match="unknown"):
        NormConfig.from_params({"clipp": 3})


def test_params_preprocess_section_parses():
    import yaml

    from dhs.models.loader import preprocess_from_params

    norm, augment = preprocess_from_params(yaml.safe_load(open("params.yaml"))["preprocess"])
    assert norm.mode == "annulus_common" and norm.clip == 20.0 and augment is True
    with pytest.raises(ValueError, match="augment"):
        preprocess_from_params({"augment": "yes"})




def _host_with_photon_noise(rng, host_flux_nmgy, sky_sigma=0.004, gain=2000.0, arc_amp=0.0):
    """(1, 3, 64, 64): a round, centrally peaked host (Moffat-like) of ``host_flux_nmgy`` in r with
    the photon noise of its own light on top of the sky (variance sky^2 + f / gain), and an
    optional arc segment at 10 px of amplitude ``arc_amp`` nMgy."""
    yy, xx = np.mgrid[:64, :64] - 31.3
    r2 = yy**2 + xx**2
    prof = (1 + r2 / 9.0) ** -2.5
    light = host_flux_nmgy * prof / prof.sum() * np.array([0.4, 1.0, 1.5])[:, None, None]
    theta = np.arctan2(yy, xx)
    light = light + arc_amp * ((np.abs(np.sqrt(r2) - 10) < 1.0) & (np.abs(theta) < 0.5))[None] * np.array([1.0, 1.0, 0.8])[:, None, None]
    noise = rng.normal(size=light.shape) * np.sqrt(sky_sigma**2 + np.clip(light, 0, None) / gain)
    return torch.from_numpy((light + noise)[None].astype(np.float32))


def test_noise_profile_puts_a_bright_hosts_residual_in_units_of_its_photon_noise():
    """Sky-scaled, the residual inside a bright host is its photon noise, many times the sky's;
    with residual_noise_profile every annulus is in units of its own scatter, so the core of a
    bright host looks like the sky of a faint one, and an arc on a faint host keeps its SNR."""
    rng = np.random.default_rng(3)
    base = NormConfig.from_params(dict(radial_profile_subtract=True, radial_profile_shape="ellipse", residual_noise_scale=True, clip=1e9))
    prof = dataclasses.replace(base, residual_noise_profile=True)
    core = torch.from_numpy(np.hypot(*(np.mgrid[:64, :64] - 31.5)) < 6)

    def core_scatter(x, cfg):  # robust amplitude of the residual, whatever its origin (noise or the profile's misfit)
        return float(normalize(x, cfg)[0, 1][core].abs().median() * 1.4826)

    bright, faint = _host_with_photon_noise(rng, 300.0), _host_with_photon_noise(rng, 3.0)
    assert core_scatter(bright, base) > 3.0  # photon noise of the host, in units of the sky
    assert 0.6 < core_scatter(bright, prof) < 1.6
    assert 0.6 < core_scatter(faint, prof) < 1.6 and 0.6 < core_scatter(faint, base) < 1.6
    # a faint host is sky-limited: the profile leaves it (and an arc on it) as it was
    arc = _host_with_photon_noise(np.random.default_rng(4), 3.0, arc_amp=0.02)
    a, b = normalize(arc, base)[0, 1], normalize(arc, prof)[0, 1]
    on_arc = torch.from_numpy((np.abs(np.hypot(*(np.mgrid[:64, :64] - 31.3)) - 10) < 1.0) & (np.abs(np.arctan2(*(np.mgrid[:64, :64] - 31.3))) < 0.5))
    assert float(b[on_arc].mean()) > 0.8 * float(a[on_arc].mean()) > 3.0


def test_noise_profile_needs_the_host_subtraction_it_scales():
    from dhs.models.loader import preprocess_from_params

    with pytest.raises(ValueError, match="residual_noise_profile"):
        preprocess_from_params({"augment": True, "radial_profile_subtract": False, "residual_noise_profile": True})


def test_raw_and_residual_input_gives_six_channels_the_models_take():
    """``preprocess.input: raw_and_residual``: the asinh-stretched annulus-normalised stamp, then
    the host-subtracted view (the same as ``input: residual`` gives alone); every arch builds with
    six input channels and scores such a batch."""
    import dataclasses

    from dhs.models.registry import build_model
    from dhs.models.spec import ModelSpec

    rng = np.random.default_rng(3)
    yy, xx = np.indices((64, 64)) - 31.5
    host = 400.0 * np.exp(-np.hypot(xx, yy) / 3.0)
    x = torch.tensor(host[None, None] + rng.normal(0, 1, (4, 3, 64, 64)), dtype=torch.float32)
    base = NormConfig.from_params(dict(mode="annulus_common", radial_profile_subtract=True, radial_profile_shape="ellipse", residual_noise_scale=True))
    both = dataclasses.replace(base, input="raw_and_residual", raw_softening=3.0)
    assert base.channels == 3 and both.channels == 6
    one, two = normalize(x, base), normalize(x, both)
    assert one.shape == (4, 3, 64, 64) and two.shape == (4, 6, 64, 64)
    torch.testing.assert_close(two[:, 3:], one)
    scaled = normalize(x, NormConfig.from_params(dict(mode="annulus_common", clip=1e9)))
    torch.testing.assert_close(two[:, :3], torch.asinh(scaled / 3.0))
    assert two[:, :3, 30:34, 30:34].mean() > 4.0 and one[:, :, 30:34, 30:34].abs().mean() < 3.0  # the core is kept in the raw view only
    for arch in ("small_cnn", "resnet18", "efficientnet_b0"):
        model = build_model(ModelSpec(arch, 64, channels=6)).eval()
        with torch.no_grad():
            assert model(two).shape == (4,)
    with pytest.raises(ValueError, match="channels"):
        build_model(ModelSpec("small_cnn", 64, channels=4))
