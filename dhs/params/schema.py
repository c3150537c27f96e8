"""The schema of params.yaml: every section, every key, its type, range, allowed values and default.

This is the one place a value of params.yaml is checked. ``dhs.params.load`` applies it to the
whole file when any stage starts; the config objects of the stages (``TrainConfig``,
``GatesConfig``, ``CalibrationConfig``, ...) are built from the values it returns. Rules that tie
keys together (a split that must differ from another, a plotted FPR that must be one of the
operating FPRs, a surface that must name binned columns) are declared beside their section, or
in ``RULES`` when they cross sections.

Shared knobs live in one section: ``evaluation`` holds the operating false-positive rates and
the low-count rule that the completeness, calibration, known-lens and report stages all use.
"""

from __future__ import annotations

from dhs.params.fields import (AutoInt, Bool, Choice, Device, Field, Float, Int, List, Map, ParamsError, Section, Str, refuse,
                              unknown_keys)
from dhs.params.physical import DEFAULT_PARAMS as PHYSICAL_KNOBS
from dhs.params.priors import PriorError, validate_prior
from dhs.params.rules import (DEFAULT_CONDITIONS, DEFAULT_PROXY_FEATURES, check_condition_features, check_metadata_columns,
                              check_proxy_features)

# --------------------------------------------------------------------------- the names params accept
# Defined here, once; the code that acts on them imports them from here.

SPLITS = ("train", "val", "test")
SCORE_SPLITS = ("val", "test")                 # the splits the infer stage scores (dhs.evaluation.scores)
ARCHS = ("small_cnn", "resnet18", "efficientnet_b0", "convnext_tiny", "hybrid")   # dhs.models
STEMS = ("cifar", "imagenet")                  # the ResNet stem: 3x3 stride 1 without max-pool, or the original
BASELINE_MODELS = ("hist_gb", "logistic")
BASELINE_BOOTSTRAP_UNITS = ("region", "row")
CALIBRATION_METHODS = ("temperature", "isotonic")
RELIABILITY_STRATEGIES = ("uniform", "quantile")
GRADES = ("confirmed", "confident", "probable")   # known lenses, best first (dhs.known_lenses.catalog)
CUTOUT_URL_TEMPLATE = ("https://www.legacysurvey.org/viewer/cutout.fits?ra={ra}&dec={dec}&layer={layer}"
                       "&pixscale={pixscale}&size={size}&bands={bands}")
MAX_CONCURRENCY_CAP = 8                        # requests in flight to the viewer, a shared public service
# DESI Legacy Surveys DR10's pixel scale (arcsec per pixel): simulate.pixel_scale_arcsec's default,
# and the default of the simulator's functions that take a pixel scale
DR10_PIXEL_SCALE_ARCSEC = 0.262


def _fail(source: str, key: str, requirement: str, value) -> ParamsError:
    return refuse(source, key, requirement, value)


# --------------------------------------------------------------------------- shared

EVALUATION = Section(fields={
    # the operating points: thresholds on controls at these FPRs (completeness, calibration purity,
    # known-lens recall, report); never a threshold at score 0.5
    "fprs": List(default=[0.1, 0.01, 0.001], item=Float(lo=0, hi=1, open_lo=True, open_hi=True), min_len=1, distinct=True),
    # mark (and warn about) a threshold where FPR x n_controls is below this
    "min_expected_controls": Float(default=10.0, lo=0),
})


# --------------------------------------------------------------------------- stamps

URL_FIELDS = ("ra", "dec", "layer", "pixscale", "size", "bands")   # what dhs.cutouts.client fills in


def url_template_rule(t: str, key: str, source: str) -> None:
    """An http(s) URL with {ra} and {dec}, only the placeholders the client fills, no format specs."""
    import string

    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(t) if f is not None]
    except ValueError as exc:   # an unbalanced brace
        raise _fail(source, f"{key}.url_template", f"must be a URL template with balanced braces ({exc})", t) from None
    unknown = sorted({f for f, _, _ in fields if f not in URL_FIELDS})
    specs = [f for f, spec, conv in fields if spec or conv]
    if not t.startswith(("http://", "https://")) or "{ra}" not in t or "{dec}" not in t or unknown or specs:
        why = (f"; unknown placeholders {unknown}" if unknown else "") + (f"; no format spec or conversion ({specs})" if specs else "")
        raise _fail(source, f"{key}.url_template", f"must be an http(s) URL with {{ra}} and {{dec}} (and {{layer}}, {{pixscale}}, "
                                                   f"{{size}}, {{bands}}) placeholders only{why}", t)


def _hosts(v: dict, key: str, source: str) -> None:
    url_template_rule(v["url_template"], key, source)


# stamps.source: hosts: arcs injected into real cutouts of the hosts of a catalogue (dhs.stamps.real_hosts)
HOSTS = Section(rules=(_hosts,), fields={
    "catalog": Str(default=None, nullable=True, words="a CSV or parquet host catalogue (docs/real-hosts.md)"),
    "cutouts": Str(default="legacysurvey", words="legacysurvey or a directory of FITS cutouts"),
    "cache_dir": Str(default="data/host_cutouts"),
    "url_template": Str(default=CUTOUT_URL_TEMPLATE),
    "layer": Str(default="ls-dr10", pattern=r"[^/&?= ]+", words="a viewer layer name such as ls-dr10"),
    "max_hosts": Int(default=None, nullable=True, lo=1),
    "region_size_deg": Float(default=2.0, lo=0.25, hi=30.0, unit="deg"),
    "max_concurrency": Int(default=4, lo=1, hi=MAX_CONCURRENCY_CAP,
                           must=f"must be in [1, {MAX_CONCURRENCY_CAP}] (the viewer is a shared public service)"),
    "max_attempts": Int(default=4, lo=1),
    "read_timeout_s": Float(default=60.0, lo=0, open_lo=True, unit="seconds"),
    "run_deadline_s": Float(default=10800.0, lo=0, open_lo=True, unit="seconds"),
})

