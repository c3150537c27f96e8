"""External finders (dhs.models.external): a trained finder exported to ONNX and TorchScript and
measured again scores like the native one; a foreign network with its own preprocessing, layout
and output is fed exactly what its spec says; every mismatch between a model and its spec, a
non-finite output and a bad score table is one clear error; the spec is checked by the params
schema."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from dhs.models.checkpoint import load_trained
from dhs.models.export import ExportError, export_model, export_stamps
from dhs.models.external import ExternalError, check_table_ids, load_external, pack
from dhs.models.inference import load_finder, score_images, score_split
from dhs.models.loader import preprocess_from_params
from dhs.finder.training import train
from dhs.params import Params, ParamsError
from dhs.imaging.cache import open_split
from tests.conftest import REPO
from tests.finder.test_training import small_cfg

BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def external_spec(**over) -> dict:
    """A finders.external entry checked by the schema (defaults filled in)."""
    raw = copy.deepcopy(BASE)
    raw["finders"] = {"measure": ["small_cnn", "ext"], "external": {"ext": over}}
    return Params(raw, "params.yaml")["finders"]["external"]["ext"]


def refused(finders: dict, train_archs=None) -> str:
    raw = copy.deepcopy(BASE)
    raw["finders"] = finders
    if train_archs is not None:
        raw["train"]["archs"] = train_archs
    with pytest.raises(ParamsError) as e:
        Params(raw, "params.yaml")
    return str(e.value)


# --------------------------------------------------------------------------- the spec at the boundary


def test_the_schema_refuses_bad_finder_declarations_by_key():
    ok = {"model": "finders/x.onnx"}
    assert "finders.external.x.model must be a path inside the repository" in refused(
        {"measure": ["small_cnn", "x"], "external": {"x": {"model": "../outside.onnx"}}})
    assert "finders.external.x.model must be a path inside the repository" in refused(
        {"measure": ["small_cnn", "x"], "external": {"x": {"model": "/etc/passwd.onnx"}}})
    assert "finders.external.x.format must be given" in refused(
        {"measure": ["small_cnn", "x"], "external": {"x": {"model": "finders/x.bin"}}})
    assert "softening_nmgy must hold one value per band" in refused(
        {"measure": ["small_cnn", "x"], "external": {"x": {**ok, "bands": ["g", "r"],
                                                            "preprocess": {"kind": "asinh", "softening_nmgy": [1, 2, 3]}}}})
    assert "finders.external.x.layout must be one of ['NCHW', 'NHWC']" in refused(
        {"measure": ["small_cnn", "x"], "external": {"x": {**ok, "layout": "CHW"}}})
    assert "finders.external.x.preprocess.project.mode" in refused(
        {"measure": ["small_cnn", "x"], "external": {"x": {**ok, "preprocess": {"kind": "project", "project": {"mode": "zscore"}}}}})
    assert "['nope'] are neither" in refused({"measure": ["small_cnn", "nope"], "external": {}})
    assert "rename ['resnet18']" in refused({"measure": ["small_cnn"], "external": {"resnet18": ok}})
    assert "['resnet18'] would be trained and never scored" in refused({"measure": ["small_cnn"], "external": {}},
                                                                       ["small_cnn", "resnet18"])
    assert "finders.external key must be a finder name" in refused({"measure": ["small_cnn"], "external": {"../x": ok}})
    # only external finders: nothing trained
    raw = copy.deepcopy(BASE)
    raw["train"]["archs"] = []
    raw["finders"] = {"measure": ["x"], "external": {"x": ok}}
    assert Params(raw, "params.yaml")["finders"]["external"]["x"]["format"] == "onnx"


# --------------------------------------------------------------------------- a trained finder, exported and re-imported


@pytest.fixture(scope="module")
def trained(sim_cache, tmp_path_factory) -> Path:
    """small_cnn trained briefly with the repository's preprocessing (host removal, raw + residual)."""
    d = tmp_path_factory.mktemp("trained") / "small_cnn"
    norm, _ = preprocess_from_params(BASE["preprocess"])
    train(small_cfg(epochs=1), sim_cache, d, norm, augment=False, progress=False)
    return d


