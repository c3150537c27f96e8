"""Finders made elsewhere, measured like a finder trained here.

A finder declared under ``finders.external`` in params.yaml (checked by dhs.params.schema) is
one of:

- an ONNX model (run with onnxruntime, CUDA when asked for and present, else CPU),
- a TorchScript module (``torch.jit.save``),
- a score table (parquet or CSV: one row per stamp, an id column and a score column) for a
  finder that cannot be exported; it scores only the stamps it lists.

The input spec says what the model was trained to see, and this module gives it exactly that:

- ``bands``: its input channels in order, each one of g, r, z (the stamps are grz, nMgy);
- ``stamp_size``: the centred crop it takes (the stamps' centre pixel stays its centre);
- ``layout``: NCHW (torch) or NHWC (Keras/JAX); ``dtype`` float32 / float16 / float64;
- ``preprocess.kind``: ``none`` (nMgy as they are), ``asinh`` (asinh(x / b) with one softening
  b per band, nMgy), ``standardise`` (per stamp and band: minus its mean, over its standard
  deviation) or ``project`` (this pipeline's normalisation, ``dhs.models.loader.normalize``, with
  the keys of the ``preprocess`` section given under ``preprocess.project``: what an exported
  finder of this pipeline needs; ``input: raw_and_residual`` makes 6 channels, raw grz then
  residual grz);
- ``output.kind``: ``logit`` or ``probability`` (turned into a logit, log p - log(1 - p), in
  float64; p is clipped to [1e-15, 1 - 1e-15], so a saturated probability stays a tie);
  ``output.index``: the lens column of an (N, K) output.

The import stage (``external@{name}``) checks the model against its spec before anything is
scored (one input, its declared shape and the spec's; the output's shape; a probe batch scored
twice gives finite, identical values) and packs model file and spec into
``data/models/{name}/checkpoint_best.pt``: the file every later stage depends on and records the
SHA-256 of, as for a trained finder. ``load_external`` turns it back into an ``ExternalFinder``,
which scores cached splits and nMgy arrays like ``dhs.models.inference`` does for a trained one.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dhs import atomic
from dhs.models.checkpoint import TrainingError, load_checkpoint, resolve_device
from dhs.models.loader import NormConfig, iterate_batches, normalize
from dhs.params.schema import BANDS, PREPROCESS
from dhs.imaging import geometry

EXTERNAL_ARCH = "external"          # the arch a packed external finder's spec names
MAX_MODEL_BYTES = 4 << 30           # a model file or score table larger than this is refused before it is read
PROB_EPS = 1e-15
DTYPES = {"float32": np.float32, "float16": np.float16, "float64": np.float64}


class ExternalError(TrainingError):
    """An external finder that does not match its spec, cannot run, or returns unusable scores."""


# --------------------------------------------------------------------------- the spec


def channels(spec: Mapping[str, Any]) -> int:
    """Input channels the spec describes: one per band, twice that for the project's raw_and_residual."""
    pre = spec["preprocess"]
    views = 2 if pre["kind"] == "project" and pre["project"]["input"] == "raw_and_residual" else 1
    return len(spec["bands"]) * views


def input_shape(spec: Mapping[str, Any], n: int) -> tuple[int, ...]:
    s, c = spec["stamp_size"], channels(spec)
    return (n, c, s, s) if spec["layout"] == "NCHW" else (n, s, s, c)


def project_norm(spec: Mapping[str, Any]) -> NormConfig | None:
    """The project's normalisation of a ``preprocess.kind: project`` spec (None for the others)."""
    pre = spec["preprocess"]
    if pre["kind"] != "project":
        return None
    v = dict(PREPROCESS.check(pre["project"], "preprocess.project", "spec"))
    v.pop("augment")
    return NormConfig.from_params(v)