STAMPS = Section(fields={
    "source": Str(default="synthetic", words="'synthetic', 'hosts', a local directory or an s3://bucket/prefix URL"),
    "hosts": HOSTS,
    "s3_endpoint_url": Str(default=None, nullable=True, pattern=r"https?://\S+", words="an http(s) URL"),
    "staging_dir": Str(default="data/staging"),
    "copy_workers": Int(default=8, lo=1),
    "max_attempts": Int(default=5, lo=1),
    "s3_timeout_s": Float(default=60.0, lo=0, open_lo=True, unit="seconds"),
    "max_reject_frac": Float(default=0.05, lo=0, hi=1),
    "rows_per_shard": Int(default=2000, lo=1),
    "validate_workers": Int(default=1, lo=1),
    "write_workers": AutoInt(default="auto", lo=0),
    "cache_dtype": Choice("float16", "float32", default="float16"),
})


# --------------------------------------------------------------------------- preprocess

def _annulus(v: dict, key: str, source: str) -> None:
    if not v["annulus_inner_frac"] < v["annulus_outer_frac"]:
        raise _fail(source, f"{key}.annulus_inner_frac", "must be below annulus_outer_frac (fractions of the half-width)",
                    v["annulus_inner_frac"])


def _noise_profile(v: dict, key: str, source: str) -> None:
    if v["residual_noise_profile"] and not (v["radial_profile_subtract"] and v["radial_profile_centre"] == "host"
                                             and v["residual_noise_scale"] and v["mode"] != "none"):
        raise _fail(source, f"{key}.residual_noise_profile", "needs radial_profile_subtract: true, radial_profile_centre: host, "
                    "residual_noise_scale: true and a mode other than none (it scales the host-subtracted residual)", True)


def _profile_statistic(v: dict, key: str, source: str) -> None:
    if v["radial_profile_statistic"] != "median" and not (v["radial_profile_centre"] == "host" and v["radial_profile_shape"] == "ellipse"):
        raise _fail(source, f"{key}.radial_profile_statistic", "low_quantile needs radial_profile_centre: host and "
                    "radial_profile_shape: ellipse", v["radial_profile_statistic"])


PREPROCESS = Section(rules=(_annulus, _noise_profile, _profile_statistic), fields={
    "mode": Choice("annulus_common", "annulus_per_band", "none", default="annulus_common"),
    "clip": Float(default=20.0, lo=0, open_lo=True),
    "annulus_inner_frac": Float(default=0.65, lo=0, hi=1.5),
    "annulus_outer_frac": Float(default=1.0, lo=0, hi=1.5, open_lo=True),
    "augment": Bool(default=False),
    "radial_profile_subtract": Bool(default=False),
    "radial_profile_centre": Choice("host", "stamp", default="host"),
    "radial_profile_shape": Choice("circle", "ellipse", default="circle"),
    "radial_profile_statistic": Choice("median", "low_quantile", default="median"),
    "residual_noise_scale": Bool(default=False),
    "residual_noise_profile": Bool(default=False),
    "input": Choice("residual", "raw_and_residual", default="residual"),
    "raw_softening": Float(default=3.0, lo=0, open_lo=True),
    "shift_px": Int(default=0, lo=0, hi=8, must="must be an integer in [0, 8] (pixels; training-only shifts)"),
    "core_dropout_p": Float(default=0.0, lo=0, hi=1, must="must be a probability in [0, 1]"),
    "core_dropout_radius_px": Float(default=5.0, lo=0, open_lo=True, unit="pixels"),
})


# --------------------------------------------------------------------------- baseline

def _baseline_features(v: dict, key: str, source: str) -> None:
    check_condition_features(v["conditions_features"], f"{source}: {key}.conditions_features")
    check_proxy_features(v["proxy_features"], f"{source}: {key}.proxy_features")


_COLUMN = Str(words="a column name")

BASELINE = Section(rules=(_baseline_features,), fields={
    "conditions_features": List(default=list(DEFAULT_CONDITIONS), item=_COLUMN, min_len=1, distinct=True),
    "proxy_features": List(default=list(DEFAULT_PROXY_FEATURES), item=_COLUMN, min_len=1, distinct=True),
    "model": Choice(*BASELINE_MODELS, default="hist_gb"),
    "seed": Int(default=1, lo=0),
    "n_bootstrap": Int(default=200, lo=0),
    "bootstrap_unit": Choice(*BASELINE_BOOTSTRAP_UNITS, default="row"),
    "leak_auc_warn": Float(default=0.6, lo=0.5, hi=1, open_lo=True, open_hi=True),
    "proxy_snr_min": Float(default=5.0, lo=0),
    "proxy_theta_psf_min": Float(default=0.8, lo=0, open_lo=True),
    "n_threads": Int(default=1, lo=1),
})


# --------------------------------------------------------------------------- train

PRESETS = ("demo", "production")

# the simulated survey's host morphologies (simulate.host_kinds; train.host_kind_repeat)
HOST_KINDS = ("lrg", "lrg_tangential_companion", "lrg_alignment", "spiral", "ring", "merger", "edge_on")
CORE_KINDS = ("colour_gradient", "blue_nucleus", "off_centre_nucleus", "double_nucleus", "core_companion", "psf_mismatch")