def test_exported_onnx_and_torchscript_score_every_stamp_as_the_native_finder(trained, sim_cache, tmp_path):
    out = export_model(trained, "small_cnn", tmp_path / "finders", repo_root=tmp_path)
    native = load_trained(trained, "cpu", arch="small_cnn")
    for fmt, path in out.items():
        spec_file = yaml.safe_load(path.with_name(path.name + ".yaml").read_text())
        assert spec_file["model"] == f"finders/{path.name}" and spec_file["preprocess"]["kind"] == "project"
        spec = external_spec(**spec_file)
        pack("ext", spec, tmp_path, tmp_path / fmt / "checkpoint_best.pt")
        ext = load_finder(tmp_path / fmt, "cpu", arch="ext")
        for name in ("val", "test"):
            split = open_split(sim_cache, name)
            want, got = score_split(native, split, 64, False), score_split(ext, split, 32, False)
            assert np.max(np.abs(got - want)) < 1e-5, (fmt, name, np.max(np.abs(got - want)))
        # new images (probes, cutouts) too: the project's normalisation measured on the fly
        imgs = np.asarray(open_split(sim_cache, "test").images[:20], np.float32)
        assert np.max(np.abs(score_images(ext, imgs) - score_images(native, imgs))) < 1e-5


def test_packing_is_deterministic_and_records_the_model_hash(trained, tmp_path):
    import hashlib

    path = export_model(trained, "small_cnn", tmp_path / "f", formats=("onnx",), repo_root=tmp_path)["onnx"]
    spec = external_spec(**yaml.safe_load(path.with_name(path.name + ".yaml").read_text()))
    m1 = pack("ext", spec, tmp_path, tmp_path / "a" / "checkpoint_best.pt")
    m2 = pack("ext", spec, tmp_path, tmp_path / "b" / "checkpoint_best.pt")
    assert (tmp_path / "a" / "checkpoint_best.pt").read_bytes() == (tmp_path / "b" / "checkpoint_best.pt").read_bytes()
    assert m1 == m2 and m1["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_external(tmp_path / "a" / "checkpoint_best.pt").model_sha256 == m1["model_sha256"]


def test_a_colour_conditioned_finder_is_refused_at_export(sim_cache, tmp_path):
    norm, _ = preprocess_from_params({"mode": "annulus_common"})
    train(small_cfg(epochs=1, steps_per_epoch=1, colour_conditioning=True), sim_cache, tmp_path / "c", norm, augment=False,
          progress=False)
    with pytest.raises(ExportError, match="takes host colours as a second input; an external finder takes one image batch"):
        export_model(tmp_path / "c", "small_cnn", tmp_path / "out")
    assert not (tmp_path / "out" / "small_cnn.onnx").exists()


# --------------------------------------------------------------------------- a foreign finder with its own conventions


class TinyNHWC(torch.nn.Module):
    """A Keras-like network: NHWC input of r and g (in that order), two softmax columns, lens second."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv2d(2, 4, 5, padding=2)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        f = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return torch.softmax(self.head(f), dim=1)


def export_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["p"],
                          dynamic_axes={"x": {0: "n"}, "p": {0: "n"}})
    return path


TINY = {"model": "finders/tiny.onnx", "bands": ["r", "g"], "stamp_size": 48, "layout": "NHWC",
        "preprocess": {"kind": "asinh", "softening_nmgy": [0.05, 0.02]}, "output": {"kind": "probability", "index": 1}}


def test_a_foreign_network_gets_exactly_the_input_its_spec_describes(sim_cache, tmp_path):
    net = TinyNHWC()
    export_onnx(net, torch.zeros(2, 48, 48, 2), tmp_path / TINY["model"])
    pack("tiny", external_spec(**TINY), tmp_path, tmp_path / "m" / "checkpoint_best.pt")
    ext = load_finder(tmp_path / "m", "cpu", arch="tiny")
    split = open_split(sim_cache, "test")
    got = score_split(ext, split, 16, False)
    # the spec's convention written out independently: crop 64 -> 48 about the centre, bands r then g,
    # asinh(x / b), NHWC, probability column 1 -> logit
    x = np.asarray(split.images, np.float64)[:, :, 8:56, 8:56][:, [1, 0]]
    x = np.arcsinh(x / np.array([0.05, 0.02])[None, :, None, None]).transpose(0, 2, 3, 1)
    with torch.no_grad():
        p = net(torch.from_numpy(x.astype(np.float32))).double().numpy()[:, 1]
    want = np.log(p) - np.log1p(-p)
    assert got.shape == (len(split),) and np.max(np.abs(got - want)) < 1e-5
    # the same scores as a table give the same logits, row for row
    table = pd.DataFrame({"task_id": split.meta["task_id"].astype(str), "score": p.astype(np.float32).astype(np.float64)})
    with torch.no_grad():
        p32 = ext.runner(np.ascontiguousarray(x.astype(np.float32)))[:, 1]
    table["score"] = p32.astype(np.float64)
    table.to_csv(tmp_path / "finders" / "tiny.csv", index=False)
    pack("tiny_table", external_spec(model="finders/tiny.csv", output={"kind": "probability"}), tmp_path, tmp_path / "t" / "checkpoint_best.pt")
    tab = load_finder(tmp_path / "t", "cpu")
    assert np.array_equal(score_split(tab, split, 16, False), got)
    with pytest.raises(ExternalError, match="score table: it scores only the stamps it lists"):
        score_images(tab, np.asarray(split.images[:2], np.float32))


def test_standardise_and_none_preprocessing(sim_cache, tmp_path):
    class Sum(torch.nn.Module):
        def forward(self, x):
            return x.sum(dim=(1, 2, 3))

    export_onnx(Sum(), torch.zeros(2, 3, 64, 64), tmp_path / "finders" / "s.onnx")
    imgs = np.asarray(open_split(sim_cache, "test").images[:8], np.float32)
    for kind, want in (("none", imgs.astype(np.float64).sum(axis=(1, 2, 3))), ("standardise", np.zeros(8))):
        pack("s", external_spec(model="finders/s.onnx", preprocess={"kind": kind}), tmp_path, tmp_path / kind / "checkpoint_best.pt")
        got = score_images(load_finder(tmp_path / kind, "cpu"), imgs)
        assert np.allclose(got, want, rtol=1e-4, atol=1e-3), (kind, got, want)


# --------------------------------------------------------------------------- refusals


def test_a_model_that_does_not_match_its_spec_is_refused_naming_both(tmp_path):
    export_onnx(TinyNHWC(), torch.zeros(2, 48, 48, 2), tmp_path / "finders" / "tiny.onnx")
    cases = [
        ({**TINY, "bands": ["g", "r", "z"], "preprocess": {"kind": "none"}}, r"has shape \['n', 48, 48, 2\] but its spec describes NHWC"),
        ({**TINY, "stamp_size": 64}, r"has shape \['n', 48, 48, 2\] but its spec describes NHWC float32 input of shape \('N', 64, 64, 2\)"),
        ({**TINY, "layout": "NCHW"}, r"has shape \['n', 48, 48, 2\] but its spec describes NCHW"),
        ({**TINY, "dtype": "float64"}, r"is tensor\(float\) but its spec says dtype float64"),
        ({**TINY, "output": {"kind": "probability", "index": 2}}, r"returns 2 columns .* output.index 2"),
    ]
    for spec, message in cases:
        with pytest.raises(ExternalError, match=message):
            pack("tiny", external_spec(**spec), tmp_path, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()   # nothing packed on a refusal

    class Flat(torch.nn.Module):   # TorchScript declares no shape: the probe batch finds the mismatch
        def forward(self, x):
            return torch.nn.functional.linear(x.flatten(1), torch.ones(1, 3 * 64 * 64))

    torch.jit.save(torch.jit.script(Flat()), str(tmp_path / "finders" / "flat.pt"))
    with pytest.raises(ExternalError, match=r"does not run on the input its spec describes \(NCHW float32 input of shape \('N', 3, 48, 48\)"):
        pack("flat", external_spec(model="finders/flat.pt", stamp_size=48), tmp_path, tmp_path / "y.pt")
    with pytest.raises(ExternalError, match="not found"):
        pack("gone", external_spec(model="finders/gone.onnx"), tmp_path, tmp_path / "z.pt")
    (tmp_path / "finders" / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ExternalError, match="onnxruntime cannot load the model"):
        pack("junk", external_spec(model="finders/junk.onnx"), tmp_path, tmp_path / "z.pt")
    (tmp_path / "finders" / "link.onnx").symlink_to("/etc/hostname")
    with pytest.raises(ExternalError, match="resolves outside the repository"):
        pack("link", external_spec(model="finders/link.onnx"), tmp_path, tmp_path / "z.pt")


class NaNOnBright(torch.nn.Module):
    """Finite on faint stamps, NaN where the brightest pixel exceeds a level."""

    def forward(self, x):
        m = x.amax(dim=(1, 2, 3))
        return torch.where(m > 0.5, torch.full_like(m, float("nan")), m)


def test_a_non_finite_output_fails_with_the_stamp_id(sim_cache, tmp_path):
    export_onnx(NaNOnBright(), torch.zeros(2, 3, 64, 64), tmp_path / "finders" / "nan.onnx")
    pack("nan", external_spec(model="finders/nan.onnx"), tmp_path, tmp_path / "m" / "checkpoint_best.pt")
    ext = load_finder(tmp_path / "m", "cpu")
    split = open_split(sim_cache, "test")
    bright = np.asarray(split.images, np.float32).max(axis=(1, 2, 3)) > 0.5
    assert bright.any() and not bright.all()
    first = split.meta["task_id"].astype(str).to_numpy()[bright][0]
    with pytest.raises(ExternalError, match=rf"non-finite value\(s\) \(NaN or inf\) for stamp\(s\) \['{first}'"):
        score_split(ext, split, 512, False)


def test_a_finder_that_is_not_deterministic_is_refused(tmp_path):
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3)) + torch.rand(x.shape[0])

    torch.jit.save(torch.jit.script(Noisy()), str(tmp_path / "noisy.pt"))
    with pytest.raises(ExternalError, match="different scores for the same input on two calls"):
        pack("noisy", external_spec(model="noisy.pt"), tmp_path, tmp_path / "x.pt")


def test_score_tables_are_refused_with_counts(sim_cache, tmp_path):
    ids = {s: open_split(sim_cache, s).meta["task_id"].astype(str).to_numpy() for s in ("train", "val", "test")}
    scored = np.concatenate([ids["val"], ids["test"]])
    good = pd.DataFrame({"task_id": scored, "score": np.linspace(-3, 3, len(scored))})

    def attempt(df: pd.DataFrame, name="t.parquet"):
        (tmp_path / name).unlink(missing_ok=True)
        df.to_parquet(tmp_path / name, index=False) if name.endswith(".parquet") else df.to_csv(tmp_path / name, index=False)
        pack("t", external_spec(model=name), tmp_path, tmp_path / "m" / "checkpoint_best.pt")
        return check_table_ids(load_finder(tmp_path / "m", "cpu").table, ids, ("val", "test"), "t")

    acc = attempt(pd.concat([good, pd.DataFrame({"task_id": ids["train"][:5], "score": 0.0})]))
    assert acc["scored"] == {"val": len(ids["val"]), "test": len(ids["test"])} and acc["ignored"] == {"train": 5}
    assert attempt(good, "t.csv")["rows"] == len(scored)
    dup = pd.concat([good, good.iloc[:3]])
    with pytest.raises(ExternalError, match=r"3 id\(s\) appear more than once \(6 rows"):
        attempt(dup)
    with pytest.raises(ExternalError, match=rf"4 of the {len(ids['test'])} stamps of split test have no score"):
        attempt(good[~good["task_id"].isin(ids["test"][:4])])
    with pytest.raises(ExternalError, match=r"2 of its .* ids are no stamp of the cache \(e.g. \['alien-1', 'alien-2'\]"):
        attempt(pd.concat([good, pd.DataFrame({"task_id": ["alien-1", "alien-2"], "score": 0.0})]))
    nan = good.copy()
    nan.loc[7, "score"] = np.nan
    with pytest.raises(ExternalError, match=r"1 row\(s\) whose 'score' is empty, not a number, NaN or inf .* first at row 7"):
        attempt(nan)
    with pytest.raises(ExternalError, match=r"no column \['score'\]"):
        attempt(good.rename(columns={"score": "p"}))
    good.to_parquet(tmp_path / "t.parquet", index=False)   # scores in [-3, 3] declared as probabilities
    with pytest.raises(ExternalError, match="output.kind is probability but the model returned values outside \\[0, 1\\]"):
        pack("t", external_spec(model="t.parquet", output={"kind": "probability"}), tmp_path, tmp_path / "x.pt")


def test_the_stamps_to_score_are_written_with_their_ids(sim_cache, tmp_path):
    res = subprocess.run([sys.executable, "-m", "dhs.models.export", "stamps", "--cache", str(sim_cache), "--out",
                          str(tmp_path / "s.npz")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    z = np.load(tmp_path / "s.npz")
    val, test = open_split(sim_cache, "val"), open_split(sim_cache, "test")
    assert z["images"].shape == (len(val) + len(test), 3, 64, 64) and z["images"].dtype == np.float32
    assert list(z["task_id"]) == list(val.meta["task_id"].astype(str)) + list(test.meta["task_id"].astype(str))
    assert np.array_equal(z["images"][len(val):], np.asarray(test.images, np.float32)) and str(z["bands"]) == "grz"
    bad = subprocess.run([sys.executable, "-m", "dhs.models.export", "stamps", "--cache", str(tmp_path / "nothing"), "--out",
                          str(tmp_path / "t.npz")], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "export: FAILED" in bad.stderr and not (tmp_path / "t.npz").exists()
    export_stamps(sim_cache, tmp_path / "u.npz", ("test",))
    assert len(np.load(tmp_path / "u.npz")["task_id"]) == len(test)


def test_an_onnx_model_with_a_fixed_batch_of_one_is_fed_one_stamp_at_a_time(sim_cache, tmp_path):
    import warnings

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    (tmp_path / "finders").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Mean(), (torch.zeros(1, 3, 64, 64),), str(tmp_path / "finders" / "one.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"])   # no dynamic axes: batch fixed at 1
    pack("one", external_spec(model="finders/one.onnx"), tmp_path, tmp_path / "m" / "checkpoint_best.pt")
    split = open_split(sim_cache, "test")
    got = score_split(load_finder(tmp_path / "m", "cpu"), split, 16, False)
    assert np.allclose(got, np.asarray(split.images, np.float64).mean(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)


def test_outputs_that_are_not_one_real_valued_score_per_stamp_are_refused(tmp_path):
    """Several outputs, hard labels, a batch-dependent network: each would give wrong scores
    without an error; each is refused at import with what to export instead."""
    import warnings

    class TwoOut(torch.nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return (m > 0).long(), torch.stack([m, -m], dim=1)

    class Label(torch.nn.Module):
        def forward(self, x):
            return (x.mean(dim=(1, 2, 3)) > 0).long()

    class BatchStat(torch.nn.Module):   # a BatchNorm left in training mode: each score depends on the batch
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return (m - m.mean()) / (m.std() + 1e-6)

    (tmp_path / "finders").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, net in (("two", TwoOut()), ("label", Label()), ("batch", BatchStat())):
            torch.onnx.export(net, (torch.rand(4, 3, 64, 64),), str(tmp_path / "finders" / f"{name}.onnx"), dynamo=False,
                              input_names=["x"], dynamic_axes={"x": {0: "n"}})
        torch.jit.save(torch.jit.trace(TwoOut(), torch.rand(2, 3, 64, 64)), str(tmp_path / "finders" / "two.pt"))
    for model, message in (("two.onnx", r"has 2 outputs"), ("two.pt", r"returns 2 outputs"),
                           ("label.onnx", r"scores are integers \(int64\), not real numbers"),
                           ("batch.onnx", r"depends on the batch \(a BatchNorm left in training mode\?\)")):
        with pytest.raises(ExternalError, match=message):
            pack("x", external_spec(model=f"finders/{model}"), tmp_path, tmp_path / "x.pt")
    labels = pd.DataFrame({"task_id": ["a", "b"], "score": [True, False]})
    labels.to_parquet(tmp_path / "finders" / "labels.parquet", index=False)
    with pytest.raises(ExternalError, match="holds bool values, not real-valued scores"):
        pack("t", external_spec(model="finders/labels.parquet"), tmp_path, tmp_path / "x.pt")
    pd.DataFrame({"task_id": [], "score": []}).to_csv(tmp_path / "finders" / "empty.csv", index=False)
    with pytest.raises(ExternalError, match="a score table without rows"):
        pack("t", external_spec(model="finders/empty.csv"), tmp_path, tmp_path / "x.pt")
    (tmp_path / "finders" / "adir.onnx").mkdir()
    with pytest.raises(ExternalError, match="is a directory"):
        pack("t", external_spec(model="finders/adir.onnx"), tmp_path, tmp_path / "x.pt")


def test_messages_name_the_right_stamp_and_setting(sim_cache, tmp_path):
    export_onnx(NaNOnBright(), torch.zeros(2, 3, 64, 64), tmp_path / "finders" / "nan.onnx")
    pack("nan", external_spec(model="finders/nan.onnx"), tmp_path, tmp_path / "m" / "checkpoint_best.pt")
    imgs = np.full((300, 3, 64, 64), 0.01, np.float32)
    imgs[280, 0, 30, 30] = 5.0
    with pytest.raises(ExternalError, match=r"for stamp\(s\) \['image 280'\]"):
        score_images(load_finder(tmp_path / "m", "cpu"), imgs, batch_size=256)
    if not torch.cuda.is_available():
        with pytest.raises(ExternalError, match=r"finders.external.nan.device is 'cuda' but torch sees no CUDA device"):
            pack("nan", external_spec(model="finders/nan.onnx", device="cuda"), tmp_path, tmp_path / "c.pt", device="cuda")
