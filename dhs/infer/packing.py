"""The body of stage ``external@{name}``: a finder made elsewhere (finders.external), checked
against its spec and packed for the stages that score with it (dhs.models.external)."""

from __future__ import annotations

import time
from pathlib import Path

from dhs import atomic
from dhs.params import Params, ParamsError, as_params


def run_external(arch: str, params: str | Params = "params.yaml", models_dir: str = "data/models",
                 metrics_dir: str = "metrics/external") -> dict:
    """Stage ``external@{name}``: check the external finder ``name`` (finders.external) against its
    spec and pack it into ``data/models/{name}/checkpoint_best.pt`` (dhs.models.external); writes
    ``metrics/external/{name}.json`` (format, SHA-256, the shapes checked, the probe logits)."""
    from dhs.models.external import pack

    p = as_params(params).require("finders")
    spec = p["finders"]["external"].get(arch)
    if spec is None:
        raise ParamsError(f"{p.source}: finders.external has no finder {arch!r}; declared: {sorted(p['finders']['external'])}")
    t0 = time.perf_counter()
    metrics = pack(arch, spec, Path(p.source).resolve().parent, Path(models_dir) / arch / "checkpoint_best.pt",
                   "cpu" if spec["device"] == "auto" else spec["device"])
    atomic.write_json(Path(metrics_dir) / f"{arch}.json", metrics)
    shapes = f"input {metrics['input_shape']} -> output {metrics['output_shape']}" if "input_shape" in metrics else \
        f"a score table of {metrics['rows']} rows"
    print(f"external {arch}: {spec['format']} {spec['model']} (sha256 {metrics['model_sha256'][:12]}), {shapes}; packed into "
          f"{Path(models_dir) / arch / 'checkpoint_best.pt'} ({time.perf_counter() - t0:.1f} s)")
    return metrics