# the hyperparameters an arch may override (train.overrides.<arch>)
TRAIN_HYPER = {
    "epochs": Int(default=3, lo=1),
    "steps_per_epoch": Int(default=100, lo=1),
    "batch_size": Int(default=128, lo=1, hi=16384),
    "lr": Float(default=2e-3, lo=0, open_lo=True),
    "weight_decay": Float(default=1e-4, lo=0),
    "warmup_steps": Int(default=20, lo=0),
    "grad_clip": Float(default=1.0, lo=0),
    "seed": Int(default=1, lo=0),
    "stem": Choice(*STEMS, default="cifar"),
    "hybrid_metadata": List(default=[], item=_COLUMN, distinct=True),
    "eval_batch_size": Int(default=512, lo=1, hi=16384),
    "nproc": Int(default=1, lo=1),
    "device": Device(),
    "record_rows": Bool(default=False),
    "colour_conditioning": Bool(default=False),
    "theta_head": Bool(default=False),
    "theta_loss_weight": Float(default=0.1, lo=0),
    "min_arc_snr": Float(default=0.0, lo=0),
    "min_arc_snr_column": Choice("arc_snr", "arc_snr_int", default="arc_snr"),
    "balance_classes": Bool(default=False),
    "balance_by": List(default=[], item=_COLUMN, distinct=True),
    # rows on hosts of these kinds taken this many times in training, controls and injections alike
    "host_kind_repeat": Map(default={}, key=Str(choices=HOST_KINDS), closed=True, value=Int(lo=1)),
    "preload": Choice("auto", "on", "off", default="auto"),
    "preload_max_gb": Float(default=4.0, lo=0),
    # cache: the cached train split | simulate: every batch rendered on the fly (dhs.finder.fresh)
    "data": Choice("cache", "simulate", default="cache"),
    "simulate_block_stamps": Int(default=4096, lo=1, hi=65536),
}


def _hybrid_metadata(v: dict, key: str, source: str) -> None:
    """The hybrid may see observing conditions only (checked wherever it is trained)."""
    if "hybrid" not in v["archs"]:
        return
    cols = (v["overrides"].get("hybrid") or {}).get("hybrid_metadata", v["hybrid_metadata"])
    try:
        check_metadata_columns(cols)
    except ValueError as exc:
        raise ParamsError(f"{source}: {key}.hybrid_metadata: {exc}") from None


TRAIN = Section(rules=(_hybrid_metadata,), fields={
    "archs": List(default=["small_cnn"], item=Choice(*ARCHS), distinct=True),   # may be empty: only external finders
    "preset": Choice(*PRESETS, default="demo"),
    **TRAIN_HYPER,
    "overrides": Map(default={}, key=Str(choices=ARCHS), closed=True, value=Section(fields=TRAIN_HYPER, partial=True)),
})


# --------------------------------------------------------------------------- distributed
# The machines one training run spans: train.nproc processes on each of nnodes machines, joined
# at master_addr:master_port (node 0, which also runs `dvc repro`); the other nodes run the train
# stage's script with --node-rank (docs/production-gpu.md).

def _distributed(v: dict, key: str, source: str) -> None:
    if v["nnodes"] > 1 and not v["master_addr"]:
        raise _fail(source, f"{key}.master_addr", "must name node 0 (a host name or IP address every node reaches) when "
                                                  "nnodes > 1", v["master_addr"])


DISTRIBUTED = Section(rules=(_distributed,), fields={
    "nnodes": Int(default=1, lo=1),
    "master_addr": Str(default=None, nullable=True, pattern=r"[A-Za-z0-9_.:\-]+", words="a host name or IP address"),
    "master_port": Int(default=29500, lo=1, hi=65535),
})


# --------------------------------------------------------------------------- simulate
# The survey the simulator draws; dhs.simulate.config.SimConfig is a view of this section
# (dhs.params.views), so this is the one place its values are checked.

class Prior(Field):
    """A prior mapping ``{dist: ..., ...}`` (dhs.params.priors)."""

    def what(self) -> str:
        return "a prior mapping {dist: ..., ...} (see dhs/params/priors.py)"

    def _check(self, v, key, source):
        try:
            validate_prior(key.rsplit(".", 1)[-1], v)
        except (PriorError, TypeError, KeyError) as exc:
            raise ParamsError(f"{source}: {key}: {exc}") from None
        return v


# the priors every simulation needs (the uniform population draws its lenses and sources from them;
# both populations draw observing conditions and quality flags from them)
PRIORS = ("theta_e_arcsec", "src_r_mag", "src_g_minus_r", "src_r_minus_z", "src_sersic_n", "src_reff_arcsec", "src_e",
          "src_beta_frac", "lens_q", "shear_component", "psfsize_r_arcsec", "psfdepth_r_mag", "ebv", "host_r_mag",
          "host_g_minus_r", "host_r_minus_z", "host_reff_arcsec", "host_sersic_n", "host_q", "bad_pixel_frac",
          "wise_brightmask_frac")
PSF_MODELS = ("moffat", "gaussian")
BANDS = ("g", "r", "z")
NOISE_CORRELATIONS = ("lanczos3", "none")     # dhs.simulate.noise: a coadd's resampling correlation, or none
POPULATIONS = ("physical", "uniform")         # dhs.simulate.physical, or the priors (grid studies)


class PhysicalParams(Field):
    """Overrides of the physical population's knobs (dhs.params.physical.DEFAULT_PARAMS)."""

    def what(self) -> str:
        return "a mapping of dhs.params.physical.DEFAULT_PARAMS keys to values"

    def _check(self, v, key, source):
        if not isinstance(v, dict):
            raise self.fail(v, key, source)
        unknown = sorted(set(v) - set(PHYSICAL_KNOBS))
        if unknown:
            raise unknown_keys(source, unknown, key, PHYSICAL_KNOBS,
                               "those of dhs.params.physical.DEFAULT_PARAMS (docs/population.md)")
        return dict(v)


