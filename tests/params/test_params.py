"""The params boundary: the whole of params.yaml is checked when any stage starts, a bad value in
any section stops the stage before it does any work, every refusal names the key, the value and
what is allowed, and the simulator's configuration is a view of the schema."""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest
import yaml

from dhs.params import ParamsError, checked, load
from dhs.params.schema import SECTIONS, SIMULATE
from tests.conftest import REPO

BASE = yaml.safe_load((REPO / "params.yaml").read_text())

# (section, key path, bad value, what the message must say is allowed)
BAD = [
    ("stamps", ["cache_dtype"], "float8", "must be one of ['float16', 'float32']"),
    ("stamps", ["max_reject_frac"], 2.0, "must lie in [0, 1]"),
    ("train", ["batch_size"], 1.5, "must be an integer in [1, 16384]"),
    ("train", ["archs"], ["nope"], "values from ['small_cnn', 'resnet18'"),
    ("train", ["device"], "gpu", "must be auto, cpu, cuda or cuda:N"),
    ("evaluation", ["fprs"], "0.1", "must be a non-empty list of distinct numbers that must lie in (0, 1)"),
    ("completeness", ["spark", "master"], "bogus://x", "must be local, local[N], local[*], spark://host:port"),
    ("infer", ["theta_psf_bins"], [0.0, 1.0, 0.5], "must be a list of >= 2 strictly increasing numbers"),
    ("simulate", ["priors", "theta_e_arcsec"], {"dist": "uniform", "low": 2.5, "high": 0.5}, "low (2.5) must not exceed high (0.5)"),
    ("calibration", ["survey_prevalence"], "1e-3", "write 1.0e-3"),
    ("gates", ["n_probe"], 0, "must be an integer >= 1"),
    ("known_lenses", ["max_concurrency"], 50, "must be in [1, 8]"),
    # the remaining bad-value cases, and the deadlines
    ("train", ["lr"], "abc", "must be a number"),
    ("stamps", ["rows_per_shard"], 0, "must be an integer >= 1"),
    ("train", ["overrides", "resnet18", "batch_size"], 1.5, "must be an integer in [1, 16384]"),
    ("known_lenses", ["cutout_deadline_s"], 0, "must be > 0 seconds"),
    ("known_lenses", ["run_deadline_s"], "3h", "must be a number"),
    ("distributed", ["master_port"], 70000, "must be an integer in [1, 65535]"),
    ("stamps", ["hosts", "region_size_deg"], 0.1, "must lie in [0.25, 30"),
    # values that used to reach the code: a sky band upside down, URL templates the client cannot fill, sizes that exhaust memory
    ("simulate", ["dec_min_deg"], 40.0, "simulate.dec_min_deg must be below simulate.dec_max_deg (32.0)"),
    ("stamps", ["hosts", "url_template"], "https://x/c.fits?ra={ra}&dec={dec}&q={quality}", "unknown placeholders ['quality']"),
    ("stamps", ["hosts", "url_template"], "https://x/c.fits?ra={ra:>999999999}&dec={dec}", "no format spec or conversion (['ra'])"),
    ("known_lenses", ["url_template"], "https://x/c.fits?ra={ra}&dec={dec", "balanced braces"),
    ("train", ["batch_size"], 10**9, "must be an integer in [1, 16384]"),
    ("train", ["simulate_block_stamps"], 10**8, "must be an integer in [1, 65536]"),
]


def with_value(section: str, path: list[str], value) -> dict:
    p = copy.deepcopy(BASE)
    node = p[section]
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return p


