"""Metadata-only baselines on the cached stamp metadata (no pixels).

Two scalar models, both fitted on the train split and scored on val and test:

1. **Leak detector** (docs/conventions.md, shortcuts). A classifier that sees only observing-condition and
   quality columns (PSF, depth, extinction, mask fractions) and predicts the injection label
   (1 = injection, 0 = control). Injected and control stamps must differ only by the arc, so
   its test AUC should be about 0.5; a clearly higher AUC means the two populations were drawn
   from different conditions and a CNN can score the conditions instead of the arc. Injection
   columns (theta_E, source, lens, shear, arc SNR, ...) are refused by name: controls carry 0 in
   them, so they would give the label away.

2. **The seed's scalar baseline** (``phase5_baseline_scalar_model.py``). On injections only,
   predict the Phase 4d proxy label ("resolvability", not a detector completeness)::

       recovered = arc_snr >= proxy_snr_min  AND  theta_e_arcsec / psf_r >= proxy_theta_psf_min

   with ``psf_r`` = ``psf_fwhm_used_r``, falling back to ``psfsize_r`` where it is null, NaN
   or <= 0 (``dhs.evaluation.seeing``; docs/conventions.md, PSF).
   The resolved value is offered to the model as the derived column ``psf_r_arcsec``. It tells
   how much of the proxy is predictable from injection parameters alone.

AUC intervals: percentile bootstrap of the test rows (``bootstrap_unit: row``, the default) or
of the test regions (``region``). For the leak detector the question is "is the AUC above
chance?", and under that null the labels are independent of the conditions, so rows are the
right unit even though stamps of one region share conditions. A region bootstrap with a handful
of test regions (12 in the default run) gives intervals that are far too narrow (on 5 regions it
excluded 0.5 on a leak-free simulation where the row interval did not); with fewer than
``MIN_BOOTSTRAP_REGIONS`` test regions it falls back to rows, and the metrics say so.

Row accounting: every row of every split is either used or rejected; a row is rejected when any
of its feature (or label-defining) columns is null, NaN or infinite, counted per column (a row
bad in two columns counts in both, once in ``rejected``). The proxy task also excludes controls,
counted as ``controls_excluded``. Nothing is dropped silently.

Deterministic given ``seed``: the models, the permutation importances and the bootstrap all draw
from it, and the fits run on ``n_threads`` threads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dhs.errors import StageError
from dhs.evaluation.seeing import psf_r_with_fallback
from dhs.baseline.config import BaselineConfig
from dhs.params.rules import PSF_DERIVED, check_condition_features, check_proxy_features
from dhs.params.schema import BASELINE_MODELS
from dhs.evaluation.auc import auroc, auroc_or_none, bootstrap_auroc
from dhs.params import ParamsError

SPLITS = ("train", "val", "test")

# Fixed model hyperparameters: a baseline, not a tuned model. Early stopping is off so that the
# fit uses no internal random validation split.
HIST_GB_KW = dict(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0,
                  early_stopping=False)
LOGISTIC_KW = dict(C=1.0, max_iter=2000)
PERMUTATION_REPEATS = 5


class BaselineError(StageError, ValueError):
    """Input data the baselines cannot use (missing column, one class only, ...)."""


# --------------------------------------------------------------------------- columns and rows

def _column(df: pd.DataFrame, name: str, split: str) -> np.ndarray:
    """A column as float64 with null -> NaN; a clear error if it is missing or not numeric."""
    if name not in df.columns:
        numeric = sorted(c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]))
        raise BaselineError(f"split {split}: column {name!r} is not in the cache metadata; numeric columns there: {numeric}")
    s = df[name]
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
        raise BaselineError(f"split {split}: column {name!r} must be numeric, has dtype {s.dtype}")
    return s.to_numpy(dtype=np.float64, na_value=np.nan)


def injection_labels(df: pd.DataFrame, split: str = "?") -> np.ndarray:
    """1 = injection, 0 = control, from ``is_control`` (the same rule as ``CachedSplit.labels``)."""
    ic = _column(df, "is_control", split)
    bad = ~np.isin(ic, (0.0, 1.0))
    if bad.any():
        raise BaselineError(f"split {split}: is_control must be 0 or 1; {int(bad.sum())} row(s) hold "
                            f"{sorted(set(map(str, ic[bad][:5])))}")
    return (ic == 0).astype(np.int64)


def resolve_psf_r(df: pd.DataFrame, split: str = "?") -> tuple[np.ndarray, np.ndarray]:
    """(psf_r in arcsec, fallback mask): psf_fwhm_used_r where finite and > 0, else psfsize_r
    where finite and > 0, else NaN (the row is then rejected under ``psf_r_arcsec``)."""
    n = len(df)
    if "psf_fwhm_used_r" not in df.columns and "psfsize_r" not in df.columns:
        raise BaselineError(f"split {split}: neither psf_fwhm_used_r nor psfsize_r is in the cache metadata; theta_E/PSF needs one")
    used = _column(df, "psf_fwhm_used_r", split) if "psf_fwhm_used_r" in df.columns else np.full(n, np.nan)
    size = _column(df, "psfsize_r", split) if "psfsize_r" in df.columns else np.full(n, np.nan)
    return psf_r_with_fallback(used, size)


def proxy_recovered(arc_snr: np.ndarray, theta_e_arcsec: np.ndarray, psf_r_arcsec: np.ndarray, snr_min: float = 5.0,
                    theta_psf_min: float = 0.8) -> np.ndarray:
    """The Phase 4d proxy label: arc_snr >= snr_min AND theta_E / PSF >= theta_psf_min (bool).
    Rows with a non-finite input are False here; callers reject them before (see ``proxy_baseline``)."""
    arc_snr, theta, psf = (np.asarray(a, dtype=np.float64) for a in (arc_snr, theta_e_arcsec, psf_r_arcsec))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (arc_snr >= snr_min) & (theta / psf >= theta_psf_min)


def feature_rows(df: pd.DataFrame, features: Sequence[str], split: str, extra: Mapping[str, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(X for all rows, keep mask, {column: rows non-finite}) for the given feature columns.
    ``extra`` supplies derived columns (e.g. ``psf_r_arcsec``) by name."""
    extra = dict(extra or {})
    cols = [extra[f] if f in extra else _column(df, f, split) for f in features]
    X = np.column_stack(cols) if cols else np.zeros((len(df), 0))
    bad = ~np.isfinite(X)
    by_col = {f: int(bad[:, j].sum()) for j, f in enumerate(features) if bad[:, j].any()}
    return X, ~bad.any(axis=1), by_col