def _knots(v: dict, key: str, source: str) -> None:
    for name in ("flux_fraction", "n_knots", "sigma_arcsec"):
        lo, hi = v[name]
        if lo > hi:
            raise _fail(source, f"{key}.{name}", "must be [lo, hi] with lo <= hi", v[name])


def _simulate(v: dict, key: str, source: str) -> None:
    for name in ("host_kinds", "host_kinds_train"):
        if v[name] is not None and sum(v[name].values()) <= 0:
            raise _fail(source, f"{key}.{name}", "must give at least one kind a frequency > 0", v[name])
    if sum(v["core_structures"].values()) > 1:
        raise _fail(source, f"{key}.core_structures", "must be fractions of the early-type hosts that sum to at most 1 "
                                                      "(the rest keep a smooth core)", v["core_structures"])
    if v["stamp_size"] not in (64, 96):
        raise _fail(source, f"{key}.stamp_size", "must be 64 or 96", v["stamp_size"])
    lo, hi = v["bricks_per_region"]
    if not 1 <= lo <= hi:
        raise _fail(source, f"{key}.bricks_per_region", "must be [min, max] with 1 <= min <= max", v["bricks_per_region"])
    if abs(sum(v["split_fractions"].values()) - 1.0) > 1e-9:
        raise _fail(source, f"{key}.split_fractions", "must sum to 1", v["split_fractions"])
    if not v["dec_min_deg"] < v["dec_max_deg"]:
        raise _fail(source, f"{key}.dec_min_deg", f"must be below simulate.dec_max_deg ({v['dec_max_deg']})", v["dec_min_deg"])


def _lessons(v: dict, key: str, source: str) -> None:
    lo, hi = v["theta_e_arcsec"]
    if not 0 < lo < hi:
        raise _fail(source, f"{key}.theta_e_arcsec", "must be [lo, hi] arcsec with 0 < lo < hi", v["theta_e_arcsec"])


# the variables the measurement population can be tilted in (dhs.simulate.designs.TILT_EDGES)
TILT_VARIABLES = ("theta_e_arcsec", "src_r_mag", "mu_ext_sis", "src_reff_arcsec")

_PER_BAND = dict(key=Str(choices=BANDS), closed=True, required=BANDS)

SIMULATE = Section(rules=(_simulate,), fields={
    "n_stamps": Int(lo=1, must="must be a positive integer"),
    "seed": Int(),
    "stamp_size": Int(default=64, must="must be 64 or 96"),
    "pixel_scale_arcsec": Float(default=DR10_PIXEL_SCALE_ARCSEC, lo=0, open_lo=True, unit="arcsec"),
    "oversample": Int(default=4, lo=1),
    "host_oversample": Int(default=4, lo=1),
    "supersample_threshold": Float(default=1e-3, lo=0, hi=1, open_hi=True),
    "host_supersample_threshold": Float(default=0.05, lo=0, hi=1, open_hi=True),
    "host_pad_px": Int(default=16, lo=0, hi=64),
    "psf_model": Choice(*PSF_MODELS, default="moffat"),
    "moffat_beta": Float(default=3.5, lo=1, open_lo=True),
    "psf_fwhm_ratio": Map(default={"g": 1.16, "r": 1.0, "z": 0.96}, value=Float(lo=0, open_lo=True), **_PER_BAND),
    "depth_offset_mag": Map(default={"g": 0.8, "r": 0.0, "z": -0.9}, value=Float(), **_PER_BAND),
    "control_fraction": Float(default=0.5, lo=0, hi=1),
    "paired": Bool(default=False),
    "sis_fraction": Float(default=0.0, lo=0, hi=1),
    "n_regions": Int(default=60, lo=3),
    "bricks_per_region": List(default=[4, 12], item=Int(lo=1), min_len=2, max_len=2),
    "split_fractions": Map(default={"train": 0.7, "val": 0.1, "test": 0.2}, value=Float(lo=0, hi=1),
                           key=Str(choices=SPLITS), closed=True, required=SPLITS),
    "split_salt": Str(default="dhs-v1"),
    "dec_max_deg": Float(default=32.0, lo=-90, hi=90),
    "dec_min_deg": Float(default=-65.0, lo=-90, hi=90),
    "failed_cutout_fraction": Float(default=0.0, lo=0, hi=1, open_hi=True),
    "batch_size": Int(default=256, lo=1),
    "npz_compression": Choice("stored", "deflate", default="stored"),
    "device": Device(),
    "compile": Choice("auto", "on", "off", default="auto"),
    "dtype": Choice("float32", "float64", default="float32"),
    "population": Choice(*POPULATIONS, default="physical"),
    "physical": PhysicalParams(default={}),
    "physical_train": PhysicalParams(default={}),
    "priors": Map(key=Str(choices=PRIORS), closed=True, required=PRIORS, value=Prior()),
    "centring": Section(fields={"subpixel": Bool(default=True), "centroid_error_arcsec": Float(default=0.1, lo=0, unit="arcsec")}),
    "host_kinds": Map(default={"lrg": 1.0}, key=Str(choices=HOST_KINDS), closed=True, value=Float(lo=0), min_len=1),
    "host_kinds_train": Map(default=None, nullable=True, key=Str(choices=HOST_KINDS), closed=True, value=Float(lo=0), min_len=1),
    # structure in early-type cores (fractions of those hosts; the rest smooth): dhs.simulate.scene.core_structures
    "core_structures": Map(default={}, key=Str(choices=CORE_KINDS), closed=True, value=Float(lo=0, hi=1)),
    # the three populations (dhs.simulate.designs, docs/population.md)
    "lessons": Section(default=None, nullable=True, rules=(_lessons,), fields={
        "mu_min": Float(default=5.0, lo=1),
        "theta_e_arcsec": List(default=[0.6, 2.4], item=Float(lo=0, open_lo=True, unit="arcsec"), min_len=2, max_len=2, increasing=True),
        "flat_theta_e": Bool(default=True),
        "theta_e_bins": Int(default=9, lo=1, hi=100),
    }),
    "measurement": Section(default=None, nullable=True, fields={
        "flatten": List(default=["theta_e_arcsec", "src_r_mag"], item=Str(choices=TILT_VARIABLES), distinct=True),
        "strength": Float(default=0.75, lo=0, hi=1),
        "floor": Float(default=0.02, lo=0, hi=1, open_lo=True),
    }),
    "control_hosts": Choice("lens", "parent", default="lens"),
    # control-only stamps added to a split, as a multiple of the stamps the split holds otherwise
    "extra_controls": Map(default={}, key=Str(choices=SPLITS), closed=True, value=Float(lo=0, hi=100)),
    "fields": Section(fields={
        "neighbours": Section(default=None, nullable=True, fields={
            "density_r24_per_deg2_per_mag": Float(default=30000.0, lo=0), "slope_per_mag": Float(default=0.33, lo=0, open_lo=True),
            "r_mag_min": Float(default=17.0), "r_mag_max": Float(default=25.5), "blue_fraction": Float(default=0.6, lo=0, hi=1)}),
        "stars": Section(default=None, nullable=True, fields={
            "density_per_deg2": Float(default=2000.0, lo=0), "slope_per_mag": Float(default=0.15, lo=0, open_lo=True),
            "r_mag_min": Float(default=16.0), "r_mag_max": Float(default=23.0)}),
        "companion_probability": Float(default=0.0, lo=0, hi=1),
    }),
    "knots": Section(default=None, nullable=True, rules=(_knots,), fields={
        "fraction_of_sources": Float(default=0.6, lo=0, hi=1),
        "flux_fraction": List(default=[0.1, 0.4], item=Float(lo=0, hi=1), min_len=2, max_len=2),
        "n_knots": List(default=[1, 6], item=Int(lo=1, hi=10), min_len=2, max_len=2),
        "sigma_arcsec": List(default=[0.03, 0.08], item=Float(lo=0.03, unit="arcsec"), min_len=2, max_len=2,
                             must="must be [lo, hi] in arcsec with lo >= 0.03 (narrower knots are not resolved by the sub-pixel grid)"),
        "bluer_g_minus_r": Float(default=0.16), "bluer_r_minus_z": Float(default=0.2),
    }),
    "noise": Section(fields={
        "photon_noise": Bool(default=True),
        # dark-sky surface brightness at CTIO, mag / arcsec^2 (DES DR1, Abbott et al. 2018: the medians)
        "sky_mag_per_arcsec2": Map(default={"g": 22.0, "r": 21.2, "z": 19.4}, value=Float(), **_PER_BAND),
        "correlation": Choice(*NOISE_CORRELATIONS, default="lanczos3"),
        "n_exposures": Int(default=3, lo=1),
    }),
})



