"""The Phase 4d proxy beside the detector: how the "resolvability" proxy
(recovered = arc_snr >= snr_min AND theta_E/PSF >= t) compares with model-based completeness.

The proxy needs no model; it says which injections a perfect detector limited by resolution and
arc SNR would find. On the 10.6M-stamp production set it gave 10.25% (all) and 10.84% (clean)
at t = 0.8, and by construction 0% at theta_E = 0.3 and 0.6 arcsec; it is not a detector
completeness, which is why the sweep draws each trained model's curve beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pandas as pd

from dhs.measurement.counts import OVERALL, BinSpec, CompletenessError, Criterion
from dhs.measurement.measure import CompletenessConfig, SelectionResult, fpr_name, measure
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