def describe(spec: Mapping[str, Any]) -> str:
    """The spec in one line, for messages."""
    pre = spec["preprocess"]["kind"]
    return (f"{spec['layout']} {spec['dtype']} input of shape {input_shape(spec, 'N')} (bands {''.join(spec['bands'])}, "
            f"preprocess {pre}), output {spec['output']['kind']} column {spec['output']['index']}")


def centre_crop(x: np.ndarray, size: int, what: str = "the stamps") -> np.ndarray:
    out = geometry.centre_crop(x, size)
    if out is None:
        s = x.shape[-1]
        raise ExternalError(f"{what} are {s}x{s} px and the finder takes {size}x{size}: a centred crop needs a size smaller "
                            f"by an even number of pixels; set its stamp_size accordingly")
    return out


def preprocess(images_nmgy: np.ndarray, spec: Mapping[str, Any], norm: NormConfig | None = None,
               stats: np.ndarray | None = None) -> np.ndarray:
    """(B, 3, S, S) grz nMgy -> the model's input array (layout and dtype of the spec).
    ``stats``: the cache's precomputed annulus statistics of these rows (project kind, uncropped)."""
    pre = spec["preprocess"]
    x = centre_crop(np.asarray(images_nmgy, dtype=np.float32), spec["stamp_size"])
    if pre["kind"] == "project":
        norm = norm or project_norm(spec)
        t = torch.from_numpy(np.ascontiguousarray(x))
        st = None if stats is None or x.shape[-1] != images_nmgy.shape[-1] else torch.from_numpy(stats)
        x = normalize(t, norm, st).numpy()
    else:
        x = x[:, [BANDS.index(b) for b in spec["bands"]]].astype(np.float64)
        if pre["kind"] == "asinh":
            soft = np.asarray(pre["softening_nmgy"], np.float64)[None, :, None, None]
            x = np.arcsinh(x / soft)
        elif pre["kind"] == "standardise":
            mean = x.mean(axis=(2, 3), keepdims=True)
            sd = x.std(axis=(2, 3), keepdims=True)
            x = (x - mean) / np.maximum(sd, 1e-12)
    if spec["layout"] == "NHWC":
        x = np.transpose(x, (0, 2, 3, 1))
    return np.ascontiguousarray(x, dtype=DTYPES[spec["dtype"]])


def to_logits(out: np.ndarray, spec: Mapping[str, Any], n: int, ids=None) -> np.ndarray:
    """The model's raw output for ``n`` stamps -> float64 logits; an output of another shape, or a
    non-finite value or a probability outside [0, 1], is an ``ExternalError`` naming the stamp."""
    out = np.asarray(out)
    if out.dtype.kind != "f":
        what = {"i": "integers", "u": "integers", "b": "booleans", "O": "Python objects (e.g. a list of dicts)"}.get(out.dtype.kind,
                                                                                                              str(out.dtype))
        raise ExternalError(f"the finder's scores are {what} ({out.dtype}), not real numbers: a class label or a map is not a "
                            f"score; give the model's logit or probability output (a floating-point tensor)")
    k = spec["output"]["index"]
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        if k != 0:
            raise ExternalError(f"the model returns one value per stamp (shape {out.shape}) but its spec says output.index {k}; "
                                f"set output.index: 0")
        col = out.reshape(-1)
    elif out.ndim == 2:
        if k >= out.shape[1]:
            raise ExternalError(f"the model returns {out.shape[1]} columns (shape {out.shape}) but its spec says output.index "
                                f"{k}; set output.index below {out.shape[1]}")
        col = out[:, k]
    else:
        raise ExternalError(f"the model returns an output of shape {out.shape}; expected (N,), (N, 1) or (N, K)")
    if len(col) != n:
        raise ExternalError(f"the model returned {len(col)} values for a batch of {n} stamps (output shape {out.shape})")
    v = col.astype(np.float64)
    name = lambda bad: [ids[i] for i in np.flatnonzero(bad)[:5]] if ids is not None else np.flatnonzero(bad)[:5].tolist()  # noqa: E731
    bad = ~np.isfinite(v)
    if bad.any():
        raise ExternalError(f"the model returned {int(bad.sum())} non-finite value(s) (NaN or inf) for stamp(s) {name(bad)}")
    if spec["output"]["kind"] == "probability":
        bad = (v < 0) | (v > 1)
        if bad.any():
            raise ExternalError(f"output.kind is probability but the model returned values outside [0, 1] "
                                f"(e.g. {v[bad][:3].tolist()}) for stamp(s) {name(bad)}; if it returns logits set output.kind: logit")
        p = np.clip(v, PROB_EPS, 1 - PROB_EPS)
        v = np.log(p) - np.log1p(-p)
    return v