# --------------------------------------------------------------------------- infer

INFER = Section(fields={
    "splits": List(default=list(SCORE_SPLITS), item=Choice(*SCORE_SPLITS), min_len=1, distinct=True),
    "batch_size": Int(default=512, lo=1),
    "device": Device(),
    # theta_E head (train.theta_head): bias and scatter per bin of theta_E/PSF
    "theta_psf_bins": List(default=[0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0], item=Float(), min_len=2, increasing=True),
})


# --------------------------------------------------------------------------- completeness

def _discoverable_bins(v: dict, key: str, source: str) -> None:
    missing = [b for b in v["discoverable_bins"] or () if b not in v["bins"]]
    if missing:
        raise _fail(source, f"{key}.discoverable_bins", f"must name keys of {key}.bins {sorted(v['bins'])}; {missing} have no bins",
                    v["discoverable_bins"])


def _surface(v: dict, key: str, source: str) -> None:
    s = v["surface"]
    if s is not None and not {s["x"], s["y"]} <= set(v["bins"]):
        raise _fail(source, f"{key}.surface", "must be {x: <binned column>, y: <binned column>} naming two keys of bins", s)


_EDGES = List(item=Float(finite=False), min_len=2, increasing=True,
              must="must be >= 2 strictly increasing numbers (bin edges; the last may be .inf)")


def _finite_edges(v: dict, key: str, source: str) -> None:
    for name, edges in v["bins"].items():
        if any(e != e or abs(e) == float("inf") for e in edges[:-1]):
            raise _fail(source, f"{key}.bins.{name}", _EDGES.must, edges)


SPARK = Section(fields={
    "master": Str(default="local[*]", pattern=r"local(\[(\*|\d+)(,\d+)?\])?|spark://\S+|yarn|k8s://\S+|mesos://\S+",
                  words="local, local[N], local[*], spark://host:port, yarn, k8s://... or mesos://..."),
    "app_name": Str(default="dark-halo-scope"),
    "driver_memory": Str(default="2g", pattern=r"\d+[kmgtKMGT]?", words="a JVM memory size such as 2g or 512m"),
    "shuffle_partitions": Int(default=8, lo=1),
    "conf": Map(default={}, key=Str(pattern=r"spark\.\S+", words="a spark.* setting name"),
                value=Field(), must="must map spark.* setting names to values"),
    "log_level": Choice("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", default="ERROR"),
})