# --------------------------------------------------------------------------- models

def make_model(kind: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "hist_gb":
        return HistGradientBoostingClassifier(random_state=seed, **HIST_GB_KW)
    if kind == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(random_state=seed, **LOGISTIC_KW))
    raise ParamsError(f"baseline.model must be one of {list(BASELINE_MODELS)}, got {kind!r}")


def _importances(model, kind: str, features: Sequence[str], X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any]:
    """Permutation importance on the evaluation rows (drop in AUC when one column is shuffled;
    mean and sd over ``PERMUTATION_REPEATS`` shuffles), for either model; plus the standardised
    coefficients of the logistic model."""
    out: dict[str, Any] = {}
    if len(np.unique(y)) == 2:
        rng = np.random.default_rng([seed, 11])
        base = auroc(y, model.predict_proba(X)[:, 1])
        drops = {}
        for j, f in enumerate(features):
            d = []
            for _ in range(PERMUTATION_REPEATS):
                Xp = X.copy()
                Xp[:, j] = X[rng.permutation(len(X)), j]
                d.append(base - auroc(y, model.predict_proba(Xp)[:, 1]))
            drops[f] = {"mean": float(np.mean(d)), "sd": float(np.std(d))}
        out["permutation_auc_drop"] = drops
    if kind == "logistic":
        lr = model[-1]
        out["coefficients_standardised"] = {f: float(c) for f, c in zip(features, lr.coef_[0])}
        out["intercept"] = float(lr.intercept_[0])
    return out


