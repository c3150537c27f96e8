"""The closure test of the measuring chain: an analytic "finder" whose selection function is known
in closed form goes through the same steps as a trained one (score table -> completeness ->
selection model) and the recovered curves, intervals and model are compared with the truth.

The analytic finder. For an injection with catalogue quantities x (``dhs.selection.function``'s
inputs, taken from each stamp's metadata) its logit is

    logit = eta(x) + s L,    eta(x) = a (log10 S/N_implied(x) - 1.3) + b (theta_E/PSF - 1) + c,

with L a standard logistic variable (fresh per seed) and s its scale; a control's logit is
c_control + s L. Then P(score > t | x) = sigmoid((eta(x) - t) / s) exactly, and the threshold at
false-positive rate f on the controls is t_f = c_control + s logit(1 - f). The truth is additive
in the model's terms (linear in log10 S/N_implied, a non-decreasing term, and in theta_E/PSF), so
the selection model can represent it and any miss is the estimator's.

Truth per bin: the mean of P over the bin's injections, at the threshold the pipeline applied
(what a binned interval claims) and at t_f (what the model's band, whose replicates recompute the
threshold, claims).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dhs.evaluation.scores import sigmoid
from dhs.selection.function import terms
from dhs.selection.inputs import selection_inputs

# the coefficients of the analytic finder (chosen so completeness spans ~0.05-0.95 over the
# measurement population at FPR 0.1-0.001)
SNR_SLOPE = 6.0
THETA_PSF_SLOPE = 1.5
INJECTION_OFFSET = 4.0
CONTROL_LOGIT = -2.0
NOISE_SCALE = 1.0


@dataclass(frozen=True)
class AnalyticFinder:
    snr_slope: float = SNR_SLOPE
    theta_psf_slope: float = THETA_PSF_SLOPE
    offset: float = INJECTION_OFFSET
    control_logit: float = CONTROL_LOGIT
    noise_scale: float = NOISE_SCALE

    def eta(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        t = terms(inputs)
        return self.snr_slope * (t["log10_snr_implied"] - 1.3) + self.theta_psf_slope * (t["theta_e_over_psf"] - 1.0) + self.offset

    def threshold_at_fpr(self, fpr: float) -> float:
        """The logit threshold passing a fraction ``fpr`` of controls (their logit is c + s L)."""
        return self.control_logit + self.noise_scale * float(np.log((1 - fpr) / fpr))

    def p_pass(self, inputs: Mapping[str, np.ndarray], logit_threshold: float) -> np.ndarray:
        """P(logit > threshold | x) for injections."""
        return sigmoid((self.eta(inputs) - logit_threshold) / self.noise_scale)

    def logits(self, inputs: Mapping[str, np.ndarray], label: np.ndarray, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        u = rng.random(len(label))
        noise = self.noise_scale * np.log(u / (1 - u))
        base = np.where(np.asarray(label) == 1, np.nan_to_num(self.eta(inputs), nan=-50.0), self.control_logit)
        return base + noise


def analytic_score_table(meta: pd.DataFrame, seed: int, finder: AnalyticFinder = AnalyticFinder()) -> pd.DataFrame:
    """A score table with the analytic finder's logits in place of a model's: every column of
    ``meta`` (a score table, or metadata with split, label and region_id) kept, logit and score
    replaced."""
    out = meta.copy()
    inputs = selection_inputs(out)
    out["logit"] = finder.logits(inputs, out["label"].to_numpy(), seed)
    out["score"] = sigmoid(out["logit"].to_numpy())
    return out


def population_metadata(simulate: Mapping[str, Any], **over: Any) -> pd.DataFrame:
    """A score table's val and test rows without scores, drawn from the simulated survey's
    population (``simulate``: the params section, ``over`` replacing keys) without rendering a
    pixel: magnification from the extended-SIS estimate (the renderer measures it on the image),
    PSF as the score table derives it. The closure test's metadata where no score table is at hand."""
    from dhs.evaluation.seeing import psf_r_arcsec
    from dhs.simulate.config import SimConfig
    from dhs.simulate.physical import magnification_sis_extended
    from dhs.simulate.population import sample_population

    p = {**dict(simulate), **over}
    df = sample_population(SimConfig.from_params(p))
    df = df[df["region_split"].isin(["val", "test"])].reset_index(drop=True)
    df.insert(0, "split", df["region_split"])
    df.insert(1, "label", (df["is_control"].to_numpy() == 0).astype(np.int8))
    inj = df["label"].to_numpy() == 1
    beta = np.hypot(df["src_x_arcsec"].to_numpy(float), df["src_y_arcsec"].to_numpy(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = magnification_sis_extended(df["theta_e_arcsec"].to_numpy(float), beta, df["src_reff_arcsec"].to_numpy(float))
    df["magnification"] = np.where(inj, mu, np.nan)
    df["psf_r_arcsec"] = psf_r_arcsec(df)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        df["theta_e_over_psf"] = np.where(inj, df["theta_e_arcsec"] / df["psf_r_arcsec"], np.nan)
    df["logit"] = 0.0
    df["score"] = 0.5
    return df


def bin_truth(table: pd.DataFrame, inj: pd.DataFrame, p_true: np.ndarray, var_column: Mapping[str, str]) -> np.ndarray:
    """The true completeness of each row of a binned completeness table (var, bin_lo, bin_hi): the
    mean of ``p_true`` over the injections in the bin (lo <= x < hi; the last bin closed as the
    completeness counts do: x <= hi where hi is the last edge). NaN for rows of other variables."""
    out = np.full(len(table), np.nan)
    last_hi = table.groupby("var")["bin_hi"].transform("max").to_numpy()
    for i, (var, lo, hi, lh) in enumerate(zip(table["var"], table["bin_lo"], table["bin_hi"], last_hi)):
        col = var_column.get(var)
        if col is None or col not in inj.columns:
            continue
        x = pd.to_numeric(inj[col], errors="coerce").to_numpy(float)
        m = (x >= lo) & ((x < hi) | ((hi == lh) & (x <= hi)))
        if m.any():
            out[i] = float(p_true[m].mean())
    return out


CLOSURE_MIN_STAMPS = 4000   # each seed draws at least this many stamps (a tiny pipeline's survey leaves no bin to judge)
MIN_BIN_N = 50   # bins with fewer injections are not counted in the coverage (the completeness tables' low_n)


def run_seed(meta: pd.DataFrame, seed: int, params, workdir: Path, spark, finder: AnalyticFinder = AnalyticFinder()) -> dict[str, Any]:
    """One seed of the closure test: the analytic finder's score table of ``meta`` through the
    completeness measurement (Spark, ``dhs.measurement.measure``) and the selection stage
    (``dhs.selection.stage.run``), exactly as a trained finder's. Returns the binned estimates
    ("binned": var, bin edges, n, estimate and intervals per estimator and operating point, with
    the threshold applied), the model's bin means and bands with their truth ("model"), the
    held-out validation per operating point, and the injections' inputs (``reference``: another
    seed's truth is computed over them)."""
    from dhs import headline
    from dhs.measurement.measure import CompletenessConfig, measure, metrics_dict
    from dhs.selection import stage as selection_stage
    from dhs.selection.function import SelectionFunction

    ccfg = CompletenessConfig.from_params(params["completeness"], params.source, params["evaluation"])
    arch = f"closure_{seed}"
    scores = analytic_score_table(meta, seed, finder)
    path = Path(workdir) / "scores" / f"{arch}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(path, index=False)
    result = measure(spark, str(path), ccfg)
    headline.write("completeness", Path(workdir) / "completeness" / f"{arch}.json", metrics_dict(arch, ccfg, result))
    sel = selection_stage.run(arch, params, scores_dir=str(Path(workdir) / "scores"), completeness_dir=str(Path(workdir) / "completeness"),
                              models_dir=str(Path(workdir) / "models"), out_dir=str(Path(workdir) / "selection"),
                              metrics_dir=str(Path(workdir) / "metrics"), plots_dir=str(Path(workdir) / "plots"), figures=False)
    ev = scores[scores["split"] == ccfg.eval_split]
    inj = ev[ev["label"] == 1].reset_index(drop=True)
    x = selection_inputs(inj)
    sfn = SelectionFunction.load(Path(workdir) / "selection" / f"{arch}.json")
    inside = sfn.inside(**x)
    columns = {b.name: b.column for b in ccfg.bins}
    binned, model = [], []
    for name, thr in result.thresholds.items():
        if thr.target_fpr is None:
            continue
        applied = float(np.log(thr.score / (1 - thr.score))) if 0 < thr.score < 1 else (np.inf if thr.score >= 1 else -np.inf)
        tab = result.table[(result.table["criterion"] == name) & (result.table["subset"] == "all")
                           & result.table["var"].isin(list(columns)) & (result.table["bin"] >= 0) & (result.table["n"] >= MIN_BIN_N)]
        for _, r in tab.iterrows():
            for est, lo, hi in (("wilson", r["wilson_lo"], r["wilson_hi"]), ("bootstrap", r["boot_lo"], r["boot_hi"])):
                binned.append({"seed": seed, "threshold": name, "fpr": thr.target_fpr, "applied_logit": applied, "var": r["var"],
                               "bin": int(r["bin"]), "bin_lo": r["bin_lo"], "bin_hi": r["bin_hi"], "n": int(r["n"]), "estimator": est,
                               "estimate": r["completeness"], "lo": lo, "hi": hi})
        # the model: its bin means over these injections against the truth over the same injections
        p_nom = finder.p_pass(x, finder.threshold_at_fpr(thr.target_fpr))[inside]
        inj_in = inj[inside].reset_index(drop=True)
        for var in columns:
            c = pd.read_csv(Path(workdir) / "plots" / arch / f"{var}.csv")
            c = c[(c["threshold"] == name) & (c["n"] >= MIN_BIN_N)].reset_index(drop=True).assign(var=var)
            if c.empty:
                continue
            truth = bin_truth(c, inj_in, p_nom, columns)
            for i, r in c.iterrows():
                model.append({"seed": seed, "threshold": name, "fpr": thr.target_fpr, "var": var, "bin": int(r["bin"]), "n": int(r["n"]),
                              "estimator": "model", "estimate": r["model"], "lo": r["model_lo"], "hi": r["model_hi"], "truth": truth[i]})
    ref = meta[meta["label"] == 1].reset_index(drop=True)
    return {"binned": pd.DataFrame(binned), "model": pd.DataFrame(model), "reference": ref,
            "validation": {n: v["fraction_inside_predictive"] for n, v in sel["validation"].items()}}


def binned_truth(binned: pd.DataFrame, reference: pd.DataFrame, columns: Mapping[str, str],
                 finder: AnalyticFinder = AnalyticFinder()) -> np.ndarray:
    """The population completeness each binned row estimates: the mean of P(pass | x) at the row's
    applied threshold over the ``reference`` injections (an independent draw of the same
    population) in the row's bin."""
    x = selection_inputs(reference)
    out = np.full(len(binned), np.nan)
    for t, idx in binned.groupby("applied_logit").groups.items():
        rows = binned.loc[idx]
        out[binned.index.get_indexer(idx)] = bin_truth(rows.reset_index(drop=True), reference, finder.p_pass(x, float(t)), columns)
    return out


def run_closure(metas: Mapping[int, pd.DataFrame], params, workdir: Path, spark, finder: AnalyticFinder = AnalyticFinder(),
                progress=None, reference: pd.DataFrame | None = None) -> dict[str, Any]:
    """The closure test over seeds (``metas``: seed -> metadata drawn for that seed). A binned
    estimate of seed s is judged against the population truth over the other seeds' injections
    (or over ``reference``, an independent draw, where given: needed for a single seed); the model
    against the truth over its own injections. Returns the per-bin table ("bins", with
    ``covered``), the coverage table and the held-out validation per seed."""
    from dhs.measurement.measure import CompletenessConfig

    if len(metas) < 2 and reference is None:
        raise ValueError("the closure test needs >= 2 seeds, or a reference draw: each seed's population truth is computed "
                         "over the other seeds' draws")
    ccfg = CompletenessConfig.from_params(params["completeness"], params.source, params["evaluation"])
    columns = {b.name: b.column for b in ccfg.bins}
    runs = {}
    for i, (seed, meta) in enumerate(metas.items()):
        runs[seed] = run_seed(meta, seed, params, Path(workdir) / f"seed_{seed}", spark, finder)
        if progress is not None:
            progress(i + 1, len(metas), seed, runs[seed])
    parts = []
    for seed, r in runs.items():
        b = r["binned"].reset_index(drop=True)
        ref = (reference[reference["label"] == 1] if reference is not None else
               pd.concat([o["reference"] for s, o in runs.items() if s != seed], ignore_index=True))
        if len(b):
            b["truth"] = binned_truth(b, ref, columns, finder)
        parts += [b, r["model"]]
    bins = pd.concat([p for p in parts if len(p)], ignore_index=True)
    bins["covered"] = (bins["lo"] <= bins["truth"]) & (bins["truth"] <= bins["hi"])
    return {"bins": bins, "coverage": coverage_table(bins, ccfg.confidence),
            "validation": {int(s): r["validation"] for s, r in runs.items()}, "n_seeds": len(runs),
            "expected_binned_coverage": expected_coverage(ccfg.confidence, 1 if reference is not None and len(metas) == 1 else len(runs) - 1,
                                                          reference_is_large=reference is not None)}


def expected_coverage(confidence: float, n_reference_draws: int, reference_is_large: bool = False) -> float:
    """What a calibrated interval's coverage reads when its truth is itself estimated from
    ``n_reference_draws`` independent draws the size of the one measured: the truth's own scatter
    adds 1/k of the estimate's variance, so the interval covers with probability
    2 Phi(z / sqrt(1 + 1/k)) - 1 (0.83 for one draw, 0.95 for many). A large separate reference
    (``reference_is_large``) is taken as exact."""
    from scipy.stats import norm

    z = norm.ppf(0.5 + confidence / 2)
    if reference_is_large or n_reference_draws <= 0:
        return float(confidence)
    return float(2 * norm.cdf(z / np.sqrt(1 + 1 / n_reference_draws)) - 1)


def coverage_table(bins: pd.DataFrame, confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per estimator, and per estimator and operating point: the fraction of (seed, bin) cells
    whose interval covers the truth, with a Wilson interval on that fraction and the count."""
    from dhs.evaluation.intervals import wilson_interval

    out: dict[str, dict[str, Any]] = {}
    ests = list(dict.fromkeys(bins["estimator"]))
    groups = [(e, None) for e in ests] + [(e, t) for e in ests for t in dict.fromkeys(bins["threshold"])]
    for est, thr in groups:
        m = (bins["estimator"] == est) & bins["truth"].notna()
        if thr is not None:
            m &= bins["threshold"] == thr
        k, n = int(bins.loc[m, "covered"].sum()), int(m.sum())
        if n == 0:
            continue
        lo, hi = wilson_interval(k, n, confidence)
        out[est if thr is None else f"{est}@{thr}"] = {"coverage": k / n, "lo": float(lo), "hi": float(hi), "k": k, "n": n}
    return out


def run(params="params.yaml", metrics_path: str = "metrics/closure.json", plots_dir: str = "plots/closure",
        work: str | None = None, seeds: int | None = None) -> dict[str, Any]:
    """Stage ``closure``: ``selection.closure_seeds`` seeds (or ``seeds``) of the analytic finder,
    each on its own draw of the simulated survey's population (``simulate.seed`` + seed;
    ``simulate.n_stamps`` stamps, at least ``CLOSURE_MIN_STAMPS``), through
    completeness and selection; writes the coverage table and per-seed validation to
    ``metrics_path`` (headline beside it) and the per-bin table and coverage figure to ``plots_dir``."""
    import shutil
    import sys
    import tempfile
    import time

    from dhs import atomic, headline
    from dhs.measurement.measure import CompletenessConfig
    from dhs.measurement.spark import spark_session
    from dhs.params import as_params
    from dhs.selection.figures import coverage_figure

    p = as_params(params).require("selection", "completeness", "simulate")
    n = int(p["selection"]["closure_seeds"] if seeds is None else seeds)
    t0 = time.perf_counter()
    base = int(p["simulate"]["seed"])
    n_stamps = max(int(p["simulate"]["n_stamps"]), CLOSURE_MIN_STAMPS)
    metas = {}
    for s in range(1, n + 1):
        metas[s] = population_metadata(p["simulate"], seed=base + s, n_stamps=n_stamps)
        print(f"closure: drew the population of seed {s}/{n} ({time.perf_counter() - t0:.0f} s)", flush=True)
    ccfg = CompletenessConfig.from_params(p["completeness"], p.source, p["evaluation"])
    spark = spark_session(ccfg.spark)
    tmp = Path(work) if work else Path(tempfile.mkdtemp(prefix="dhs-closure-"))

    def progress(i, total, seed, r):
        v = ", ".join(f"{k} {x:.2f}" for k, x in r["validation"].items() if x is not None)
        print(f"closure: seed {seed} ({i}/{total}) through completeness and selection; held-out bins inside the predictive band: {v} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    try:
        r = run_closure(metas, p, tmp, spark, progress=progress)
    finally:
        if not work:
            shutil.rmtree(tmp, ignore_errors=True)
    bins = r["bins"]
    atomic.write_text(Path(plots_dir) / "bins.csv", bins.to_csv(index=False, float_format="%.6g"))
    coverage_figure(r["coverage"], ccfg.confidence, n, Path(plots_dir) / "coverage.png")
    finder = AnalyticFinder()
    metrics = {"n_seeds": n, "confidence": ccfg.confidence, "min_bin_n": MIN_BIN_N, "coverage": r["coverage"],
               "expected_binned_coverage": r["expected_binned_coverage"],
               "validation": r["validation"], "n_bins": int(len(bins)),
               "finder": {"snr_slope": finder.snr_slope, "theta_psf_slope": finder.theta_psf_slope, "offset": finder.offset,
                          "control_logit": finder.control_logit, "noise_scale": finder.noise_scale}}
    headline.write("closure", metrics_path, metrics)
    for k, c in r["coverage"].items():
        print(f"closure: {k:>22}: {c['coverage']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}] of {c['n']} (seed, bin) cells", file=sys.stdout)
    print(f"closure: the binned estimators' truth rests on {n - 1} other draw(s) of the population, so a calibrated 95 % "
          f"interval reads {r['expected_binned_coverage']:.3f} here (the model's truth is exact)", flush=True)
    print(f"closure: wrote {metrics_path} and {plots_dir}/ in {time.perf_counter() - t0:.1f} s", flush=True)
    return metrics


# the known model's smoothing penalty, lighter than selection.smoothing's default in the schema
# (the other fit keys take the schema's defaults)
ANALYTIC_SMOOTHING = 1.0


def analytic_selection_file(path: Path, meta: pd.DataFrame, seed: int = 0, logit_threshold: float = 2.0, n_replicates: int = 40,
                            finder: AnalyticFinder = AnalyticFinder()) -> dict[str, Any]:
    """A selection-function file fitted directly on ``meta``'s injections with the analytic
    finder's logits and a fixed logit threshold (no controls, no Spark): a small, known model for
    the file's tests and benchmark. Returns the document written."""
    from dhs.evaluation.intervals import bootstrap_multiplicities
    from dhs.selection import function as sf
    from dhs.selection.fit import FitConfig, design_for, fit_operating_point, operating_point_doc, term_ranges

    inj = meta[meta["label"] == 1].reset_index(drop=True)
    x = selection_inputs(inj)
    ok = np.all([np.isfinite(v) for v in x.values()], axis=0)
    x = {k: v[ok] for k, v in x.items()}
    t = sf.terms(x)
    logit = finder.logits(x, np.ones(int(ok.sum()), int), seed)
    d = design_for(t, 8)
    regions = np.sort(inj.loc[ok, "region_id"].unique())
    ri = inj.loc[ok, "region_id"].map({r: i for i, r in enumerate(regions)}).to_numpy()
    fit = fit_operating_point(d, d.basis(t), logit, ri, np.zeros(1), np.zeros(1, int), len(regions), "fixed", None, logit_threshold,
                              FitConfig.from_params({"n_replicates": n_replicates, "smoothing": ANALYTIC_SMOOTHING}, confidence=0.95),
                              bootstrap_multiplicities(len(regions), n_replicates, seed))
    ir, tr = term_ranges(x), term_ranges(t)
    doc = {"format": sf.FORMAT, "format_version": sf.FORMAT_VERSION, "primary": "fixed",
           "inputs": {k: {"unit": u, "description": dd, "range": list(ir[k])} for k, (u, dd) in sf.INPUTS.items()},
           "terms": {k: {"definition": dd, "monotone": mm, "range": list(tr[k])} for k, (dd, mm) in sf.TERMS.items()},
           "operating_points": [operating_point_doc(d, fit, 0.95)], "finder": {"arch": "analytic", "logit_threshold": logit_threshold}}
    sf.write(doc, path)
    return doc