# --------------------------------------------------------------------------- runners


class _Onnx:
    def __init__(self, data: bytes, device: torch.device, spec: Mapping[str, Any]):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.use_deterministic_compute = True
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(data, opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a broken file
            raise ExternalError(f"onnxruntime cannot load the model: {' '.join(str(exc).split())[:300]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ExternalError(f"the model takes {len(inputs)} inputs {[(i.name, i.shape) for i in inputs]}; an external finder "
                                f"takes one image batch ({describe(spec)})")
        if len(outputs) != 1:
            raise ExternalError(f"the model has {len(outputs)} outputs {[(o.name, o.type) for o in outputs]}; an external finder "
                                f"returns one score tensor: export the lens logit or probability output alone")
        self.input, self.output = inputs[0], outputs[0]
        want = input_shape(spec, "N")
        have = list(self.input.shape or [])
        # an input that declares no shape is checked by the probe batch instead
        dims_ok = not have or (len(have) == len(want) and all(not isinstance(h, int) or h == w for h, w in zip(have[1:], want[1:])))
        if not dims_ok:
            raise ExternalError(f"the model's input {self.input.name!r} has shape {have} but its spec describes {describe(spec)}; "
                                f"fix bands, stamp_size, layout or preprocess in the spec, or export the model for that input")
        # a model exported with a fixed batch size (often 1) is fed batches of exactly that size
        self.fixed_batch = have[0] if have and isinstance(have[0], int) and have[0] > 0 else None
        onnx_type = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)"}[spec["dtype"]]
        if self.input.type != onnx_type:
            raise ExternalError(f"the model's input {self.input.name!r} is {self.input.type} but its spec says dtype "
                                f"{spec['dtype']} ({onnx_type}); set dtype to match")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        k = self.fixed_batch
        if k is None or len(x) == k:
            return self.session.run([self.output.name], {self.input.name: x})[0]
        outs = []
        for s in range(0, len(x), k):   # the last chunk padded with copies of its first row, then trimmed
            chunk = x[s : s + k]
            pad = np.concatenate([chunk, np.repeat(chunk[:1], k - len(chunk), axis=0)]) if len(chunk) < k else chunk
            o = self.session.run([self.output.name], {self.input.name: pad})[0]
            if np.ndim(o) == 0:
                raise ExternalError(f"the model returns an output of shape (); expected (N,), (N, 1) or (N, K)")
            outs.append(o[: len(chunk)])
        return np.concatenate(outs)


class _TorchScript:
    def __init__(self, data: bytes, device: torch.device, spec: Mapping[str, Any]):
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)   # TorchScript's deprecation notice
                self.module = torch.jit.load(io.BytesIO(data), map_location=device).eval()
        except Exception as exc:  # noqa: BLE001 - torch.jit raises RuntimeError and others for a non-TorchScript file
            raise ExternalError(f"torch.jit.load cannot load the model: {' '.join(str(exc).split())[:300]}") from None
        self.device = device

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.module(torch.from_numpy(x).to(self.device))
        if isinstance(out, (tuple, list)):
            if len(out) != 1:
                raise ExternalError(f"the module returns {len(out)} outputs; an external finder returns one score tensor: "
                                    f"script or trace a wrapper that returns the lens logit or probability alone")
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ExternalError(f"the module returns a {type(out).__name__}, not a tensor of scores")
        out = out.detach().to("cpu")
        return out.to(torch.float64).numpy() if out.is_floating_point() else out.numpy()