def _fit_and_score(kind: str, features: Sequence[str], data: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                   cfg: BaselineConfig, task: str) -> dict[str, Any]:
    """Fit on data['train'] = (X, y, region); AUC on every other split; interval and importances on test."""
    from threadpoolctl import threadpool_limits

    Xtr, ytr, _ = data["train"]
    n_pos, n_neg = int(ytr.sum()), int(len(ytr) - ytr.sum())
    if n_pos == 0 or n_neg == 0:
        raise BaselineError(f"{task}: the train split has {n_pos} positive and {n_neg} negative usable rows; "
                            f"a classifier needs both (see the row accounting for rejected rows)")
    res: dict[str, Any] = {"model": kind, "features": list(features)}
    with threadpool_limits(limits=cfg.n_threads):
        model = make_model(kind, cfg.seed).fit(Xtr, ytr)
        for split, (X, y, groups) in data.items():
            if split == "train":
                continue
            score = model.predict_proba(X)[:, 1] if len(y) else np.zeros(0)
            auc = auroc_or_none(y, score)
            res[f"auc_{split}"] = auc
            res[f"n_{split}"] = int(len(y))
            res[f"n_{split}_positive"] = int(y.sum())
            if split == "test":
                res["auc_test_bootstrap"] = bootstrap_auroc(y, score, groups, cfg.n_bootstrap, cfg.seed, cfg.bootstrap_unit)
                res["auc_test_ci95"] = res["auc_test_bootstrap"]["ci95"]
                if auc is None:
                    res["auc_test_note"] = f"test split has one class only ({len(y)} rows, {int(y.sum())} positive): AUC undefined"
                res["importance"] = _importances(model, kind, features, X, y, cfg.seed) if len(y) else {}
    res["n_train"] = int(len(ytr))
    res["n_train_positive"] = n_pos
    return res


def _require_splits(splits: Mapping[str, pd.DataFrame]) -> list[str]:
    missing = [s for s in ("train", "test") if s not in splits]
    if missing:
        raise BaselineError(f"the baselines need the train and test splits; missing {missing}")
    return [s for s in SPLITS if s in splits] + sorted(set(splits) - set(SPLITS))


def _regions(df: pd.DataFrame) -> np.ndarray | None:
    return df["region_id"].to_numpy() if "region_id" in df.columns else None


# --------------------------------------------------------------------------- the two baselines

def leak_detector(splits: Mapping[str, pd.DataFrame], cfg: BaselineConfig) -> dict[str, Any]:
    """Metadata-only classifier: observing conditions -> injection label. AUC about 0.5 = no leak."""
    features = list(cfg.conditions_features)
    check_condition_features(features)
    rows: dict[str, Any] = {}
    data = {}
    for split in _require_splits(splits):
        df = splits[split]
        y = injection_labels(df, split)
        X, keep, by_col = feature_rows(df, features, split)
        g = _regions(df)
        data[split] = (X[keep], y[keep], None if g is None else g[keep])
        rows[split] = {"read": int(len(df)), "used": int(keep.sum()), "rejected": int((~keep).sum()),
                       "rejected_nonfinite_by_column": by_col,
                       "used_injections": int(y[keep].sum()), "used_controls": int((1 - y[keep]).sum())}
    res = _fit_and_score(cfg.model, features, data, cfg, "leak detector")
    auc = res["auc_test"]
    ci = res["auc_test_ci95"]
    res.update(
        target="injection (is_control == 0)",
        leak_auc_warn=cfg.leak_auc_warn,
        leak_suspected=bool(auc is not None and auc > cfg.leak_auc_warn),
        auc_ci95_excludes_chance=bool(ci is not None and (ci[0] > 0.5 or ci[1] < 0.5)),
        rows=rows,
    )
    return res