COMPLETENESS = Section(rules=(_finite_edges, _surface, _discoverable_bins), fields={
    "eval_split": Choice(*SCORE_SPLITS, default="test"),
    "plot_fpr": Float(default=0.01, lo=0, hi=1, open_lo=True, open_hi=True),     # must be one of evaluation.fprs
    "fixed_scores": List(default=[], item=Float(lo=0, hi=1)),
    "clean_max_bad_pixel_frac": Float(default=0.2, lo=0, hi=1),
    "clean_max_wise_brightmask_frac": Float(default=0.2, lo=0, hi=1),
    "n_bootstrap": Int(default=1000, lo=0),
    "seed": Int(default=0, lo=0),
    "confidence": Float(default=0.95, lo=0, hi=1, open_lo=True, open_hi=True),
    "bins": Map(key=Str(words="a score-table column"), value=_EDGES, min_len=1,
                must="must map score-table columns to bin edges, e.g. theta_e_arcsec: [0.5, 1.0, 1.5]"),
    "surface": Section(default=None, nullable=True, fields={"x": Str(), "y": Str()},
                       must="must be {x: <binned column>, y: <binned column>} naming two keys of bins"),
    # the curves also drawn over the LensPop-discoverable injections alone (score-table column `discoverable`)
    # null: theta_e_over_psf and arc_snr_int, those of them that are binned
    "discoverable_bins": List(default=None, nullable=True, item=Str(), distinct=True),
    # look-alike controls (these control kinds) reweighted by each factor: thresholds and completeness again (a sensitivity)
    "lookalike_kinds": List(default=["lrg_tangential_companion", "lrg_alignment", "spiral", "ring", "merger", "edge_on"],
                            item=Str(choices=HOST_KINDS), distinct=True),
    "lookalike_factors": List(default=[0.5, 2.0], item=Float(lo=0, open_lo=True), distinct=True),
    "spark": SPARK,
})

SENSITIVITY = Section(fields={
    "theta_psf_thresholds": List(default=[0.6, 0.7, 0.8, 0.9], item=Float(lo=0, open_lo=True), min_len=1),
    "snr_min": Float(default=5.0, lo=0),
    "variables": List(default=["theta_e_arcsec", "theta_e_over_psf"], item=Str(), min_len=1, distinct=True),
})


# --------------------------------------------------------------------------- calibration

# --------------------------------------------------------------------------- selection (dhs.selection)

SELECTION = Section(fields={
    # the evaluation split's sky regions held out from the fit to validate it (a seeded random choice)
    "holdout_fraction": Float(default=0.3, lo=0, hi=1, open_lo=True, open_hi=True),
    "n_knots": Int(default=8, lo=2, hi=40),              # knots per term, at quantiles of the fit data
    "smoothing": Float(default=3.0, lo=0),               # second-difference penalty on each term's slopes
    "ridge": Float(default=1e-3, lo=0),
    "n_replicates": Int(default=40, lo=2),               # region-bootstrap refits: the model's band
    "max_components": Int(default=24, lo=1),             # principal components of the band kept in the file
    "n_validation_bins": Int(default=6, lo=2),           # equal-count bins per variable of the held-out injections
    "min_bin_n": Int(default=25, lo=1),                  # a held-out bin with fewer injections is shown, not counted
    "n_draws": Int(default=400, lo=50),                  # coefficient draws for bin bands
    "seed": Int(default=0, lo=0),
    # the closure test (stage closure): seeds of the analytic finder run through completeness and selection
    "closure_seeds": Int(default=2, lo=2),
})


def _calibration_splits(v: dict, key: str, source: str) -> None:
    if v["fit_split"] == v["eval_split"]:
        raise ParamsError(f"{source}: {key}.fit_split and eval_split are both {v['fit_split']!r}; a calibration judged on "
                          f"the split it was fitted on is optimistic: fit on val, evaluate on test")


CALIBRATION = Section(rules=(_calibration_splits,), fields={
    "method": Choice(*CALIBRATION_METHODS, default="temperature"),
    "n_bins": Int(default=15, lo=2, hi=1000),
    "strategies": List(default=list(RELIABILITY_STRATEGIES), item=Choice(*RELIABILITY_STRATEGIES), min_len=1, distinct=True),
    "fit_split": Choice(*SCORE_SPLITS, default="val"),
    "eval_split": Choice(*SCORE_SPLITS, default="test"),
    "survey_prevalence": Float(default=1e-3, lo=0, hi=1, open_lo=True, open_hi=True),
})


# --------------------------------------------------------------------------- report

REPORT = Section(fields={
    "archs": List(default=None, nullable=True, item=Str(pattern=r"[A-Za-z0-9_.-]+",
                                                        words="a name that may hold only letters, digits, '_', '.', '-'"),
                  min_len=1, distinct=True),          # null = finders.measure
    "title": Str(default="Dark Halo Scope: selection function report"),
    "gallery_n": Int(default=6, lo=1, hi=20),
    "gallery_theta_bins": Int(default=4, lo=1, hi=10),
    "gallery_min_arc_snr": Float(default=8.0, lo=0.0),
    "seed": Int(default=0, lo=0, hi=2**32 - 1),
})


# --------------------------------------------------------------------------- known lenses

def _known_lenses(v: dict, key: str, source: str) -> None:
    if abs(v["pixscale_arcsec"] - 0.262) > 1e-9:
        raise _fail(source, f"{key}.pixscale_arcsec", "must be 0.262 (the DR10 pixel scale the models are trained at; "
                                                      "cutouts at another scale would be scored at the wrong angular size)",
                    v["pixscale_arcsec"])
    url_template_rule(v["url_template"], key, source)


