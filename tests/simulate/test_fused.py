"""The fused (torch.compile) rendering path against the same code run eagerly, and its fallback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dhs.params import load_params, section
from dhs.simulate import fused
from dhs.params import ParamsError
from dhs.simulate.config import SimConfig
from dhs.simulate.population import sample_population
from dhs.simulate.render import _grow_by_one_pixel, lensed_sersic, render_profile, unlensed_sersic
from tests.conftest import REPO

PIX = 0.262


def lens_params(n: int, seed: int, dtype) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.5, 2.5, n)
    q = rng.uniform(0.5, 1.0, n)
    q[:3] = [1.0, 1.0 - 1e-5, 0.9996]  # the SIS and the e -> 0 series branch
    p = {"theta_e_arcsec": theta, "lens_q": q, "lens_phi_rad": rng.uniform(0, np.pi, n),
         "shear_g1": rng.normal(0, 0.05, n), "shear_g2": rng.normal(0, 0.05, n),
         "src_x_arcsec": rng.uniform(-0.4, 0.4, n) * theta, "src_y_arcsec": rng.uniform(-0.4, 0.4, n) * theta,
         "src_reff_arcsec": rng.uniform(0.15, 0.5, n), "src_n": rng.uniform(0.5, 2.0, n),
         "src_q": rng.uniform(0.5, 1.0, n), "src_phi_rad": rng.uniform(0, np.pi, n)}
    return {k: torch.as_tensor(v, dtype=dtype) for k, v in p.items()}


@pytest.fixture(autouse=True)
def _auto_mode():
    fused.set_compile_mode("auto")
    yield
    fused.set_compile_mode("auto")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("threshold", [0.0, 1e-3])
def test_compiled_rendering_equals_eager(dtype, tol, threshold):
    """Same formulas, fused or not: the images agree to rounding, adaptive mask included."""
    p = lens_params(48, 1, dtype)
    kw = dict(n_pix=64, pixel_scale_arcsec=PIX, oversample=4, threshold=threshold)
    fast = render_profile(lensed_sersic, p, compile=True, **kw)
    slow = render_profile(lensed_sersic, p, compile=False, **kw)
    assert fast.dtype == dtype and fast.shape == (48, 64, 64)
    scale = slow.amax(dim=(-1, -2), keepdim=True)
    assert float(((fast - slow).abs() / scale).max()) < tol
    rel_flux = (fast.sum(dim=(-1, -2)) - slow.sum(dim=(-1, -2))).abs() / slow.sum(dim=(-1, -2))
    assert float(rel_flux.max()) < tol


def test_compiled_host_and_plain_function_profiles_equal_eager():
    host = {"reff_arcsec": torch.tensor([0.8, 2.0, 1.3]), "n": torch.tensor([4.0, 3.0, 1.0]),
            "q": torch.tensor([0.6, 0.95, 1.0]), "phi_rad": torch.tensor([0.1, 2.0, 0.0])}
    kw = dict(n_pix=96, pixel_scale_arcsec=PIX, oversample=4, threshold=0.05)
    a = render_profile(unlensed_sersic, host, compile=True, **kw)
    b = render_profile(unlensed_sersic, host, compile=False, **kw)
    assert float(((a - b).abs() / b.amax()).max()) < 2e-6

    def ring(x, y, p):  # a plain function is a profile too (the gates' ring probe is one)
        r = torch.sqrt(x * x + y * y)
        return torch.exp(-0.5 * ((r - p["radius"]) / p["width"]) ** 2)

    ring_p = {"radius": torch.tensor([1.2, 2.0], dtype=torch.float64), "width": torch.tensor([0.2, 0.3], dtype=torch.float64)}
    kw = dict(n_pix=64, pixel_scale_arcsec=PIX, oversample=4)
    np.testing.assert_allclose(render_profile(ring, ring_p, compile=True, **kw).numpy(),
                               render_profile(ring, ring_p, compile=False, **kw).numpy(), rtol=0, atol=1e-12)


def test_an_empty_batch_renders_to_an_empty_stack():
    p = {k: v[:0] for k, v in lens_params(3, 0, torch.float32).items()}
    for threshold in (0.0, 1e-3):
        out = render_profile(lensed_sersic, p, n_pix=64, pixel_scale_arcsec=PIX, oversample=4, threshold=threshold)
        assert out.shape == (0, 64, 64)


def test_mask_growth_equals_a_3x3_max_filter():
    rng = np.random.default_rng(0)
    mask = torch.as_tensor(rng.uniform(size=(5, 40, 40)) > 0.97)
    mask[0, 0, 0] = mask[1, -1, -1] = mask[2, 0, -1] = True  # corners and edges
    ref = F.max_pool2d(mask[:, None].double(), 3, stride=1, padding=1)[:, 0] > 0
    assert torch.equal(_grow_by_one_pixel(mask), ref)


def test_compile_mode_is_validated():
    with pytest.raises(ValueError, match="auto"):
        fused.set_compile_mode("sometimes")
    fused.set_compile_mode(False)
    assert fused.compile_mode() == "off" and not fused.is_compiled_on("cpu")
    fused.set_compile_mode(True)
    assert fused.compile_mode() == "on"
    fused.set_compile_mode("auto")   # what every other test of this process expects
    params = section(load_params(REPO / "params.yaml"), "simulate")
    assert SimConfig.from_params(params).compile == "auto"
    with pytest.raises(ParamsError, match=re.escape("simulate.compile must be one of ['auto', 'on', 'off'], got 'yes'")):
        SimConfig.from_params({**params, "compile": "yes"})


FALLBACK = textwrap.dedent("""
    import sys, warnings
    import torch, torch._inductor.config as inductor_config
    inductor_config.cpp.cxx = ("/nonexistent/c++",)  # a machine without a working C++ compiler
    from dhs.simulate import fused
    from dhs.simulate.render import render_profile, unlensed_sersic
    fused.set_compile_mode(sys.argv[1])
    p = {"reff_arcsec": torch.tensor([1.0, 2.0]), "n": torch.tensor([4.0, 3.0]), "q": torch.tensor([0.7, 0.9]),
         "phi_rad": torch.tensor([0.1, 1.0])}
    kw = dict(n_pix=32, pixel_scale_arcsec=0.262, oversample=2, threshold=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = render_profile(unlensed_sersic, p, **kw)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    b = render_profile(unlensed_sersic, p, compile=False, **kw)
    print("WARNED", any("torch.compile failed on cpu" in m for m in msgs))
    print("EQUAL", torch.equal(a, b))
    print("COMPILED_AFTER", fused.is_compiled_on("cpu"))
""")


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_without_a_compiler_auto_falls_back_to_eager_and_on_raises(tmp_path, mode):
    """A real compilation failure (inductor pointed at a compiler that does not exist, fresh
    cache), in a subprocess so this process's compiled kernels are untouched."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "TORCHINDUCTOR_FX_GRAPH_CACHE": "0",
           "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-c", FALLBACK, mode], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if mode == "auto":
        assert res.returncode == 0, res.stderr[-2000:]
        assert "WARNED True" in res.stdout and "EQUAL True" in res.stdout and "COMPILED_AFTER False" in res.stdout
    else:
        assert res.returncode != 0
        assert "C++ compiler" in res.stderr or "InvalidCxxCompiler" in res.stderr, res.stderr[-2000:]


