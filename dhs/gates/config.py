"""``params.yaml`` section ``gates`` -> ``GatesConfig`` (checked by dhs.params.schema).

Every threshold a gate applies and every knob of its probes is here; units are in the names
(``_px`` pixels, ``_arcsec`` arcsec, ``_sigma`` multiples of the stamp's per-pixel sky sigma,
``_logit`` natural-log odds). A gate decides on the 95% interval of its statistic, bootstrapped
``n_bootstrap`` times (FAIL only when the whole interval lies beyond the threshold;
``dhs.gates.result.decide``), and SKIPs with fewer than ``min_rows_per_class`` rows of a class.
What the probes render with (pixel scale, PSF model, sub-pixels, source priors) is the
simulator's own configuration, ``simulate`` in params (``SimConfig``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from dhs.params.views import view


@dataclass(frozen=True)
class GatesConfig:
    """A view of the ``gates`` section of params.yaml (each key, its default and its check in
    dhs.params.schema)."""
    SECTION: ClassVar[str] = "gates"
    enforce: bool                   # true: any gate not PASS fails the stage (exit status dhs.runner.EXIT_GATE_FAILED)
    seed: int                       # every random draw of the gates (subsets, noise, probes, shuffles)
    n_eval: int                     # test stamps the model-based gates score (0 = all)
    n_bootstrap: int                # resamples of every gate's 95% interval (0 = none: the point value decides)
    min_rows_per_class: int         # fewer rows of a class (probed controls for the ring probe): SKIP
    batch_size: int
    device: str                     # auto | cpu | cuda
    core_radius_px: float           # the "core": r_px <= this (5 px: 80 pixels, ~ the central 10x10)
    core_auc_max: float             # core-only logistic regression: test AUC must stay below
    core_n_train: int               # train stamps it is fitted on (0 = all)
    metadata_auc_max: float         # metrics/baseline.json leak.auc_test must stay below
    core_mask_max_auc_drop: float   # model AUROC drop when the core becomes sky noise
    core_mask_clearance_fwhm: float  # gated on arcs with theta_E >= core radius + this x PSF FWHM
    ring_radius_arcsec: float       # ring probe radius (= theta_E of the comparison arc)
    ring_sigma_px: float            # Gaussian radial width of the ring before the PSF
    ring_peak_sigma: float          # ring peak after the PSF, in r-band sky sigma per pixel (faint)
    ring_max_excess_logit: float    # median ring logit shift may exceed the arc's by at most this
    n_probe: int                    # controls probed with a ring and with an arc
    shuffle_min_auc: float          # AUROC real vs annulus-shuffled injections must reach
    # shift: test stamps moved by these (dy, dx) pixels (fractions: Fourier shift, whole: roll) and scored again
    shift_offsets_px: tuple[tuple[float, float], ...]
    shift_max_fpr_ratio: float      # shifted control FPR at each operating threshold / unshifted, at most
    shift_max_auc_drop: float       # AUROC drop after a shift, at most
    shift_n_eval: int               # test stamps the shift gate scores (0 = all: the operating thresholds need every control)

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml") -> "GatesConfig":
        """From the ``gates`` params section, checked by the schema (dhs.params.schema)."""
        return view(cls, p, source)