def proxy_baseline(splits: Mapping[str, pd.DataFrame], cfg: BaselineConfig) -> dict[str, Any]:
    """The seed's scalar baseline: injection parameters -> Phase 4d proxy 'recovered', injections only."""
    features = list(cfg.proxy_features)
    check_proxy_features(features)
    rows: dict[str, Any] = {}
    data = {}
    rate: dict[str, Any] = {}
    for split in _require_splits(splits):
        df = splits[split]
        inj = injection_labels(df, split).astype(bool)
        psf, fallback = resolve_psf_r(df, split)
        label_cols = {"arc_snr": _column(df, "arc_snr", split), "theta_e_arcsec": _column(df, "theta_e_arcsec", split),
                      PSF_DERIVED: psf}
        X, _, _ = feature_rows(df, features, split, extra={PSF_DERIVED: psf})
        # per-column rejection, among injections: the feature columns, then the label inputs
        # that are not features too
        names = list(features) + [c for c in label_cols if c not in features]
        cols = [X[:, j] for j in range(len(features))] + [label_cols[c] for c in names[len(features):]]
        bad = ~np.isfinite(np.column_stack(cols)) & inj[:, None]
        keep = inj & ~bad.any(axis=1)
        y = proxy_recovered(label_cols["arc_snr"], label_cols["theta_e_arcsec"], psf, cfg.proxy_snr_min,
                            cfg.proxy_theta_psf_min).astype(np.int64)
        g = _regions(df)
        data[split] = (X[keep], y[keep], None if g is None else g[keep])
        by_col = {f: int(bad[:, j].sum()) for j, f in enumerate(names) if bad[:, j].any()}
        rows[split] = {"read": int(len(df)), "controls_excluded": int((~inj).sum()), "used": int(keep.sum()),
                       "rejected": int((inj & ~keep).sum()), "rejected_nonfinite_by_column": by_col,
                       "psf_fallback_to_psfsize_r": int((fallback & keep).sum())}
        n = int(keep.sum())
        k = int(y[keep].sum())
        rate[split] = {"recovered": k, "n": n, "rate": (k / n) if n else None}
    n_pos = int(data["train"][1].sum())
    if n_pos in (0, len(data["train"][1])):
        # a survey (or a small run) whose train injections are all on one side of the proxy's cut:
        # the recovery rates stand, the scalar model has nothing to learn
        Xt, yt, _ = data["test"]
        res = {"model": cfg.model, "features": list(features), "auc_test": None, "auc_test_ci95": None,
               "n_test": int(len(yt)), "n_test_positive": int(yt.sum()), "n_train": int(len(data["train"][1])),
               "n_train_positive": n_pos,
               "not_fitted": (f"the train split's {len(data['train'][1])} usable injections are all "
                              f"{'recovered' if n_pos else 'not recovered'} by the proxy; no model to fit")}
    else:
        res = _fit_and_score(cfg.model, features, data, cfg, "proxy baseline")
    res.update(
        target=(f"Phase 4d proxy recovered: arc_snr >= {cfg.proxy_snr_min:g} AND theta_e_arcsec / psf_r >= "
                f"{cfg.proxy_theta_psf_min:g} (psf_r = psf_fwhm_used_r, else psfsize_r); injections only"),
        recovery=rate,
        rows=rows,
    )
    return res


def run_baseline(splits: Mapping[str, pd.DataFrame], cfg: BaselineConfig) -> dict[str, Any]:
    """Both baselines; the dict written to metrics/baseline.json."""
    return {"params": cfg.to_dict(), "leak": leak_detector(splits, cfg), "proxy": proxy_baseline(splits, cfg)}


def load_cache_meta(cache_dir: str | Path, splits: Sequence[str] = SPLITS) -> dict[str, pd.DataFrame]:
    """The metadata of each cached split (the images stay unread)."""
    from dhs.imaging.cache import open_split

    return {s: open_split(cache_dir, s).meta for s in splits}


def summary_lines(m: Mapping[str, Any]) -> list[str]:
    """Human summary of ``run_baseline``'s metrics; a loud WARNING line first when a leak is suspected."""
    leak, proxy = m["leak"], m["proxy"]

    def fmt(auc, ci):
        if auc is None:
            return "undefined"
        return f"{auc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = []
    if leak["leak_suspected"]:
        lines.append(
            f"WARNING: LEAK SUSPECTED: a classifier on observing conditions alone ({', '.join(leak['features'])}) separates "
            f"injections from controls with test AUC {leak['auc_test']:.3f} > leak_auc_warn {leak['leak_auc_warn']:g}. "
            f"Injections and controls must share conditions (docs/conventions.md, shortcuts); see importance in metrics for the culprit.")
    lines.append(f"leak detector ({leak['model']}): test AUC {fmt(leak['auc_test'], leak['auc_test_ci95'])} on "
                 f"{leak['n_test']} stamps ({'LEAK SUSPECTED' if leak['leak_suspected'] else 'no leak: about 0.5 expected'})")
    rec = proxy["recovery"]
    rr = ", ".join(f"{s} {v['rate']:.1%} of {v['n']}" for s, v in rec.items() if v["rate"] is not None)
    if proxy.get("not_fitted"):
        lines.append(f"proxy baseline ({proxy['model']}): not fitted: {proxy['not_fitted']}; proxy recovery {rr}")
    else:
        lines.append(f"proxy baseline ({proxy['model']}): test AUC {fmt(proxy['auc_test'], proxy['auc_test_ci95'])} on "
                     f"{proxy['n_test']} injections; proxy recovery {rr}")
    for name, part in (("leak", leak), ("proxy", proxy)):
        rej = {s: r["rejected"] for s, r in part["rows"].items() if r["rejected"]}
        if rej:
            cols = {s: r["rejected_nonfinite_by_column"] for s, r in part["rows"].items() if r["rejected"]}
            lines.append(f"{name}: rejected rows with null/NaN/inf features {rej}, by column {cols}")
    return lines
