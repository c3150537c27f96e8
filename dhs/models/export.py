"""Sharing finders and stamps with the world outside the pipeline.

``python -m dhs.models.export model --arch small_cnn --out finders/small_cnn``
    writes a finder trained here as ONNX (``small_cnn.onnx``) and TorchScript (``small_cnn.pt``),
    each beside the spec that measures it again as an external finder (``small_cnn.onnx.yaml``,
    ``small_cnn.pt.yaml``: paste it under ``finders.external.<name>`` in params.yaml). The network
    takes the normalised stamp; the spec's ``preprocess: {kind: project, project: ...}`` carries
    the normalisation from the checkpoint, so the exported finder sees what training showed it.
    Image-only finders export; a hybrid (observing-condition inputs) or colour-conditioned one
    takes more than one input and is refused with the reason. A theta_E head's second output is
    left out (the export returns the lens logit, (N, 1)).

``python -m dhs.models.export stamps --out stamps.npz [--splits val test]``
    writes the stamps a collaborator must score for a score-table finder: ``task_id`` and
    ``split`` (strings), ``images`` (N, 3, S, S) float32 grz in nMgy, and the band order and
    pixel scale; they return a CSV or parquet with columns ``task_id, score``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

from dhs import atomic
from dhs.errors import StageError
from dhs.params.schema import SCORE_SPLITS

PIXEL_SCALE_ARCSEC = 0.262   # DR10 (the cache's stamps)
ONNX_OPSET = 17


class ExportError(StageError, ValueError):
    pass


def _image_only(tm) -> None:
    if tm.spec.metadata or tm.spec.colour:
        what = "observing-condition metadata" if tm.spec.metadata else "host colours"
        raise ExportError(f"{tm.checkpoint}: {tm.spec.arch} takes {what} as a second input; an external finder takes one "
                          f"image batch, so only image-only finders export")


def spec_for(tm, model_rel: str, fmt: str) -> dict:
    """The finders.external entry that measures the exported file as this pipeline scores ``tm``."""
    import dataclasses

    return {"model": model_rel, "format": fmt, "bands": ["g", "r", "z"], "stamp_size": tm.spec.stamp_size, "layout": "NCHW",
            "dtype": "float32", "preprocess": {"kind": "project", "project": dataclasses.asdict(tm.norm)},
            "output": {"kind": "logit", "index": 0}}


def export_model(model_dir: str | Path, arch: str, out_dir: str | Path, formats=("onnx", "torchscript"),
                 repo_root: str | Path = ".") -> dict[str, Path]:
    """Write ``arch``'s best checkpoint in each of ``formats`` with its spec; the paths written."""
    import torch
    import yaml

    from dhs.models.checkpoint import load_trained
    from dhs.models.heads import split_outputs

    tm = load_trained(model_dir, "cpu", arch=arch)
    _image_only(tm)

    class Logit(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return split_outputs(self.net(x).float())[0].reshape(-1, 1)

    net = Logit(tm.model.to(memory_format=torch.contiguous_format)).eval()
    example = torch.zeros(2, tm.spec.channels, tm.spec.stamp_size, tm.spec.stamp_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = Path(repo_root).resolve()
    written = {}
    for fmt in formats:
        path = out_dir / f"{arch}.{'onnx' if fmt == 'onnx' else 'pt'}"
        with atomic.writing(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the legacy exporter's deprecation notices
            if fmt == "onnx":
                torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=ONNX_OPSET, input_names=["image"],
                                  output_names=["logit"], dynamic_axes={"image": {0: "n"}, "logit": {0: "n"}})
            elif fmt == "torchscript":
                torch.jit.save(torch.jit.trace(net, example), str(tmp))
            else:
                raise ExportError(f"unknown format {fmt!r}; one of onnx, torchscript")
        try:
            rel = path.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = path.as_posix()   # outside the repository: move it in before declaring it
        atomic.write_text(path.with_name(path.name + ".yaml"),
                          "# paste under finders.external.<name> in params.yaml (docs/external-finders.md)\n"
                          + yaml.safe_dump(spec_for(tm, rel, fmt), sort_keys=False))
        written[fmt] = path
    return written


def export_stamps(cache_dir: str | Path, out: str | Path, splits=SCORE_SPLITS) -> dict:
    """The stamps of ``splits`` with their ids, as one .npz; the counts written."""
    from dhs.imaging.cache import open_split

    ids, names, images = [], [], []
    for s in splits:
        sp = open_split(cache_dir, s)
        ids.append(sp.meta["task_id"].astype(str).to_numpy())
        names.append(np.full(len(sp), s))
        images.append(np.asarray(sp.images, dtype=np.float32))
    with atomic.writing(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, task_id=np.concatenate(ids).astype(str), split=np.concatenate(names).astype(str),
                     images=np.concatenate(images), bands=np.array("grz"), unit=np.array("nanomaggies"),
                     pixel_scale_arcsec=np.array(PIXEL_SCALE_ARCSEC))
    return {"stamps": int(sum(len(i) for i in ids)), "by_split": {s: len(i) for s, i in zip(splits, ids)}, "path": str(out)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dhs.models.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("model", help="a trained finder as ONNX and TorchScript, with its spec")
    m.add_argument("--arch", required=True)
    m.add_argument("--models", default="data/models")
    m.add_argument("--out", required=True)
    m.add_argument("--format", nargs="+", default=["onnx", "torchscript"], choices=["onnx", "torchscript"])
    s = sub.add_parser("stamps", help="the stamps a score-table finder must score (.npz)")
    s.add_argument("--cache", default="data/cache")
    s.add_argument("--out", required=True)
    s.add_argument("--splits", nargs="+", default=list(SCORE_SPLITS), choices=["train", "val", "test"])
    a = ap.parse_args(argv)
    from dhs.models.checkpoint import TrainingError
    from dhs.imaging.cache import CacheError

    try:
        if a.what == "model":
            for fmt, path in export_model(Path(a.models) / a.arch, a.arch, a.out, tuple(a.format)).items():
                print(f"export: {a.arch} as {fmt} -> {path} (spec {path}.yaml)")
        else:
            print(f"export: {json.dumps(export_stamps(a.cache, a.out, tuple(a.splits)))}")
    except (ExportError, TrainingError, CacheError, FileNotFoundError) as exc:
        print(f"export: FAILED: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
