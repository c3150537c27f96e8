"""The score table: one row per scored stamp, the input of completeness, calibration and gates.

``data/scores/{arch}.parquet`` holds, for every val and test stamp of the cache, exactly once:

- ``task_id`` (str, unique), ``split`` (val | test), ``label`` (int8: 1 = injection, 0 = control),
- ``logit`` (float64, the model's raw output) and ``score`` (float64, sigmoid(logit)),
- every scalar column of the stamp metadata (theta_e_arcsec, psf_fwhm_used_r, psfsize_r,
  psfdepth_r, src_r_mag, arc_snr, region_id, bad_pixel_frac, wise_brightmask_frac, cutout_ok, ...),
- derived: ``psf_r_arcsec`` (``dhs.evaluation.seeing``: psf_fwhm_used_r where finite and > 0,
  else psfsize_r) and ``theta_e_over_psf`` (theta_e_arcsec / psf_r_arcsec; NaN for controls and
  unknown PSF).

``sigmoid`` is the one map from logits to scores in the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pandas as pd

from dhs.errors import StageError
from dhs.evaluation.seeing import psf_r_arcsec
from dhs.params.schema import SCORE_SPLITS

REQUIRED_COLUMNS = ("task_id", "split", "label", "logit", "score", "region_id")


class ScoresError(StageError, ValueError):
    pass


def sigmoid(logits: Sequence[float] | np.ndarray) -> np.ndarray:
    """float64 scores 1 / (1 + exp(-logit))."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def score_table(split: str, meta: pd.DataFrame, logits: np.ndarray) -> pd.DataFrame:
    """Scores of one split joined with its stamp metadata (row i of ``meta`` has logit i; the
    cache's own bookkeeping columns left out: ``CachedSplit.stamp_meta``)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (len(meta),):
        raise ScoresError(f"split {split}: {len(logits)} logits for {len(meta)} metadata rows")
    bad = ~np.isfinite(logits)
    if bad.any():
        ids = meta["task_id"].to_numpy()[bad][:5].tolist()
        raise ScoresError(f"split {split}: {int(bad.sum())} non-finite logit(s), e.g. task_id {ids}; the model or its input is broken")
    out = meta.reset_index(drop=True)
    out.insert(0, "split", split)
    out.insert(1, "label", (out["is_control"].to_numpy() == 0).astype(np.int8))
    out.insert(2, "logit", logits)
    out.insert(3, "score", sigmoid(logits))
    out["psf_r_arcsec"] = psf_r_arcsec(out)[0]
    theta = pd.to_numeric(out.get("theta_e_arcsec"), errors="coerce").to_numpy(np.float64) if "theta_e_arcsec" in out else np.full(len(out), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["theta_e_over_psf"] = np.where(out["label"].to_numpy() == 1, theta / out["psf_r_arcsec"].to_numpy(), np.nan)
    return out


def check_scores(df: pd.DataFrame, need: Sequence[str] = (), source: str = "scores") -> pd.DataFrame:
    """Refuse a score table that would corrupt counts: missing columns, duplicate task_ids,
    labels other than 0/1, non-finite scores. ``need`` adds columns the caller bins on."""
    missing = [c for c in (*REQUIRED_COLUMNS, *need) if c not in df.columns]
    if missing:
        raise ScoresError(f"{source}: missing column(s) {missing}; have {sorted(df.columns)[:20]}... "
                          f"(rerun `dvc repro infer` or drop the binning on them from params)")
    dup = df["task_id"].duplicated(keep=False)
    if dup.any():
        ids = df.loc[dup, "task_id"].unique()[:5].tolist()
        raise ScoresError(f"{source}: {int(dup.sum())} rows share a task_id (e.g. {ids}); each stamp must be scored once "
                          f"(a padding sampler duplicates rows: docs/conventions.md, evaluation rules)")
    lab = pd.to_numeric(df["label"], errors="coerce")
    if not lab.isin([0, 1]).all():
        raise ScoresError(f"{source}: label must be 0 (control) or 1 (injection); found {sorted(map(str, df.loc[~lab.isin([0, 1]), 'label'].unique()[:5]))}")
    sc = pd.to_numeric(df["score"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(sc).all():
        raise ScoresError(f"{source}: {int((~np.isfinite(sc)).sum())} non-finite score(s)")
    unknown = set(df["split"].unique()) - set(SCORE_SPLITS)
    if unknown:
        raise ScoresError(f"{source}: unknown split value(s) {sorted(map(str, unknown))}; expected {list(SCORE_SPLITS)}")
    return df


def parquet_problem(path) -> str | None:
    """None when ``path`` is a readable parquet file (its footer and schema parse), else why not,
    in words: so a truncated or foreign file is refused by name before a reader (Spark) fails deep inside."""
    import pyarrow.parquet as pq

    try:
        pq.read_schema(path)
    except FileNotFoundError:
        return "not found"
    except (OSError, ValueError, pa.ArrowException) as exc:
        return f"not a readable parquet file ({' '.join(str(exc).split())[:200]})"
    return None


def read_scores(path, need: Sequence[str] = ()) -> pd.DataFrame:
    why = parquet_problem(path)
    if why == "not found":
        raise ScoresError(f"{path} not found; run `dvc repro infer` first")
    if why:
        raise ScoresError(f"{path}: {why}; rebuild it with `dvc repro -f infer@<finder>`")
    df = pd.read_parquet(path)
    return check_scores(df, need, source=str(path))
