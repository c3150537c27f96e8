"""The simulated survey's configuration: ``params.yaml`` -> ``SimConfig``, validated at the boundary."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from dhs.simulate.priors import PriorError, validate_prior
from dhs.simulate.psf import PSF_MODELS

BANDS = ("g", "r", "z")

# Priors every simulation needs. DR10-like defaults live in params.yaml (see DOMAIN.md).
REQUIRED_PRIORS = (
    "theta_e_arcsec", "src_r_mag", "src_g_minus_r", "src_r_minus_z", "src_sersic_n",
    "src_reff_arcsec", "src_e", "src_beta_frac", "lens_q", "shear_component",
    "psfsize_r_arcsec", "psfdepth_r_mag", "ebv", "host_r_mag", "host_g_minus_r",
    "host_r_minus_z", "host_reff_arcsec", "host_sersic_n", "host_q",
    "bad_pixel_frac", "wise_brightmask_frac",
)


class ConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class SimConfig:
    n_stamps: int
    seed: int
    stamp_size: int = 64
    pixel_scale_arcsec: float = 0.262
    oversample: int = 4
    host_oversample: int = 4
    supersample_threshold: float = 1e-3
    host_supersample_threshold: float = 0.05
    host_pad_px: int = 16
    psf_model: str = "moffat"
    moffat_beta: float = 3.5
    psf_fwhm_ratio: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"g": 1.16, "r": 1.0, "z": 0.96})
    depth_offset_mag: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"g": 0.8, "r": 0.0, "z": -0.9})
    control_fraction: float = 0.5
    paired: bool = False
    sis_fraction: float = 0.0
    n_regions: int = 60
    bricks_per_region: tuple[int, int] = (4, 12)
    split_fractions: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"train": 0.7, "val": 0.1, "test": 0.2})
    split_salt: str = "dhs-v1"
    dec_max_deg: float = 32.0
    dec_min_deg: float = -65.0
    arc_poisson_e_per_nmgy: float = 0.0
    failed_cutout_fraction: float = 0.0
    batch_size: int = 256
    npz_compression: str = "stored"
    device: str = "auto"
    compile: str = "auto"
    dtype: str = "float32"
    priors: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def bands(self) -> tuple[str, ...]:
        return BANDS

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "SimConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ConfigError(f"unknown simulate params {sorted(unknown)}; known keys are {sorted(known)}")
        kw = dict(params)
        if "bricks_per_region" in kw:
            kw["bricks_per_region"] = tuple(kw["bricks_per_region"])
        try:
            cfg = cls(**kw)
        except TypeError as exc:  # missing required keys
            raise ConfigError(f"simulate params: {exc}") from None
        cfg.check()
        return cfg

    def check(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"simulate params: {msg}")

        need(isinstance(self.n_stamps, int) and self.n_stamps > 0, f"n_stamps must be a positive integer, got {self.n_stamps!r}")
        need(self.stamp_size in (64, 96), f"stamp_size must be 64 or 96, got {self.stamp_size!r}")
        need(self.oversample >= 1 and self.host_oversample >= 1, "oversample and host_oversample must be >= 1")
        need(0 <= self.supersample_threshold < 1 and 0 <= self.host_supersample_threshold < 1,
             "supersample thresholds must be in [0, 1) (0 = supersample every pixel)")
        need(isinstance(self.host_pad_px, int) and 0 <= self.host_pad_px <= 64,
             f"host_pad_px must be an integer in [0, 64], got {self.host_pad_px!r}")
        need(self.psf_model in PSF_MODELS, f"psf_model must be one of {PSF_MODELS}, got {self.psf_model!r}")
        need(0.0 <= self.control_fraction <= 1.0, "control_fraction must be in [0, 1]")
        need(0.0 <= self.sis_fraction <= 1.0, "sis_fraction must be in [0, 1]")
        need(0.0 <= self.failed_cutout_fraction < 1.0, "failed_cutout_fraction must be in [0, 1)")
        need(set(self.split_fractions) == {"train", "val", "test"}, "split_fractions needs exactly train, val, test")
        need(abs(sum(self.split_fractions.values()) - 1.0) < 1e-9, "split_fractions must sum to 1")
        need(self.n_regions >= 3, "n_regions must be >= 3 so every split gets a region")
        lo, hi = self.bricks_per_region
        need(1 <= lo <= hi, "bricks_per_region must be [min, max] with 1 <= min <= max")
        need(set(self.psf_fwhm_ratio) == set(BANDS) and set(self.depth_offset_mag) == set(BANDS),
             f"psf_fwhm_ratio and depth_offset_mag need keys {BANDS}")
        need(self.dtype in ("float32", "float64"), "dtype must be float32 or float64")
        need(self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:"),
             f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        need(self.compile in ("auto", "on", "off"), f"compile must be auto, on or off, got {self.compile!r}")
        need(self.batch_size >= 1, "batch_size must be >= 1")
        need(self.npz_compression in ("stored", "deflate"), f"npz_compression must be stored or deflate, got {self.npz_compression!r}")
        missing = [p for p in REQUIRED_PRIORS if p not in self.priors]
        need(not missing, f"priors missing {missing}")
        unknown = sorted(set(self.priors) - set(REQUIRED_PRIORS))
        need(not unknown, f"unknown priors {unknown}; known priors are {list(REQUIRED_PRIORS)}")
        for name, spec in self.priors.items():
            try:
                validate_prior(name, spec)
            except PriorError as exc:
                raise ConfigError(f"simulate params: {exc}") from None
