"""Scoring throughput of an external finder against the same network scored natively.

    python benchmarks/bench_external.py [--models data/models] [--arch small_cnn] [--cache data/cache]
                                        [--split test] [--n 4096] [--batch 256]

The trained finder (or, on a fresh checkout without one, a small_cnn with fresh weights and the
repository's preprocessing) is exported to ONNX and TorchScript, packed as an external finder and
scored on the first ``--n`` stamps of a cached split (or of synthetic sky-like stamps when there
is no cache). Prints stamps/s of the native path (dhs.models.inference with the checkpoint), of
onnxruntime and of TorchScript, their ratios to the native path measured in the same run, and the
largest logit difference from the native scores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def fresh_model(tmp: Path) -> Path:
    """A small_cnn checkpoint with fresh weights and the repository's preprocessing."""
    from dhs.models.checkpoint import save_checkpoint
    from dhs.models.loader import preprocess_from_params
    from dhs.models.registry import build_model
    from dhs.models.spec import ModelSpec
    import dataclasses
    import json
    import torch

    norm, _ = preprocess_from_params(yaml.safe_load((REPO / "params.yaml").read_text())["preprocess"])
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", 64, channels=norm.channels)
    d = tmp / "small_cnn"
    save_checkpoint(d / "checkpoint_best.pt", build_model(spec).eval(), None, 0, spec, "bench",
                    {"norm": json.dumps(dataclasses.asdict(norm))})
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="data/models")
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--cache", default="data/cache")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args(argv)

    import torch

    from dhs.models.export import export_model
    from dhs.models.external import load_external, pack
    from dhs.models.inference import load_finder, score_split
    from dhs.params import Params
    from dhs.imaging.cache import open_split

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        model_dir = Path(a.models) / a.arch
        source = "trained"
        if not (model_dir / "checkpoint_best.pt").exists():
            model_dir, source = fresh_model(tmp), "fresh weights"
        if (Path(a.cache) / a.split / "images.npy").exists():
            split = open_split(a.cache, a.split)
            n = min(a.n, len(split))
            split = replace(split, images=split.images[:n], meta=split.meta.iloc[:n].reset_index(drop=True))
            stamps = f"{n} stamps of {a.cache}/{a.split}"
        else:
            from dhs.models.external import probe_batch
            import pandas as pd

            n = a.n
            imgs = np.concatenate([probe_batch({"stamp_size": 64}, 256, seed=s) for s in range(-(-n // 256))])[:n]
            meta = pd.DataFrame({"task_id": [f"s{i}" for i in range(n)], "is_control": 0})
            from dhs.imaging.cache import CachedSplit

            split = CachedSplit("bench", imgs, meta)
            stamps = f"{n} synthetic stamps"
        native = load_finder(model_dir, "cpu", arch=a.arch)
        print(f"bench_external: {a.arch} ({source}), {stamps}, batch {a.batch}, torch threads {torch.get_num_threads()}")
        t0 = time.perf_counter()
        ref = score_split(native, split, a.batch, False)
        t_native = time.perf_counter() - t0
        print(f"  native (checkpoint)  {n / t_native:9.1f} stamps/s")
        exported = export_model(model_dir, a.arch, tmp / "finders", repo_root=tmp)
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        for fmt, path in exported.items():
            spec = yaml.safe_load(path.with_name(path.name + ".yaml").read_text())
            raw["finders"] = {"measure": [a.arch, "ext"], "external": {"ext": {**spec, "batch_size": a.batch}}}
            pack("ext", Params(raw)["finders"]["external"]["ext"], tmp, tmp / fmt / "checkpoint_best.pt")
            ext = load_external(tmp / fmt / "checkpoint_best.pt", "cpu")
            t0 = time.perf_counter()
            got = ext.score_split(split, a.batch, False)
            dt = time.perf_counter() - t0
            print(f"  {fmt:<20} {n / dt:9.1f} stamps/s   ratio to native {t_native / dt:5.2f}x   "
                  f"max |logit - native| {np.max(np.abs(got - ref)):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