RUNNERS = {"onnx": _Onnx, "torchscript": _TorchScript}


# --------------------------------------------------------------------------- the finder


@dataclass
class ExternalFinder:
    """An external finder restored from its packed file; scores like ``dhs.models.inference``."""

    name: str
    spec: dict                      # the checked finders.external entry
    format: str
    model_sha256: str
    checkpoint: Path
    device: torch.device
    runner: Any = None              # a callable on the model's input array (model formats)
    table: pd.Series | None = None  # logits by stamp id (score tables)
    step: int = 0
    norm: NormConfig | None = field(default=None)   # the project's normalisation (preprocess kind project)

    @property
    def stamp_size(self) -> int:
        return int(self.spec["stamp_size"])

    @property
    def preprocess_label(self) -> str:
        return f"external:{self.spec['preprocess']['kind']}" + (f"/{self.norm.mode}" if self.norm else "")

    def run(self, images_nmgy: np.ndarray, ids=None, stats: np.ndarray | None = None) -> np.ndarray:
        """float64 logits of (B, 3, S, S) nMgy stamps."""
        if self.runner is None:
            raise ExternalError(f"finder {self.name} is a score table: it scores only the stamps it lists, not new images "
                                f"(probes, cutouts); declare its model file to score those")
        x = preprocess(images_nmgy, self.spec, self.norm, stats)
        try:
            out = self.runner(x)
        except ExternalError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model's own runtime error, reported with the spec it was fed
            raise ExternalError(f"finder {self.name} failed on an input of shape {x.shape} {x.dtype} ({describe(self.spec)}): "
                                f"{' '.join(str(exc).split())[:300]}") from None
        return to_logits(out, self.spec, len(x), ids)

    def score_split(self, split, batch_size: int, progress: bool = True) -> np.ndarray:
        """float64 logits of every row of a cached split, in row order, each scored once."""
        from tqdm.auto import tqdm

        n = len(split)
        ids = split.meta["task_id"].astype(str).to_numpy()
        if self.table is not None:
            return lookup(self.table, ids, f"split {split.split}", self.name)
        logits = np.full(n, np.nan)
        same_size = int(split.images.shape[-1]) == self.stamp_size
        with tqdm(total=n, desc=f"infer {self.name} {split.split}", unit="stamp", disable=not progress) as bar:
            if self.norm is not None and same_size:
                # the project's normalisation with the cache's precomputed statistics, as a trained finder is scored
                for x, _, rows in iterate_batches(split, np.arange(n), batch_size, self.norm, "cpu"):
                    logits[rows] = self._run_input(x.numpy(), ids[rows])
                    bar.update(len(rows))
            else:
                for s in range(0, n, batch_size):
                    rows = np.arange(s, min(n, s + batch_size))
                    logits[rows] = self.run(np.asarray(split.images[rows], np.float32), ids[rows])
                    bar.update(len(rows))
        return logits

    def _run_input(self, x: np.ndarray, ids) -> np.ndarray:
        """The model on an already normalised (B, C, S, S) batch (project kind)."""
        if self.spec["layout"] == "NHWC":
            x = np.transpose(x, (0, 2, 3, 1))
        x = np.ascontiguousarray(x, dtype=DTYPES[self.spec["dtype"]])
        try:
            out = self.runner(x)
        except Exception as exc:  # noqa: BLE001
            raise ExternalError(f"finder {self.name} failed on an input of shape {x.shape} {x.dtype} ({describe(self.spec)}): "
                                f"{' '.join(str(exc).split())[:300]}") from None
        return to_logits(out, self.spec, len(x), ids)

    def score_images(self, images_nmgy: np.ndarray, meta: pd.DataFrame | None = None, batch_size: int = 256) -> np.ndarray:
        images_nmgy = np.asarray(images_nmgy)
        if images_nmgy.ndim != 4 or images_nmgy.shape[1] != 3:
            raise ExternalError(f"expected (N, 3, S, S) grz images, got shape {images_nmgy.shape}")
        ids = (meta["task_id"].astype(str).tolist() if meta is not None and "task_id" in meta
               else [f"image {i}" for i in range(len(images_nmgy))])
        out = np.empty(len(images_nmgy))
        for s in range(0, len(images_nmgy), batch_size):
            out[s : s + batch_size] = self.run(images_nmgy[s : s + batch_size], None if ids is None else ids[s : s + batch_size])
        return out