KNOWN_LENSES = Section(rules=(_known_lenses,), fields={
    "catalog": Str(default="dhs/known_lenses/known_lenses.csv"),
    "grades": List(default=list(GRADES), item=Choice(*GRADES), min_len=1, distinct=True),
    "max_lenses": Int(default=None, nullable=True, lo=1),
    "source": Str(default="legacysurvey", words="legacysurvey or a directory of FITS cutouts"),
    "url_template": Str(default=CUTOUT_URL_TEMPLATE),
    "layer": Str(default="ls-dr10", pattern=r"[^/&?= ]+", words="a viewer layer name such as ls-dr10"),
    "pixscale_arcsec": Float(default=0.262, lo=0, open_lo=True, unit="arcsec/px"),
    "size_px": Int(default=64, lo=8, hi=512),
    "max_concurrency": Int(default=4, lo=1, hi=MAX_CONCURRENCY_CAP,
                           must=f"must be in [1, {MAX_CONCURRENCY_CAP}] (the viewer is a shared public service)"),
    "max_attempts": Int(default=4, lo=1),
    "connect_timeout_s": Float(default=5.0, lo=0, open_lo=True, unit="seconds"),
    "read_timeout_s": Float(default=60.0, lo=0, open_lo=True, unit="seconds"),
    "backoff_s": Float(default=1.0, lo=0, unit="seconds"),
    # wall-clock bounds (read_timeout_s bounds one socket read, so a server that drips its answer never times out)
    "cutout_deadline_s": Float(default=120.0, lo=0, open_lo=True, unit="seconds"),
    "run_deadline_s": Float(default=10800.0, lo=0, open_lo=True, unit="seconds"),
    "require": Bool(default=False),
    "prob_thresholds": List(default=[0.3, 0.5, 0.9], item=Float(lo=0, hi=1, open_lo=True, open_hi=True)),
    "theta_e_bins_arcsec": List(default=[0.5, 1.0, 1.25, 1.5, 2.0], item=Float(lo=0), min_len=2, increasing=True),
    "gallery_max": Int(default=48, lo=0),
    "batch_size": Int(default=256, lo=1),
    "device": Device(),
})


# --------------------------------------------------------------------------- gates

def _auc(default: float) -> Float:
    return Float(default=default, lo=0, hi=1, must="is an AUC threshold and must lie in [0, 1]")


def _gates(v: dict, key: str, source: str) -> None:
    if v["n_probe"] < v["min_rows_per_class"]:
        raise _fail(source, f"{key}.n_probe", f"must be >= {key}.min_rows_per_class ({v['min_rows_per_class']}), or the "
                                              f"ring probe always SKIPs: raise n_probe or lower min_rows_per_class",
                    v["n_probe"])


GATES = Section(rules=(_gates,), fields={
    "enforce": Bool(default=False),
    "seed": Int(default=1, lo=0),
    "n_eval": Int(default=3000, lo=0),
    "n_bootstrap": Int(default=200, lo=0),
    # below this many rows of a class a gate SKIPs (dhs.gates.result.MIN_ROWS_PER_CLASS says why 30)
    "min_rows_per_class": Int(default=30, lo=10, must="must be an integer >= 10 (rows of each class a gate needs before "
                                                      "it decides; with fewer the 95% interval of an AUC near 0.5 is "
                                                      "+-0.26 or wider, wider than the thresholds' margins): raise it"),
    "batch_size": Int(default=512, lo=1),
    "device": Device(),
    "core_radius_px": Float(default=5.0, lo=0, open_lo=True, unit="pixels"),
    "core_auc_max": _auc(0.65),
    "core_n_train": Int(default=6000, lo=0),
    "metadata_auc_max": _auc(0.6),
    "core_mask_max_auc_drop": Float(default=0.05, lo=0, hi=1),
    "core_mask_clearance_fwhm": Float(default=0.5, lo=0),
    "ring_radius_arcsec": Float(default=1.2, lo=0, open_lo=True, unit="arcsec"),
    "ring_sigma_px": Float(default=0.5, lo=0, open_lo=True, unit="pixels"),
    "ring_peak_sigma": Float(default=3.0, lo=0, open_lo=True, unit="(multiples of the sky sigma)"),
    "ring_max_excess_logit": Float(default=1.0),
    "n_probe": Int(default=400, lo=1),
    "shuffle_min_auc": _auc(0.75),
    "shift_offsets_px": List(default=[[0.5, 0.5], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [-1.0, 2.0]],
                             item=List(item=Float(lo=-8, hi=8), min_len=2, max_len=2), min_len=1,
                             must="must be a non-empty list of [dy, dx] pixel shifts, each within [-8, 8]"),
    "shift_max_fpr_ratio": Float(default=1.5, lo=1.0),
    "shift_max_auc_drop": Float(default=0.005, lo=0, hi=1),
    "shift_n_eval": Int(default=0, lo=0),
})


# --------------------------------------------------------------------------- finders
# The finders measured: every stage from infer on runs once per name of finders.measure. A name
# is an arch trained here (train.archs) or a finder made elsewhere, declared under
# finders.external by its model file or score table and its input spec (docs/external-finders.md;
# the spec's meaning is in dhs.models.external).

EXTERNAL_FORMATS = ("onnx", "torchscript", "scores")
FORMAT_SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript",
                   ".parquet": "scores", ".csv": "scores"}
EXTERNAL_PREPROCESS = ("none", "project", "asinh", "standardise")
FINDER_NAME = r"[a-z][a-z0-9_]{0,39}"
# a path inside the repository: relative, no '..' component, no leading '/' or '~'
REPO_PATH = r"(?!/)(?!~)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9_./-]+"


def _external_preprocess(v: dict, key: str, source: str) -> None:
    if v["kind"] == "asinh" and v["softening_nmgy"] is None:
        raise _fail(source, f"{key}.softening_nmgy", "must be given for kind asinh (one softening per band of 'bands', nMgy)", None)
    if v["kind"] != "asinh" and v["softening_nmgy"] is not None:
        raise _fail(source, f"{key}.softening_nmgy", "is read only with kind asinh; remove it", v["softening_nmgy"])
    if v["kind"] != "project" and v["project"] is not None:
        raise _fail(source, f"{key}.project", "is read only with kind project (the project's preprocess keys); remove it",
                    v["project"])
    if v["kind"] == "project":
        v["project"] = PREPROCESS.check(v["project"] or {}, f"{key}.project", source)


