"""The Phase 4d proxy beside the detector: how the "resolvability" proxy
(recovered = arc_snr >= snr_min AND theta_E/PSF >= t) compares with model-based completeness.

The proxy needs no model; it says which injections a perfect detector limited by resolution and
arc SNR would find. On the 10.6M-stamp production set it gave 10.25% (all) and 10.84% (clean)
at t = 0.8, and by construction 0% at theta_E = 0.3 and 0.6 arcsec; it is not a detector
completeness, which is why the sweep draws each trained model's curve beside it.

The body of stage ``sensitivity`` (``run_sensitivity``): the proxy completeness for each
theta_E/PSF threshold in params, all and clean, with Wilson (and region-bootstrap) intervals,
beside each measured finder's model-based completeness at the operating FPRs. Writes
metrics/sensitivity.json, plots/sensitivity/{var}.csv (DVC plots: one curve per proxy threshold
and per finder at completeness.plot_fpr) and plots/sensitivity/{var}.png.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pandas as pd

from dhs import atomic, headline
from dhs.evaluation.scores import parquet_problem
from dhs.measurement.counts import OVERALL, BinSpec, CompletenessError, Criterion
from dhs.measurement.measure import CompletenessConfig, SelectionResult, fpr_name, measure
from dhs.measurement.figures import sensitivity_figure
from dhs.measurement.spark import spark_session
from dhs.params import Params, as_params
from dhs.params.views import view

def proxy_name(t: float) -> str:
    return f"proxy_theta_psf_{t:g}"


@dataclass(frozen=True)
class SensitivityConfig:
    """A view of the ``sensitivity`` section of params.yaml (each key, its default and its check
    in dhs.params.schema); bins and FPRs come from ``completeness`` and ``evaluation``."""
    SECTION: ClassVar[str] = "sensitivity"
    theta_psf_thresholds: tuple[float, ...]
    snr_min: float
    variables: tuple[str, ...]

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml") -> "SensitivityConfig":
        return view(cls, p, source)

    def criteria(self) -> tuple[Criterion, ...]:
        return tuple(Criterion(proxy_name(t), "proxy", t, self.snr_min) for t in self.theta_psf_thresholds)

    def restrict(self, cfg: CompletenessConfig) -> CompletenessConfig:
        """The completeness config with only the swept variables binned (and no surface)."""
        by = {b.name: b for b in cfg.bins}
        missing = [v for v in self.variables if v not in by]
        if missing:
            raise CompletenessError(f"sensitivity.variables {missing} have no bins in completeness.bins ({sorted(by)})")
        bins: tuple[BinSpec, ...] = tuple(by[v] for v in self.variables)
        return replace(cfg, bins=bins, surface=None)


def sweep(spark, score_paths: Mapping[str, str], cfg: CompletenessConfig, sens: SensitivityConfig) -> tuple[pd.DataFrame, dict]:
    """Long table (curve, kind, var, subset, bin, ..., completeness, intervals) and metrics.
    The proxy is measured on the first arch's table (every arch scores the same rows); each
    arch's model curve at every FPR of the completeness config."""
    if not score_paths:
        raise CompletenessError("sensitivity needs at least one score table (finders.measure is empty?)")
    ccfg = sens.restrict(cfg)
    frames, metrics = [], {"snr_min": sens.snr_min, "proxy": {}, "model": {}, "eval_split": cfg.eval_split}
    first = True
    for arch, path in score_paths.items():
        res: SelectionResult = measure(spark, path, ccfg, sens.criteria() if first else ())
        t = res.table
        for name in dict.fromkeys(t["criterion"]):
            proxy = name.startswith("proxy_")
            if proxy and not first:
                continue
            sub = t[t["criterion"] == name].copy()
            sub.insert(0, "curve", name if proxy else f"{arch} {name}")
            sub.insert(1, "kind", "proxy" if proxy else "model")
            frames.append(sub.drop(columns=["criterion"]))
            overall = sub[sub["var"] == OVERALL]
            summary = {s: {k: (float(r[k]) if k not in ("n", "k") else int(r[k])) for k in ("completeness", "k", "n", "wilson_lo", "wilson_hi", "boot_lo", "boot_hi")}
                       for s, r in overall.set_index("subset").iterrows()}
            if proxy:
                metrics["proxy"][name] = {"theta_psf_min": float(name.rsplit("_", 1)[1]), **summary}
            else:
                metrics["model"].setdefault(arch, {})[name] = summary
        first = False
    metrics["plot_threshold"] = fpr_name(cfg.plot_fpr)
    return pd.concat(frames, ignore_index=True), metrics


def run_sensitivity(params: str | Params = "params.yaml", scores_dir: str = "data/scores",
                    metrics_path: str = "metrics/sensitivity.json", plots_dir: str = "plots/sensitivity") -> dict:
    p = as_params(params).require("sensitivity", "completeness")
    cfg = CompletenessConfig.from_params(p["completeness"], p.source, p["evaluation"])
    sens = SensitivityConfig.from_params(p["sensitivity"], p.source)
    archs = list(p["finders"]["measure"])
    t0 = time.perf_counter()
    paths = {a: str(Path(scores_dir) / f"{a}.parquet") for a in archs}
    missing = [p for p in paths.values() if not Path(p).is_file()]
    if missing:
        raise CompletenessError(f"{missing} not found: the score tables come from `dvc repro infer` (one per finders.measure)")
    for arch, path in paths.items():
        if why := parquet_problem(path):
            raise CompletenessError(f"{path}: {why}; rebuild it with `dvc repro -f infer@{arch}`")
    table, metrics = sweep(spark_session(cfg.spark), paths, cfg, sens)
    for var in sens.variables:
        t = table[table["var"] == var]
        cols = ["curve", "kind", "subset", "bin", "bin_lo", "bin_hi", "bin_center", "n", "k", "completeness", "wilson_lo", "wilson_hi", "boot_lo", "boot_hi", "low_n"]
        # the DVC plot draws the proxies and each arch at the plotted FPR
        keep = (t["kind"] == "proxy") | t["curve"].str.endswith(fpr_name(cfg.plot_fpr))
        atomic.write_text(Path(plots_dir) / f"{var}.csv", t.loc[keep, cols].to_csv(index=False))
        sensitivity_figure(table, var, fpr_name(cfg.plot_fpr), Path(plots_dir) / f"{var}.png")
    headline.write("sensitivity", metrics_path, metrics)
    for name, m in metrics["proxy"].items():
        print(f"sensitivity: {name}: all {m['all']['completeness']:.4f} (n={m['all']['n']}), clean {m['clean']['completeness']:.4f}")
    for arch, by in metrics["model"].items():
        m = by[fpr_name(cfg.plot_fpr)]
        print(f"sensitivity: {arch} at {fpr_name(cfg.plot_fpr)}: all {m['all']['completeness']:.4f}, clean {m['clean']['completeness']:.4f}")
    print(f"sensitivity: wrote {metrics_path} and {plots_dir}/ in {time.perf_counter() - t0:.1f} s")
    return metrics
