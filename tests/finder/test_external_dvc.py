"""External finders end to end under DVC, in a fresh copy of the repository: small_cnn trained by
the pipeline, exported to ONNX with `python -m dhs.models.export model` and declared under
finders.external, scores every test stamp within 1e-5 of the native logits and gives the same
completeness at every operating point; a tiny network built here (NHWC, asinh-scaled r and g,
a softmax probability) goes through infer, completeness, selection, calibration, gates,
known_lenses and the report, and a score table of the same scores, written from the stamps
`python -m dhs.models.export stamps` gives a collaborator, gives the same completeness. The
model file's content is a DVC dependency: a new file reruns its import and what follows."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import tiny_pipeline_copy
from tests.finder.test_external import TinyNHWC, export_onnx


def headline(work, stage: str, name: str) -> dict:
    return json.loads((work / "metrics" / stage / f"{name}.headline.json").read_text())


def same_completeness(a: dict, b: dict, threshold_tol: float) -> None:
    ops = [k for k in a if k.startswith("fpr_")]
    assert ops and ops == [k for k in b if k.startswith("fpr_")]
    for k in ops:
        ta, tb = a[k].pop("threshold"), b[k].pop("threshold")
        assert abs(ta - tb) <= threshold_tol, (k, ta, tb)
        assert a[k] == b[k], k
    assert {k: v for k, v in a.items() if k != "auroc"} == {k: v for k, v in b.items() if k != "auroc"}
    assert abs(a["auroc"] - b["auroc"]) <= 1e-4


def train_tiny(work) -> torch.nn.Module:
    """The tiny foreign network, trained a few hundred steps on the cache's train split as its
    own authors would, on its own input convention (crop 48, r and g, asinh, NHWC)."""
    images = np.load(work / "data" / "cache" / "train" / "images.npy").astype(np.float32)
    meta = pd.read_parquet(work / "data" / "cache" / "train" / "meta.parquet", columns=["is_control"])
    y = torch.from_numpy((meta["is_control"].to_numpy() == 0).astype(np.float32))
    x = np.arcsinh(images[:, [1, 0], 8:56, 8:56] / np.array([0.05, 0.02], np.float32)[None, :, None, None]).transpose(0, 2, 3, 1)
    x = torch.from_numpy(np.ascontiguousarray(x))
    net = TinyNHWC()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        i = torch.randint(0, len(x), (32,), generator=g)
        p = net(x[i])[:, 1].clamp(1e-6, 1 - 1e-6)
        loss = torch.nn.functional.binary_cross_entropy(p, y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.mark.slow
def test_external_finders_through_the_whole_pipeline(tmp_path):
    work, env, p = tiny_pipeline_copy(tmp_path / "repo", 240)
    p["known_lenses"]["max_lenses"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    run = lambda *a: subprocess.run(a, cwd=work, env=env, capture_output=True, text=True)  # noqa: E731

    res = run("dvc", "repro", "infer@small_cnn")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    # the trained finder, exported as its users would share it
    res = run("python", "-m", "dhs.models.export", "model", "--arch", "small_cnn", "--out", "finders", "--format", "onnx")
    assert res.returncode == 0, res.stderr
    exported = yaml.safe_load((work / "finders" / "small_cnn.onnx.yaml").read_text())
    # a foreign network and, for a finder that cannot be exported, its scores on the stamps handed out
    net = train_tiny(work)
    export_onnx(net, torch.zeros(2, 48, 48, 2), work / "finders" / "tiny.onnx")
    res = run("python", "-m", "dhs.models.export", "stamps", "--out", "stamps.npz")
    assert res.returncode == 0, res.stderr
    z = np.load(work / "stamps.npz")
    import onnxruntime as ort

    # the collaborator applies the spec's convention (asinh in double precision, then float32) and
    # runs the network in batches of 256 per split, as the infer stage does
    sess = ort.InferenceSession(str(work / "finders" / "tiny.onnx"), providers=["CPUExecutionProvider"])
    prob = np.empty(len(z["task_id"]))
    for split in ("val", "test"):
        rows = np.flatnonzero(z["split"] == split)
        for b in range(0, len(rows), 256):
            r = rows[b : b + 256]
            x = np.arcsinh(z["images"][r][:, [1, 0], 8:56, 8:56].astype(np.float64) / np.array([0.05, 0.02])[None, :, None, None])
            prob[r] = sess.run(None, {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32)})[0][:, 1]
    pd.DataFrame({"task_id": z["task_id"], "score": prob}).to_csv(work / "finders" / "tiny_scores.csv", index=False)

    p["finders"] = {"measure": ["small_cnn", "small_cnn_onnx", "tiny", "tiny_table"], "external": {
        "small_cnn_onnx": exported,
        "tiny": {"model": "finders/tiny.onnx", "bands": ["r", "g"], "stamp_size": 48, "layout": "NHWC",
                 "preprocess": {"kind": "asinh", "softening_nmgy": [0.05, 0.02]}, "output": {"kind": "probability", "index": 1}},
        "tiny_table": {"model": "finders/tiny_scores.csv", "output": {"kind": "probability"}}}}
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    res = run("dvc", "repro")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]

    scores = {n: pd.read_parquet(work / "data" / "scores" / f"{n}.parquet").set_index("task_id") for n in p["finders"]["measure"]}
    test = scores["small_cnn"]["split"] == "test"
    assert test.sum() > 0 and len(scores["small_cnn_onnx"]) == len(scores["small_cnn"])
    diff = (scores["small_cnn_onnx"]["logit"] - scores["small_cnn"]["logit"]).abs()
    assert diff.max() < 1e-5, diff.max()
    same_completeness(headline(work, "completeness", "small_cnn"), headline(work, "completeness", "small_cnn_onnx"), 1e-5)
    # a score table of the tiny network's own scores: the same logits, the same completeness
    gap = np.abs(scores["tiny"]["logit"].to_numpy() - scores["tiny_table"]["logit"].loc[scores["tiny"].index].to_numpy())
    assert gap.max() < 1e-6, gap.max()
    same_completeness(headline(work, "completeness", "tiny"), headline(work, "completeness", "tiny_table"), 1e-6)
    assert headline(work, "completeness", "tiny")["auroc"] > 0.6   # it learned something: calibration could fit it

    infer = json.loads((work / "metrics" / "infer" / "tiny_table.json").read_text())
    assert infer["external"]["format"] == "scores"
    assert infer["score_table"]["scored"] == {s: v["scored"] for s, v in infer["by_split"].items()}
    assert infer["score_table"]["rows"] == sum(infer["score_table"]["scored"].values())
    gates = json.loads((work / "metrics" / "gates" / "tiny_table.json").read_text())
    assert all(gates["gates"][g]["status"] == "SKIP" for g in ("core_masked", "ring_probe", "annulus_shuffle", "shift"))
    assert gates["gates"]["split_integrity"]["status"] == "PASS"
    assert json.loads((work / "metrics" / "gates" / "tiny.json").read_text())["gates"]["shift"]["status"] in ("PASS", "FAIL")
    assert json.loads((work / "metrics" / "known_lenses" / "tiny_table.json").read_text())["status"] == "not_scorable"
    sel = json.loads((work / "data" / "selection" / "tiny.json").read_text())
    assert sel["finder"]["arch"] == "tiny"
    html = (work / "plots" / "report" / "index.html").read_text()
    assert all(n in html for n in ("small_cnn_onnx", "tiny_table"))

    status = run("dvc", "status").stdout   # nothing to rerun (the cutouts stage always runs: it retries the service)
    assert [ln for ln in status.splitlines() if ln.strip() and not ln.startswith("\t")] == ["cutouts:"], status
    # `dvc exp run -S` switches finders: the external ones alone, nothing trained
    res = run("dvc", "exp", "run", "-n", "external-only", "-S", "finders.measure=[tiny,tiny_table]", "-S", "train.archs=[]")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Running stage 'train" not in res.stdout and "Running stage 'infer@tiny'" not in res.stdout, res.stdout[-3000:]
    assert "finders: tiny, tiny_table" in (work / "plots" / "report" / "index.html").read_text()
    assert json.loads((work / "metrics" / "sensitivity.json").read_text())["model"].keys() == {"tiny", "tiny_table"}

    # the model file is a dependency by content: new weights rerun its import and what follows
    with torch.no_grad():
        net.head.bias += 1.0
    export_onnx(net, torch.zeros(2, 48, 48, 2), work / "finders" / "tiny.onnx")
    status = run("dvc", "status", "external@tiny").stdout
    assert "finders/tiny.onnx" in status and "modified" in status, status