def test_auto_renders_a_small_cpu_run_eagerly_and_leaves_a_large_one_to_compile(tmp_path):
    """Compiling costs ~28 s of tracing per process and pays above ~12,000 stamps on a CPU: `auto`
    renders a smaller CPU run (a test, a quick sweep) eagerly; `on`, `off` and GPU runs are as asked."""
    from dhs.simulate.dataset import write_synthetic_dataset
    from tests.conftest import small_sim_params

    n_min = fused.AUTO_COMPILE_MIN_STAMPS_CPU
    assert fused.mode_for_run("auto", n_min - 1, "cpu") == "off"
    assert fused.mode_for_run("auto", n_min, "cpu") == "auto"
    assert fused.mode_for_run("auto", 10, "cuda") == "auto"
    assert fused.mode_for_run("on", 10, "cpu") == "on" and fused.mode_for_run(True, 10, "cpu") == "on"
    assert fused.mode_for_run("off", 10 * n_min, "cpu") == "off"
    fused.set_compile_mode("auto")
    with fused.compile_mode_set_to(fused.mode_for_run("auto", 400, "cpu")):   # what the gates' probes do
        assert fused.compile_mode() == "off" and not fused.is_compiled_on("cpu")
    assert fused.compile_mode() == "auto"
    try:
        fused.set_compile_mode("auto")
        cfg = SimConfig.from_params(small_sim_params(n_stamps=16, compile="auto", extra_controls={"test": 2.0}))
        summary = write_synthetic_dataset(cfg, tmp_path / "s", progress=False)
        assert summary["compiled"] is False and fused.compile_mode() == "off"
        # 16 stamps and the test split's control-only stamps (simulate.extra_controls)
        assert sum(summary["rows_written_by_split"].values()) == len(sample_population(cfg)) > 16
    finally:
        fused.set_compile_mode("auto")
