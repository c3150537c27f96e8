"""The simulated survey's configuration: ``params.yaml`` -> ``SimConfig``, validated at the boundary."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from dhs.errors import StageError
from dhs.simulate.designs import TILT_EDGES, LessonsConfig, MeasurementConfig
from dhs.simulate.knots import KnotConfig, knot_config_from_params
from dhs.simulate.noise import CORRELATIONS, NoiseModel
from dhs.simulate.physical_params import make_params
from dhs.simulate.priors import PriorError, validate_prior
from dhs.simulate.psf import PSF_MODELS
from dhs.simulate.scene import CORE_KINDS, HOST_KINDS, SceneConfig

BANDS = ("g", "r", "z")

# Priors every simulation needs (the uniform population draws its lenses and sources from them;
# both populations draw observing conditions and quality flags from them). Defaults: params.yaml.
REQUIRED_PRIORS = (
    "theta_e_arcsec", "src_r_mag", "src_g_minus_r", "src_r_minus_z", "src_sersic_n",
    "src_reff_arcsec", "src_e", "src_beta_frac", "lens_q", "shear_component",
    "psfsize_r_arcsec", "psfdepth_r_mag", "ebv", "host_r_mag", "host_g_minus_r",
    "host_r_minus_z", "host_reff_arcsec", "host_sersic_n", "host_q",
    "bad_pixel_frac", "wise_brightmask_frac",
)


POPULATIONS = ("physical", "uniform")


class ConfigError(StageError, ValueError):
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
    failed_cutout_fraction: float = 0.0
    batch_size: int = 256
    npz_compression: str = "stored"
    device: str = "auto"
    compile: str = "auto"
    dtype: str = "float32"
    population: str = "physical"  # physical (dhs.simulate.physical) | uniform (the priors below, for grid studies)
    physical: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # overrides of dhs.simulate.physical.DEFAULT_PARAMS
    physical_train: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # further overrides for the train split's systems
    # the three populations (dhs.simulate.designs): lessons for the train split, the measurement
    # population (with sky weights) for val and test injections; None: the sky for both
    lessons: Mapping[str, Any] | None = None
    measurement: Mapping[str, Any] | None = None
    control_hosts: str = "lens"    # val/test controls: lens (the hosts of lenses) | parent (the search sample, volume-weighted)
    extra_controls: Mapping[str, float] = dataclasses.field(default_factory=dict)   # control-only stamps per split, x its stamps
    priors: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # where the host sits in its cutout, what kind of galaxy it is, and what else is in the field
    centring: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"subpixel": True, "centroid_error_arcsec": 0.1})
    host_kinds: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"lrg": 1.0})
    host_kinds_train: Mapping[str, float] | None = None   # the train split's kinds (hard negatives oversampled); None: host_kinds
    core_structures: Mapping[str, float] = dataclasses.field(default_factory=dict)  # early-type cores: fraction with each structure
    fields: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"neighbours": None, "stars": None, "companion_probability": 0.0})
    knots: Mapping[str, Any] | None = None        # None: smooth Sersic sources only
    noise: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {
        "photon_noise": True, "sky_mag_per_arcsec2": {"g": 22.0, "r": 21.2, "z": 19.4}, "correlation": "lanczos3", "n_exposures": 3})

    @property
    def bands(self) -> tuple[str, ...]:
        return BANDS

    @functools.cached_property
    def scene(self) -> SceneConfig:
        return SceneConfig.from_params(self.centring, self.host_kinds, self.fields, self.host_kinds_train, self.core_structures)

    @functools.cached_property
    def lessons_config(self) -> LessonsConfig | None:
        return LessonsConfig.from_params(self.lessons)

    @functools.cached_property
    def measurement_config(self) -> MeasurementConfig | None:
        return MeasurementConfig.from_params(self.measurement)

    @functools.cached_property
    def physical_params(self) -> dict[str, Any]:
        return make_params({k: tuple(v) if isinstance(v, list) else v for k, v in (self.physical or {}).items()})

    @functools.cached_property
    def physical_train_params(self) -> dict[str, Any]:
        merged = {**(self.physical or {}), **(self.physical_train or {})}
        return make_params({k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})

    @functools.cached_property
    def knot_config(self) -> KnotConfig | None:
        return None if not self.knots else knot_config_from_params(self.knots)

    @functools.cached_property
    def noise_model(self) -> NoiseModel:
        p = dict(self.noise)
        if "sky_mag_per_arcsec2" in p:
            p["sky_mag_per_arcsec2"] = dict(p["sky_mag_per_arcsec2"])
        return NoiseModel(**p)

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
        for name, kinds in (("host_kinds", self.host_kinds), ("host_kinds_train", self.host_kinds_train or {"lrg": 1.0})):
            unknown_kinds = sorted(set(kinds) - set(HOST_KINDS))
            need(not unknown_kinds, f"{name} names unknown kinds {unknown_kinds}; known kinds are {list(HOST_KINDS)}")
            need(all(float(v) >= 0 for v in kinds.values()) and sum(float(v) for v in kinds.values()) > 0,
                 f"{name} are relative frequencies: each >= 0, at least one > 0")
        unknown_cores = sorted(set(self.core_structures) - set(CORE_KINDS))
        need(not unknown_cores, f"core_structures names unknown kinds {unknown_cores}; known are {list(CORE_KINDS)}")
        need(all(float(v) >= 0 for v in self.core_structures.values()) and sum(float(v) for v in self.core_structures.values()) <= 1.0,
             f"core_structures are fractions of early-type hosts: each >= 0, together at most 1, got {dict(self.core_structures)}")
        need(self.control_hosts in ("lens", "parent"), f"control_hosts must be lens or parent, got {self.control_hosts!r}")
        need(set(self.extra_controls) <= {"train", "val", "test"} and all(0 <= float(v) <= 100 for v in self.extra_controls.values()),
             f"extra_controls maps splits (train, val, test) to multiples of their stamps in [0, 100], got {dict(self.extra_controls)}")
        try:
            lc, mc = self.lessons_config, self.measurement_config
        except TypeError as exc:
            raise ConfigError(f"simulate params: lessons or measurement: {exc}") from None
        if lc is not None:
            need(lc.mu_min >= 1 and 0 < lc.theta_e_arcsec[0] < lc.theta_e_arcsec[1] and lc.theta_e_bins >= 1,
                 "lessons needs mu_min >= 1, theta_e_arcsec [lo, hi] with 0 < lo < hi, theta_e_bins >= 1")
        if mc is not None:
            unknown = sorted(set(mc.flatten) - set(TILT_EDGES))
            need(not unknown, f"measurement.flatten names {unknown}; it can flatten {sorted(TILT_EDGES)}")
            need(0 <= mc.strength <= 1 and 0 < mc.floor <= 1, "measurement needs strength in [0, 1] and floor in (0, 1]")
        need(set(self.centring) <= {"subpixel", "centroid_error_arcsec"}, f"centring takes subpixel and centroid_error_arcsec, got {sorted(self.centring)}")
        need(float(self.centring.get("centroid_error_arcsec", 0.0)) >= 0, "centring.centroid_error_arcsec must be >= 0")
        unknown_fields = sorted(set(self.fields) - {"neighbours", "stars", "companion_probability"})
        need(not unknown_fields, f"fields takes neighbours, stars and companion_probability, got unknown {unknown_fields}")
        need(0.0 <= float(self.fields.get("companion_probability", 0.0)) <= 1.0, "fields.companion_probability must be in [0, 1]")
        need(set(self.noise) <= {"photon_noise", "sky_mag_per_arcsec2", "correlation", "n_exposures"},
             f"noise takes photon_noise, sky_mag_per_arcsec2, correlation and n_exposures, got {sorted(self.noise)}")
        need(self.noise.get("correlation", "none") in CORRELATIONS, f"noise.correlation must be one of {CORRELATIONS}")
        need(int(self.noise.get("n_exposures", 1)) >= 1, "noise.n_exposures must be >= 1")
        if "sky_mag_per_arcsec2" in self.noise:
            need(set(self.noise["sky_mag_per_arcsec2"]) == set(BANDS), f"noise.sky_mag_per_arcsec2 needs keys {BANDS}")
        try:
            self.scene, self.noise_model, self.knot_config
        except TypeError as exc:  # an unknown key inside fields.neighbours, fields.stars or knots
            raise ConfigError(f"simulate params: {exc}") from None
        if self.knot_config is not None:
            k = self.knot_config
            need(0 <= k.fraction_of_sources <= 1, "knots.fraction_of_sources must be in [0, 1]")
            need(0 <= k.flux_fraction[0] <= k.flux_fraction[1] <= 1, "knots.flux_fraction must be [lo, hi] within [0, 1]")
            need(1 <= k.n_knots[0] <= k.n_knots[1], "knots.n_knots must be [lo, hi] with 1 <= lo <= hi")
            need(0.03 <= k.sigma_arcsec[0] <= k.sigma_arcsec[1],
                 "knots.sigma_arcsec must be [lo, hi] with lo >= 0.03 (narrower knots are not resolved by the 4x4 sub-pixel grid)")
        need(self.population in POPULATIONS, f"population must be one of {POPULATIONS}, got {self.population!r}")
        try:
            self.physical_params, self.physical_train_params
        except KeyError as exc:
            raise ConfigError(f"simulate params: physical: {exc.args[0]}; known keys are those of dhs.simulate.physical.DEFAULT_PARAMS") from None
        missing = [p for p in REQUIRED_PRIORS if p not in self.priors]
        need(not missing, f"priors missing {missing}")
        unknown = sorted(set(self.priors) - set(REQUIRED_PRIORS))
        need(not unknown, f"unknown priors {unknown}; known priors are {list(REQUIRED_PRIORS)}")
        for name, spec in self.priors.items():
            try:
                validate_prior(name, spec)
            except PriorError as exc:
                raise ConfigError(f"simulate params: {exc}") from None