def _external(v: dict, key: str, source: str) -> None:
    suffix = "." + v["model"].rsplit(".", 1)[-1].lower() if "." in v["model"].rsplit("/", 1)[-1] else ""
    if v["format"] is None:
        if suffix not in FORMAT_SUFFIXES:
            raise _fail(source, f"{key}.format", f"must be given when the model file's suffix is not one of "
                                                 f"{sorted(FORMAT_SUFFIXES)} (then one of {list(EXTERNAL_FORMATS)})", None)
        v["format"] = FORMAT_SUFFIXES[suffix]
    if v["format"] == "scores":
        return
    bands = v["bands"]
    pre = v["preprocess"]
    if pre["kind"] == "asinh" and len(pre["softening_nmgy"]) != len(bands):
        raise _fail(source, f"{key}.preprocess.softening_nmgy", f"must hold one value per band of bands {bands}",
                    pre["softening_nmgy"])
    if pre["kind"] == "project" and bands != list(BANDS):
        raise _fail(source, f"{key}.bands", f"must be {list(BANDS)} with preprocess kind project (the project's "
                                            f"normalisation pools g, r and z)", bands)


EXTERNAL = Section(rules=(_external,), fields={
    "model": Str(pattern=REPO_PATH, words="a path inside the repository (relative, no '..'): the model file or score table"),
    "format": Choice(*EXTERNAL_FORMATS, default=None, nullable=True),   # null: from the file's suffix
    "bands": List(default=list(BANDS), item=Choice(*BANDS), min_len=1, max_len=3, distinct=True),
    "stamp_size": Int(default=64, lo=8, hi=96),       # the centred crop it takes
    "layout": Choice("NCHW", "NHWC", default="NCHW"),
    "dtype": Choice("float32", "float16", "float64", default="float32"),
    "preprocess": Section(rules=(_external_preprocess,), fields={
        "kind": Choice(*EXTERNAL_PREPROCESS, default="none"),
        "softening_nmgy": List(default=None, nullable=True, item=Float(lo=0, open_lo=True), min_len=1, max_len=3),
        "project": Field(default=None, nullable=True),   # kind project: the keys of the preprocess section
    }),
    "output": Section(fields={
        "kind": Choice("logit", "probability", default="logit"),
        "index": Int(default=0, lo=0),                # the lens column of an (N, K) output; (N,) and (N, 1) take 0
    }),
    "columns": Section(fields={                      # a score table's columns
        "id": Str(default="task_id"),
        "score": Str(default="score"),
    }),
    "device": Device(),
    "batch_size": Int(default=256, lo=1),
})

FINDERS = Section(fields={
    "measure": List(default=["small_cnn"], item=Str(pattern=FINDER_NAME, words="a finder name (lower case, digits, '_')"),
                    min_len=1, distinct=True),
    "external": Map(default={}, key=Str(pattern=FINDER_NAME, words="a finder name (lower case letter, then lower case, "
                                                                   "digits or '_', at most 40)"), value=EXTERNAL),
})

# --------------------------------------------------------------------------- the file

SECTIONS: dict[str, Section] = {
    "stamps": STAMPS, "preprocess": PREPROCESS, "baseline": BASELINE, "train": TRAIN, "simulate": SIMULATE,
    "infer": INFER, "evaluation": EVALUATION, "completeness": COMPLETENESS, "sensitivity": SENSITIVITY,
    "selection": SELECTION,
    "calibration": CALIBRATION, "report": REPORT, "known_lenses": KNOWN_LENSES, "gates": GATES,
    "distributed": DISTRIBUTED, "finders": FINDERS,
}


def plot_fpr_rule(p, source: str) -> None:
    fprs, plot = p["evaluation"]["fprs"], p["completeness"]["plot_fpr"]
    if plot not in fprs:
        raise _fail(source, "completeness.plot_fpr", f"must be one of evaluation.fprs {fprs}", plot)


def sensitivity_bins_rule(p, source: str) -> None:
    missing = [v for v in p["sensitivity"]["variables"] if v not in p["completeness"]["bins"]]
    if missing:
        raise _fail(source, "sensitivity.variables", f"must name binned columns (keys of completeness.bins "
                                                     f"{sorted(p['completeness']['bins'])}); {missing} have no bins",
                    p["sensitivity"]["variables"])


def finders_rule(p, source: str) -> None:
    """Every measured finder is trained here or declared external, never both; nothing is trained
    for nothing."""
    trained, external = p["train"]["archs"], p["finders"]["external"]
    if "finders" not in p.raw:   # a file without the section measures what it trains
        p["finders"]["measure"] = list(trained)
    measure = p["finders"]["measure"]
    both = sorted(set(external) & set(ARCHS))
    if both:
        raise _fail(source, "finders.external", f"must not declare names of the archs trained here {list(ARCHS)}; "
                                                f"rename {both}", sorted(external))
    unknown = [m for m in measure if m not in trained and m not in external]
    if unknown:
        raise _fail(source, "finders.measure", f"must name archs of train.archs {trained} or finders declared under "
                                               f"finders.external {sorted(external)}; {unknown} are neither", measure)
    idle = [a for a in trained if a not in measure]
    if idle:
        raise _fail(source, "train.archs", f"must each be measured: {idle} would be trained and never scored; add them "
                                           f"to finders.measure {measure} or drop them from train.archs", trained)


# rules across sections: (the sections they read, the rule)
RULES = ((("evaluation", "completeness"), plot_fpr_rule), (("completeness", "sensitivity"), sensitivity_bins_rule),
         (("train", "finders"), finders_rule))
