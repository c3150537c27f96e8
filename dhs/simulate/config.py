"""The simulated survey's configuration: ``SimConfig``, a view of the ``simulate`` section of
params.yaml. Each key, its default and its check live in dhs.params.schema only; ``SimConfig``
holds the checked values (lists as tuples) and builds the configs of its parts from them: the
scene (``SceneConfig``), the noise (``NoiseModel``), the knots (``KnotConfig``), the lessons and
measurement populations (``LessonsConfig``, ``MeasurementConfig``) and the physical
population's knobs."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from dhs.params import ParamsError
from dhs.params.physical import make_params
from dhs.params.schema import BANDS
from dhs.params.views import view
from dhs.simulate.designs import LessonsConfig, MeasurementConfig
from dhs.simulate.knots import KnotConfig
from dhs.simulate.noise import NoiseModel
from dhs.simulate.scene import SceneConfig

@dataclass(frozen=True)
class SimConfig:
    """A view of the ``simulate`` section of params.yaml (dhs.params.schema: each key, its
    default, its check and what it means)."""

    SECTION: ClassVar[str] = "simulate"
    n_stamps: int
    seed: int
    stamp_size: int
    pixel_scale_arcsec: float
    oversample: int
    host_oversample: int
    supersample_threshold: float
    host_supersample_threshold: float
    host_pad_px: int
    psf_model: str
    moffat_beta: float
    psf_fwhm_ratio: Mapping[str, float]
    depth_offset_mag: Mapping[str, float]
    control_fraction: float
    paired: bool
    sis_fraction: float
    n_regions: int
    bricks_per_region: tuple[int, int]
    split_fractions: Mapping[str, float]
    split_salt: str
    dec_max_deg: float
    dec_min_deg: float
    failed_cutout_fraction: float
    batch_size: int
    npz_compression: str
    device: str
    compile: str
    dtype: str
    population: str                         # physical (dhs.simulate.physical) | uniform (the priors, for grid studies)
    physical: Mapping[str, Any]             # overrides of the physical population's knobs (dhs.params.physical)
    physical_train: Mapping[str, Any]       # further overrides for the train split's systems
    # the three populations (dhs.simulate.designs): lessons for the train split, the measurement
    # population (with sky weights) for val and test injections; None: the sky for both
    lessons: Mapping[str, Any] | None
    measurement: Mapping[str, Any] | None
    control_hosts: str                      # val/test controls: lens (the hosts of lenses) | parent (the search sample)
    extra_controls: Mapping[str, float]     # control-only stamps per split, x its stamps
    priors: Mapping[str, Mapping[str, Any]]
    # where the host sits in its cutout, what kind of galaxy it is, and what else is in the field
    centring: Mapping[str, Any]
    host_kinds: Mapping[str, float]
    host_kinds_train: Mapping[str, float] | None   # the train split's kinds; None: host_kinds
    core_structures: Mapping[str, float]           # early-type cores: fraction with each structure
    fields: Mapping[str, Any]
    knots: Mapping[str, Any] | None                # None: smooth Sersic sources only
    noise: Mapping[str, Any]

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, source: str = "params.yaml") -> "SimConfig":
        """The ``simulate`` section ``params`` checked by the schema (raises ParamsError naming the
        key and what is allowed)."""
        return view(cls, params, source)

    @property
    def bands(self) -> tuple[str, ...]:
        return BANDS

    @functools.cached_property
    def scene(self) -> SceneConfig:
        return SceneConfig.from_params(self.centring, self.host_kinds, self.fields, self.host_kinds_train, self.core_structures,
                                       self.pixel_scale_arcsec)

    @functools.cached_property
    def lessons_config(self) -> LessonsConfig | None:
        return LessonsConfig.from_params(self.lessons)

    @functools.cached_property
    def measurement_config(self) -> MeasurementConfig | None:
        return MeasurementConfig.from_params(self.measurement)

    @functools.cached_property
    def physical_params(self) -> dict[str, Any]:
        return make_params(self.physical)

    @functools.cached_property
    def physical_train_params(self) -> dict[str, Any]:
        return make_params({**self.physical, **self.physical_train})

    @functools.cached_property
    def knot_config(self) -> KnotConfig | None:
        return KnotConfig.from_params(self.knots)

    @functools.cached_property
    def noise_model(self) -> NoiseModel:
        return NoiseModel.from_params(self.noise)