def lookup(table: pd.Series, ids: np.ndarray, where: str, name: str) -> np.ndarray:
    """The table's logits for ``ids``; an id the table lacks is an ``ExternalError`` with the count."""
    idx = table.index.get_indexer(ids)
    missing = idx < 0
    if missing.any():
        raise ExternalError(f"score table of {name}: {int(missing.sum())} of the {len(ids)} stamps of {where} have no score "
                            f"(e.g. {ids[missing][:5].tolist()}); every stamp of the scored splits must be scored exactly once")
    return table.to_numpy(np.float64)[idx]


# --------------------------------------------------------------------------- score tables


def read_score_table(data: bytes, suffix: str, spec: Mapping[str, Any], what: str) -> pd.Series:
    """A score table's bytes -> logits (float64) indexed by stamp id (str); a missing column,
    a duplicate id, an empty or non-numeric or non-finite score is refused with the count."""
    buf = io.BytesIO(data)
    try:
        df = pd.read_parquet(buf) if suffix == ".parquet" else pd.read_csv(buf, dtype={spec["columns"]["id"]: str},
                                                                            keep_default_na=True)
    except Exception as exc:  # noqa: BLE001 - pyarrow / the csv parser
        raise ExternalError(f"{what}: not a readable {suffix[1:]} table ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    cid, cs = spec["columns"]["id"], spec["columns"]["score"]
    missing = [c for c in (cid, cs) if c not in df.columns]
    if missing:
        raise ExternalError(f"{what}: no column {missing} (columns {list(df.columns)[:12]}); set columns.id / columns.score in "
                            f"its spec")
    ids = df[cid]
    if ids.isna().any():
        raise ExternalError(f"{what}: {int(ids.isna().sum())} row(s) with no id in column {cid!r} (first at row "
                            f"{int(np.flatnonzero(ids.isna().to_numpy())[0])})")
    ids = ids.astype(str)
    dup = ids.duplicated(keep=False)
    if dup.any():
        raise ExternalError(f"{what}: {int(ids[dup].nunique())} id(s) appear more than once ({int(dup.sum())} rows, e.g. "
                            f"{ids[dup].unique()[:5].tolist()}); score every stamp exactly once")
    if pd.api.types.is_bool_dtype(df[cs]) or pd.api.types.is_integer_dtype(df[cs]):
        raise ExternalError(f"{what}: column {cs!r} holds {df[cs].dtype} values, not real-valued scores: hard labels give no "
                            f"ranking to set a threshold on; give the finder's logit or probability")
    score = pd.to_numeric(df[cs], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(score)
    if bad.any():
        raise ExternalError(f"{what}: {int(bad.sum())} row(s) whose {cs!r} is empty, not a number, NaN or inf (e.g. ids "
                            f"{ids[bad].head(5).tolist()}, first at row {int(np.flatnonzero(bad)[0])})")
    logits = to_logits(score, spec, len(score), ids.tolist())
    return pd.Series(logits, index=pd.Index(ids.to_numpy(), name="task_id"), name="logit")


def check_table_ids(table: pd.Series, cache_ids: Mapping[str, np.ndarray], scored: tuple[str, ...], name: str) -> dict:
    """Every stamp of the ``scored`` splits in the table; ids of no split refused with the count;
    ids of other splits (train) counted as ignored. Returns the accounting."""
    index = table.index
    counts, known = {}, np.zeros(len(index), bool)
    for split, ids in cache_ids.items():
        hit = index.isin(ids)
        known |= hit
        counts[split] = int(hit.sum())
        if split in scored and hit.sum() != len(ids):
            lack = ids[~pd.Index(ids).isin(index)]
            raise ExternalError(f"score table of {name}: {len(lack)} of the {len(ids)} stamps of split {split} have no score "
                                f"(e.g. {lack[:5].tolist()}); every stamp of the scored splits {list(scored)} must be scored")
    if not known.all():
        raise ExternalError(f"score table of {name}: {int((~known).sum())} of its {len(index)} ids are no stamp of the cache "
                            f"(e.g. {index[~known][:5].tolist()}); score the stamps `python -m dhs.models.export stamps` writes")
    return {"rows": len(index), "scored": {s: counts[s] for s in scored},
            "ignored": {s: c for s, c in counts.items() if s not in scored and c}}


# --------------------------------------------------------------------------- packing and loading


def _device(device: str, name: str) -> torch.device:
    try:
        return resolve_device(device)
    except TrainingError:
        raise ExternalError(f"finders.external.{name}.device is {device!r} but torch sees no CUDA device; set it to auto or "
                            f"cpu") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def probe_batch(spec: Mapping[str, Any], n: int = 4, seed: int = 0) -> np.ndarray:
    """A fixed batch of sky-like grz stamps (nMgy) with a bright centre, to check a model runs."""
    rng = np.random.default_rng(seed)
    s = max(spec["stamp_size"], 8)
    x = rng.normal(0.0, 0.01, (n, 3, s, s)).astype(np.float32)
    yy, xx = np.mgrid[:s, :s] - (s - 1) / 2
    x += (0.5 * np.exp(-(xx**2 + yy**2) / 8.0))[None, None].astype(np.float32)
    return x


def pack(name: str, spec: Mapping[str, Any], repo_root: str | Path, out_path: str | Path, device: str = "cpu") -> dict:
    """Check the external finder ``name`` against its spec and write its packed file
    (``checkpoint_best.pt``: model bytes or score table, spec, SHA-256). Returns the metrics."""
    root = Path(repo_root).resolve()
    model_path = (root / spec["model"]).resolve()
    if root not in model_path.parents:
        raise ExternalError(f"finders.external.{name}.model {spec['model']!r} resolves outside the repository ({model_path})")
    if model_path.is_dir():
        raise ExternalError(f"finders.external.{name}.model: {spec['model']} is a directory; give the model file itself")
    if not model_path.is_file():
        raise ExternalError(f"finders.external.{name}.model: {spec['model']} not found (a file in the repository; "
                            f"`dvc add` it or commit it)")
    size = model_path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ExternalError(f"{spec['model']}: {size / 2**30:.1f} GiB, above the {MAX_MODEL_BYTES >> 30} GiB an external "
                            f"finder may have")
    data = model_path.read_bytes()
    sha = _sha256(data)
    metrics: dict[str, Any] = {"name": name, "format": spec["format"], "model": spec["model"], "model_sha256": sha,
                               "model_bytes": size}
    if spec["format"] == "scores":
        if not data:
            raise ExternalError(f"{spec['model']}: an empty file, not a score table")
        table = read_score_table(data, table_suffix(spec["model"]), spec, spec["model"])
        if len(table) == 0:
            raise ExternalError(f"{spec['model']}: a score table without rows; score the stamps `python -m dhs.models.export "
                                f"stamps` writes")
        metrics.update({"rows": len(table), "stamp_size": None})
    else:
        dev = _device(device, name)
        runner = RUNNERS[spec["format"]](data, dev, spec)
        x = preprocess(probe_batch(spec), spec)
        try:
            first, second = runner(x), runner(x)
        except Exception as exc:  # noqa: BLE001 - the model's own error on the spec's input
            raise ExternalError(f"finder {name} does not run on the input its spec describes ({describe(spec)}; fed shape "
                                f"{x.shape} {x.dtype}): {' '.join(str(exc).split())[:300]}") from None
        a, b = to_logits(first, spec, len(x)), to_logits(second, spec, len(x))
        if not np.array_equal(a, b):
            raise ExternalError(f"finder {name} gives different scores for the same input on two calls (max difference "
                                f"{np.max(np.abs(a - b)):.3g}); a finder must be deterministic in inference (eval mode, no dropout)")
        try:
            alone = np.concatenate([to_logits(runner(x[i : i + 1]), spec, 1) for i in range(len(x))])
        except ExternalError as exc:
            raise ExternalError(f"finder {name} scores the probe stamps beside each other but not one alone ({exc}): its output "
                                f"depends on the batch (a BatchNorm left in training mode?); export it in eval mode") from None
        except Exception as exc:  # noqa: BLE001
            raise ExternalError(f"finder {name} does not run on a batch of one stamp ({describe(spec)}): "
                                f"{' '.join(str(exc).split())[:300]}") from None
        if np.max(np.abs(alone - a)) > 1e-3 * max(1.0, float(np.max(np.abs(a)))):
            raise ExternalError(f"finder {name} scores a stamp differently alone than beside others (max difference "
                                f"{np.max(np.abs(alone - a)):.3g}): its output depends on the batch (a BatchNorm left in "
                                f"training mode?); export it in eval mode")
        metrics.update({"input_shape": list(input_shape(spec, len(x))), "output_shape": list(np.asarray(first).shape),
                        "probe_logits": a.tolist(), "stamp_size": spec["stamp_size"]})
    record = {"name": name, "format": spec["format"], "model": spec["model"], "model_sha256": sha, "spec": dict(spec)}
    packed = {"model": {}, "spec": {"arch": EXTERNAL_ARCH, "stamp_size": spec["stamp_size"], "channels": channels(spec)
                                    if spec["format"] != "scores" else 3},
              "step": 0, "params_hash": _sha256(json.dumps(record, sort_keys=True, default=str).encode()),
              "external": json.dumps(record, sort_keys=True, default=str), "suffix": table_suffix(spec["model"]),
              "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)}
    with atomic.writing(out_path, fixed_tmp=True) as tmp:
        torch.save(packed, tmp)
    return metrics


def table_suffix(model: str) -> str:
    """How a score table is read: parquet for .parquet / .pq (as declared: a DVC cache link has no
    suffix of its own), else CSV."""
    return ".parquet" if Path(model).suffix.lower() in (".parquet", ".pq") else ".csv"


def is_external(ckpt: Mapping[str, Any]) -> bool:
    return isinstance(ckpt.get("spec"), dict) and ckpt["spec"].get("arch") == EXTERNAL_ARCH and "external" in ckpt


def load_external(path: str | Path, device: str = "auto", ckpt: Mapping[str, Any] | None = None) -> ExternalFinder:
    """The external finder packed at ``path`` (``checkpoint_best.pt`` of ``external@{name}``)."""
    path = Path(path)
    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    record = json.loads(ckpt["external"])
    spec = record["spec"]
    data = ckpt["payload"].numpy().tobytes()
    if _sha256(data) != record["model_sha256"]:
        raise ExternalError(f"{path}: its model bytes do not match the SHA-256 it records; rerun `dvc repro external@{record['name']}`")
    dev = _device(spec["device"] if spec["device"] != "auto" else device, record["name"])   # the spec's device wins
    finder = ExternalFinder(record["name"], spec, record["format"], record["model_sha256"], path, dev, norm=project_norm(spec))
    if record["format"] == "scores":
        finder.table = read_score_table(data, ckpt.get("suffix", ".parquet"), spec, spec["model"])
    else:
        finder.runner = RUNNERS[record["format"]](data, dev, spec)
    return finder
