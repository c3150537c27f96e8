"""``params.yaml`` section ``gates`` -> ``GatesConfig``, validated at the boundary.

Every threshold a gate applies and every knob of its probes is here; units are in the names
(``_px`` pixels, ``_arcsec`` arcsec, ``_sigma`` multiples of the stamp's per-pixel sky sigma,
``_logit`` natural-log odds). The defaults are the values documented in the README.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dhs.params import ParamsError

PIXEL_SCALE_ARCSEC = 0.262  # DR10 (DOMAIN.md); the simulated survey uses the same


@dataclass(frozen=True)
class GatesConfig:
    enforce: bool = False               # true: any gate not PASS fails the stage (exit 1)
    seed: int = 1                       # every random draw of the gates (subsets, noise, probes, shuffles)
    n_eval: int = 3000                  # test stamps the model-based gates score (0 = all)
    n_bootstrap: int = 200              # AUC 95% intervals (0 = none)
    batch_size: int = 512
    device: str = "auto"                # auto | cpu | cuda
    core_radius_px: float = 5.0         # the "core": r_px <= this (5 px: 80 pixels, ~ the central 10x10)
    core_auc_max: float = 0.65          # core-only logistic regression: test AUC must stay below
    core_n_train: int = 6000            # train stamps it is fitted on (0 = all)
    metadata_auc_max: float = 0.6       # metrics/baseline.json leak.auc_test must stay below
    core_mask_max_auc_drop: float = 0.05  # model AUROC drop when the core becomes sky noise
    core_mask_clearance_fwhm: float = 0.5  # gated on arcs with theta_E >= core radius + this x PSF FWHM
    ring_radius_arcsec: float = 1.2     # ring probe radius (= theta_E of the comparison arc)
    ring_sigma_px: float = 0.5          # Gaussian radial width of the ring before the PSF
    ring_peak_sigma: float = 3.0        # ring peak after the PSF, in r-band sky sigma per pixel (faint)
    ring_max_excess_logit: float = 1.0  # median ring logit shift may exceed the arc's by at most this
    n_probe: int = 400                  # controls probed with a ring and with an arc
    shuffle_min_auc: float = 0.75       # AUROC real vs annulus-shuffled injections must reach

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_params(cls, p: Mapping[str, Any], source: str = "params.yaml") -> "GatesConfig":
        unknown = sorted(set(p) - cls.keys())
        if unknown:
            raise ParamsError(f"{source}: unknown keys {unknown} in 'gates'; allowed keys are {sorted(cls.keys())}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        vals = {}
        for k, v in p.items():
            t = types[k]
            if t == "bool":
                if not isinstance(v, bool):
                    raise ParamsError(f"{source}: gates.{k} must be true or false, got {v!r}")
            elif t == "int":
                if isinstance(v, bool) or not isinstance(v, int):
                    raise ParamsError(f"{source}: gates.{k} must be an integer, got {v!r}")
            elif t == "float":
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ParamsError(f"{source}: gates.{k} must be a number, got {v!r}")
                v = float(v)
            vals[k] = v
        cfg = cls(**vals)
        cfg._check(source)
        return cfg

    def _check(self, source: str) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ParamsError(f"{source}: gates.{msg}")

        need(self.device in ("auto", "cpu") or self.device.startswith("cuda"), f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        for k in ("n_eval", "core_n_train", "n_bootstrap"):
            need(getattr(self, k) >= 0, f"{k} must be >= 0 (0 = all / none)")
        need(self.batch_size >= 1, "batch_size must be >= 1")
        need(self.n_probe >= 1, "n_probe must be >= 1")
        for k in ("core_auc_max", "metadata_auc_max", "shuffle_min_auc"):
            need(0.0 <= getattr(self, k) <= 1.0, f"{k} is an AUC threshold and must lie in [0, 1]")
        need(0.0 <= self.core_mask_max_auc_drop <= 1.0, "core_mask_max_auc_drop must lie in [0, 1]")
        need(self.core_radius_px > 0, "core_radius_px must be > 0 pixels")
        need(self.core_mask_clearance_fwhm >= 0, "core_mask_clearance_fwhm must be >= 0")
        need(self.ring_radius_arcsec > 0, "ring_radius_arcsec must be > 0")
        need(self.ring_sigma_px > 0, "ring_sigma_px must be > 0 pixels")
        need(self.ring_peak_sigma > 0, "ring_peak_sigma must be > 0 (multiples of the sky sigma)")