def write(tmp_path, params: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_the_repository_params_are_valid_and_every_section_has_a_schema():
    p = load(REPO / "params.yaml")
    assert set(BASE) == set(SECTIONS)
    assert p["evaluation"]["fprs"] == [0.1, 0.01, 0.001] and p["completeness"]["plot_fpr"] in p["evaluation"]["fprs"]


@pytest.mark.parametrize("section, path, value, allowed", BAD, ids=[".".join([b[0], *b[1]]) for b in BAD])
def test_a_bad_value_anywhere_is_refused_naming_key_value_and_what_is_allowed(tmp_path, section, path, value, allowed):
    params = write(tmp_path, with_value(section, path, value))
    with pytest.raises(ParamsError) as exc:
        load(params)
    msg = str(exc.value)
    key = ".".join([section, *path])
    assert msg.startswith(f"{params}: {key}")
    assert allowed in msg and (repr(value) in msg or section == "simulate")


@pytest.mark.parametrize("section, path, value, allowed", BAD[:3], ids=["stamps.cache_dtype", "stamps.max_reject_frac", "train.batch_size"])
def test_any_stage_stops_before_any_work_on_a_bad_value_in_any_section(tmp_path, capsys, section, path, value, allowed):
    """The report stage uses none of these sections, yet refuses the file with exit status 2
    and writes nothing."""
    from stages import report

    out = tmp_path / "index.html"
    rc = report.main(["--params", str(write(tmp_path, with_value(section, path, value))), "--root", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("report: FAILED: ") and allowed in err and not out.exists()


def test_theta_psf_bins_are_refused_before_any_stamp_is_scored(tmp_path, capsys):
    """No model and no cache exist here: the stage fails on the params, not on the missing inputs."""
    from stages import infer

    params = write(tmp_path, with_value("infer", ["theta_psf_bins"], [1.0]))
    rc = infer.main(["--arch", "small_cnn", "--params", str(params), "--cache", str(tmp_path / "none"),
                     "--models", str(tmp_path / "none"), "--scores", str(tmp_path / "s"), "--metrics", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert rc == 2 and "infer.theta_psf_bins must be a list of >= 2 strictly increasing numbers, got [1.0]" in err
    assert not (tmp_path / "s").exists()


def test_rules_across_keys_and_sections(tmp_path):
    p = with_value("completeness", ["plot_fpr"], 0.05)
    with pytest.raises(ParamsError, match=re.escape("completeness.plot_fpr must be one of evaluation.fprs [0.1, 0.01, 0.001], got 0.05")):
        load(write(tmp_path, p))
    p = with_value("sensitivity", ["variables"], ["arc_snr", "src_dmag"])
    with pytest.raises(ParamsError, match=r"sensitivity.variables must name binned columns .* \['src_dmag'\] have no bins"):
        load(write(tmp_path, p))
    p = with_value("calibration", ["eval_split"], "val")
    with pytest.raises(ParamsError, match="fit on val, evaluate on test"):
        load(write(tmp_path, p))
    p = with_value("train", ["archs"], ["small_cnn", "hybrid"])
    p["finders"]["measure"] = ["small_cnn", "hybrid"]
    p["train"]["hybrid_metadata"] = ["psfsize_r", "arc_snr"]
    with pytest.raises(ParamsError, match="carry the injection label"):
        load(write(tmp_path, p))
    p = copy.deepcopy(BASE)
    p["evaluation"]["fprs"] = [0.01, 0.01]
    with pytest.raises(ParamsError, match=re.escape("evaluation.fprs lists [0.01] more than once")):
        load(write(tmp_path, p))


def test_unknown_keys_and_sections_are_refused_and_absent_sections_take_their_defaults(tmp_path):
    p = copy.deepcopy(BASE)
    p["completeness"]["fprs"] = [0.1]            # the operating FPRs live in evaluation, once
    with pytest.raises(ParamsError, match=re.escape("unknown keys ['fprs'] in 'completeness'")):
        load(write(tmp_path, p))
    p = copy.deepcopy(BASE)
    p["reprot"] = {}
    with pytest.raises(ParamsError, match=re.escape("unknown sections ['reprot']")):
        load(write(tmp_path, p))
    p = copy.deepcopy(BASE)
    del p["evaluation"], p["gates"]
    loaded = load(write(tmp_path, p))
    assert loaded["evaluation"]["fprs"] == [0.1, 0.01, 0.001] and loaded["gates"]["n_probe"] == 400
    del p["simulate"]
    with pytest.raises(ParamsError, match="has no 'simulate' section"):
        load(write(tmp_path, p))["simulate"]


def test_overrides_as_dvc_exp_run_writes_them_are_checked_like_the_file(tmp_path):
    """`dvc exp run -S` edits params.yaml through Hydra: a list, a number in exponent form, a key
    added to an empty mapping (++) all come back as values the schema accepts, or refuses."""
    p = copy.deepcopy(BASE)
    p["evaluation"]["fprs"] = [0.01, 0.001]
    p["completeness"]["plot_fpr"] = 0.001
    p["calibration"]["survey_prevalence"] = 1e-4
    p["completeness"]["spark"]["conf"] = {"spark.executor.memory": "8g", "spark.executor.cores": 4}
    loaded = load(write(tmp_path, p))
    assert loaded["completeness"]["spark"]["conf"]["spark.executor.cores"] == 4
    p["completeness"]["spark"]["conf"] = {"executor.memory": "8g"}
    with pytest.raises(ParamsError, match="completeness.spark.conf key must be a spark.\\* setting name, got 'executor.memory'"):
        load(write(tmp_path, p))


def test_the_simulators_configuration_is_a_view_of_the_schema():
    """SimConfig holds every key of the simulate section as the schema checked it (its defaults
    included) and refuses what the schema refuses with the schema's message; the configs of its
    parts take their checked sub-sections whole, so none of them holds a default of its own."""
    from dhs.params.views import frozen
    from dhs.simulate.config import SimConfig
    from dhs.simulate.designs import LessonsConfig, MeasurementConfig
    from dhs.simulate.knots import KnotConfig
    from dhs.simulate.noise import NoiseModel
    from dhs.simulate.scene import NeighbourCounts, SceneConfig, StarCounts

    fields = {f.name for f in dataclasses.fields(SimConfig)}
    assert fields == set(SIMULATE.fields)
    required = {"n_stamps": 10, "seed": 1, "priors": BASE["simulate"]["priors"]}
    cfg, schema_defaults = SimConfig.from_params(required), checked("simulate", required)
    for name in fields:
        assert getattr(cfg, name) == frozen(schema_defaults[name]), name
    sub = SIMULATE.fields
    for cls, section in ((KnotConfig, sub["knots"]), (NoiseModel, sub["noise"]), (LessonsConfig, sub["lessons"]),
                         (MeasurementConfig, sub["measurement"]), (NeighbourCounts, sub["fields"].fields["neighbours"]),
                         (StarCounts, sub["fields"].fields["stars"])):
        assert {f.name for f in dataclasses.fields(cls)} == set(section.fields), cls.__name__
    for cls in (KnotConfig, NoiseModel, LessonsConfig, MeasurementConfig, NeighbourCounts, StarCounts, SceneConfig):
        with_default = [f.name for f in dataclasses.fields(cls)
                        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
        assert not with_default, f"{cls.__name__} repeats the schema's defaults of {with_default}"
    for key, value in [("stamp_size", 65), ("n_stamps", 0), ("oversample", 0), ("psf_model", "airy"), ("control_fraction", 1.5),
                       ("split_fractions", {"train": 0.7, "val": 0.2, "test": 0.2}), ("bricks_per_region", [5, 2]),
                       ("compile", "maybe"), ("host_pad_px", 65), ("population", "lenspop2"), ("host_kinds", {"quasar": 1.0}),
                       ("host_kinds_train", {"lrg": 0.0}), ("core_structures", {"colour_gradient": 0.7, "psf_mismatch": 0.7}),
                       ("noise", {"correlation": "bilinear"}), ("knots", {"sigma_arcsec": [0.01, 0.05]}),
                       ("physical", {"src_mag_maxx": 26.0})]:
        bad = {**BASE["simulate"], key: value}
        with pytest.raises(ParamsError, match=re.escape(f"simulate.{key}")) as by_schema:
            checked("simulate", bad)
        with pytest.raises(ParamsError) as by_config:
            SimConfig.from_params(bad)
        assert str(by_config.value) == str(by_schema.value)
    cfg = SimConfig.from_params(checked("simulate", BASE["simulate"]))
    assert cfg == SimConfig.from_params(BASE["simulate"])


def test_a_bad_cache_dtype_is_refused_before_the_stamps_stage_simulates_or_replaces_anything(tmp_path, capsys):
    """stamps.cache_dtype used to be checked by the cache build, after data/stamps was simulated
    and replaced; now the whole file is checked first and the previous outputs stay as they were."""
    import hashlib

    from stages import stamps

    out, cache = tmp_path / "data" / "stamps", tmp_path / "data" / "cache"
    for d in (out / "region_split=train", cache / "train"):
        d.mkdir(parents=True)
    (out / "region_split=train" / "part-00000.parquet").write_bytes(b"the previous run's shard")
    (cache / "manifest.json").write_text("{}")
    before = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((tmp_path / "data").rglob("*")) if f.is_file()}
    rc = stamps.main(["--params", str(write(tmp_path, with_value("stamps", ["cache_dtype"], "float8"))),
                      "--out", str(out), "--cache", str(cache), "--metrics", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == (f"stamps: FAILED: {tmp_path / 'params.yaml'}: stamps.cache_dtype must be one of "
                                       f"['float16', 'float32'], got 'float8'")
    after = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((tmp_path / "data").rglob("*")) if f.is_file()}
    assert after == before and not (tmp_path / "m.json").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cache", "stamps"]  # no temporaries either


def test_on_and_off_as_dvc_exp_run_writes_them_bare_are_the_choices_not_booleans(tmp_path):
    """`dvc exp run -S simulate.compile=off` rewrites params.yaml with a bare `off`, which YAML 1.1
    (PyYAML) reads as false: for an on/off choice that is the choice; elsewhere a boolean is still
    refused."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    apply_overrides(str(path), ["simulate.compile=off", "train.preload=on"])
    text = path.read_text()
    assert re.search(r"^\s+compile: off\b", text, re.M) and re.search(r"^\s+preload: on\b", text, re.M)
    assert yaml.safe_load(text)["simulate"]["compile"] is False          # what a YAML 1.1 reader sees
    loaded = load(path)
    assert loaded["simulate"]["compile"] == "off" and loaded["train"]["preload"] == "on"
    with pytest.raises(ParamsError, match="stamps.cache_dtype.*one of \\['float16', 'float32'\\]"):
        load(write(tmp_path, with_value("stamps", ["cache_dtype"], True)))
