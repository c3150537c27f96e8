"""Headline metrics: the few numbers per stage that a user compares across experiments.

Every stage writes two JSON files:

- the *detail* file (``metrics/<stage>.json`` or ``metrics/<stage>/<arch>.json``): everything the
  stage measured, with its accounting and parameters; read by later stages and the report; a DVC
  output, not a DVC metric, so it never widens ``dvc metrics show`` or ``dvc exp show``;
- the *headline* file beside it (same name, ``.headline.json``): a flat-ish dict of at most a few
  dozen numbers and verdicts, declared under ``metrics:`` in ``dvc.yaml``.

Headline keys are fixed per stage; FPR operating points are named ``fpr_<target>`` as in the
detail files (``evaluation.fprs``). Completeness carries both intervals: Wilson (``lo``/``hi``,
binomial on the stamps) and the region bootstrap (``boot_lo``/``boot_hi``, the one to quote).
A value the stage did not measure is ``None`` (JSON null), never a stand-in number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dhs import atomic

SUFFIX = ".headline.json"


def path_for(detail_path: str | Path) -> Path:
    """``metrics/completeness/small_cnn.json`` -> ``metrics/completeness/small_cnn.headline.json``."""
    p = Path(detail_path)
    return p.with_name(p.stem + SUFFIX)


def _r(x: Any, nd: int = 4) -> Any:
    return round(float(x), nd) if isinstance(x, (int, float)) and not isinstance(x, bool) else x


def _completeness(c: Mapping[str, Any] | None, name: str, boot: bool = True) -> dict[str, Any]:
    """``{name: completeness, name_lo/_hi: Wilson 95%, name_boot_lo/_hi: region bootstrap 95%}``."""
    c = c or {}
    out = {name: _r(c.get("completeness")), f"{name}_lo": _r(c.get("wilson_lo")), f"{name}_hi": _r(c.get("wilson_hi"))}
    if boot:
        out |= {f"{name}_boot_lo": _r(c.get("boot_lo")), f"{name}_boot_hi": _r(c.get("boot_hi"))}
    return out


def stamps(d: Mapping[str, Any]) -> dict[str, Any]:
    pop = d.get("population") or {}
    used = {s: sum(int((lab or {}).get("used", 0)) for lab in labels.values())
            for s, labels in (d.get("by_split_label") or {}).items()}
    return {"source": d.get("source"), "rows_read": d.get("rows_read"), "rows_used": d.get("rows_used"),
            "rows_rejected": d.get("rows_rejected"), **{f"used_{s}": n for s, n in sorted(used.items())},
            "arc_snr_below_8": _r(pop.get("arc_snr_below_8")), "arc_snr_at_least_20": _r(pop.get("arc_snr_at_least_20")),
            "errors": len(d.get("errors") or [])}


def baseline(d: Mapping[str, Any]) -> dict[str, Any]:
    leak, proxy = d.get("leak") or {}, d.get("proxy") or {}
    lci, pci = leak.get("auc_test_ci95") or [None, None], proxy.get("auc_test_ci95") or [None, None]
    return {"leak_auc": _r(leak.get("auc_test")), "leak_auc_lo": _r(lci[0]), "leak_auc_hi": _r(lci[1]),
            "leak_suspected": leak.get("leak_suspected"),
            "proxy_auc": _r(proxy.get("auc_test")), "proxy_auc_lo": _r(pci[0]), "proxy_auc_hi": _r(pci[1])}


def train(d: Mapping[str, Any]) -> dict[str, Any]:
    best, test = d.get("best") or {}, d.get("test_at_best") or {}
    out = {"completed": d.get("completed"), "steps": d.get("steps"), "best_epoch": best.get("epoch"),
           "best_val_auc_selected": _r(best.get("auc")), "best_val_auc": _r(best.get("auc_all")),
           "best_val_loss_selected": _r(best.get("loss")), "test_auc": _r(test.get("auc")),
           "n_parameters": d.get("n_parameters")}
    if "images_per_s" in d:
        out["images_per_s"] = _r(d["images_per_s"], 1)
    return out


def infer(d: Mapping[str, Any]) -> dict[str, Any]:
    by = d.get("by_split") or {}
    return {"rows_scored": d.get("rows_scored"),
            **{f"scored_{s}": (v or {}).get("scored") for s, v in sorted(by.items())}}


def completeness(d: Mapping[str, Any]) -> dict[str, Any]:
    rows = d.get("rows") or {}
    out: dict[str, Any] = {"auroc": _r(d.get("auroc")), "eval_split": d.get("eval_split"),
                           "n_injections": rows.get("injections"), "n_controls": rows.get("controls")}
    thresholds = d.get("threshold_by_name") or {}
    sky = d.get("sky") or {}
    if sky.get("discoverable_fraction"):
        f = sky["discoverable_fraction"]
        out |= {"discoverable_fraction": _r(f.get("completeness")), "discoverable_fraction_boot_lo": _r(f.get("boot_lo")),
                "discoverable_fraction_boot_hi": _r(f.get("boot_hi"))}
    for name, h in (d.get("headline") or {}).items():
        overall = (h or {}).get("overall") or {}
        t = thresholds.get(name) or {}
        out[name] = {"threshold": _r(t.get("score"), 6), "n_controls_above": t.get("n_controls_above"), "low_count": t.get("low_count"),
                     **_completeness(overall.get("all"), "all"), **_completeness(overall.get("clean"), "clean", boot=False)}
        # completeness of lenses as they occur on the sky (sky-weighted): all and LensPop-discoverable, with n_eff
        for group, key in (("all", "sky"), ("discoverable", "discoverable")):
            c = (sky.get(name) or {}).get(group)
            if c:
                out[name] |= {**_completeness(c, key), f"{key}_n": c.get("n"), f"{key}_n_eff": _r(c.get("n_eff"), 1)}
    return out


def sensitivity(d: Mapping[str, Any]) -> dict[str, Any]:
    """Completeness of arcs above ``snr_min`` per arch and FPR, and of the theta_E/PSF proxies
    (their intervals are in the detail file)."""
    out: dict[str, Any] = {"snr_min": d.get("snr_min")}
    for arch, by_fpr in (d.get("model") or {}).items():
        out[arch] = {name: _r(((v or {}).get("all") or {}).get("completeness")) for name, v in (by_fpr or {}).items()}
    out["proxy"] = {name: _r(((v or {}).get("all") or {}).get("completeness")) for name, v in (d.get("proxy") or {}).items()}
    return out


def calibration(d: Mapping[str, Any]) -> dict[str, Any]:
    ev = d.get("eval") or {}
    before, after = ev.get("before") or {}, ev.get("after") or {}
    return {"status": d.get("status"), "method": d.get("method"), "temperature": _r(d.get("temperature")),
            "ece_before": _r(before.get("ece_uniform")), "ece_after": _r(after.get("ece_uniform")),
            "brier_after": _r(after.get("brier")), "log_loss_after": _r(after.get("log_loss"))}


def gates(d: Mapping[str, Any]) -> dict[str, Any]:
    g = d.get("gates") or {}
    return {"verdict": "PASS" if d.get("all_passed") else "FAIL", "n_pass": d.get("n_pass"), "n_fail": d.get("n_fail"),
            "n_skip": d.get("n_skip"), **{name: (v or {}).get("status") for name, v in sorted(g.items())}}


def known_lenses(d: Mapping[str, Any]) -> dict[str, Any]:
    cut = d.get("cutouts") or {}
    out: dict[str, Any] = {"status": d.get("status"), "selected": cut.get("selected"), "scored": cut.get("scored")}
    for name, groups in (d.get("recall") or {}).items():
        a = (groups or {}).get("all") or {}
        out[name] = {"recall": _r(a.get("recall")), "lo": _r(a.get("wilson_low")), "hi": _r(a.get("wilson_high")),
                     "k": a.get("k"), "n": a.get("n")}
    return out


def cutouts(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": d.get("status"), "rows": d.get("rows"), "usable": d.get("usable"), "requests": d.get("requests")}


def selection(d: Mapping[str, Any]) -> dict[str, Any]:
    """Per operating point: the fraction of held-out bins inside the model's predictive band and the
    sky-weighted completeness the model gives (the detail file has the rest)."""
    out: dict[str, Any] = {}
    for name, v in (d.get("validation") or {}).items():
        out[name] = {"heldout_inside_band": _r(v.get("fraction_inside_predictive")),
                     "sky_model": _r(((d.get("sky") or {}).get(name) or {}).get("model"))}
    return out


def closure(d: Mapping[str, Any]) -> dict[str, Any]:
    """Coverage of the truth by the 95 % intervals over seeds and bins: Wilson, region bootstrap, model band."""
    return {k: _r(v.get("coverage")) for k, v in (d.get("coverage") or {}).items() if "@" not in k}


STAGES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "stamps": stamps, "baseline": baseline, "train": train, "infer": infer, "completeness": completeness,
    "sensitivity": sensitivity, "calibration": calibration, "gates": gates, "known_lenses": known_lenses,
    "cutouts": cutouts, "selection": selection, "closure": closure}


SUMMARY = "summary.json"   # the one file DVC shows as metrics: a handful of numbers per finder


def _load(path: Path) -> dict:
    import json

    try:
        v = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def summary(root: str | Path, finders: list[str], operating_point: str = "fpr_0.01") -> dict[str, Any]:
    """The numbers ``dvc metrics show`` and ``dvc exp show`` display, from the headline files under
    ``root/metrics``: per finder the test AUROC, the gate verdict, the calibration status and ECE
    after it, the known-lens status, and at ``operating_point`` (``completeness.plot_fpr``) the
    FPR, the threshold, whether a handful of controls set it (``low_count``) and the sky-weighted
    completeness of all and of LensPop-discoverable lenses with their region-bootstrap intervals
    (``all`` / ``all_lo`` / ``all_hi``: every injection unweighted, where the stamps carry no sky
    weights); and the data's source. A stage that has not run leaves its values null. Every other
    operating point is in the headline and detail files, the report and the ablation table."""
    m = Path(root) / "metrics"
    out: dict[str, Any] = {"data": {"source": _load(m / f"stamps{SUFFIX}").get("source")}}
    for name in finders:
        comp = _load(m / "completeness" / f"{name}{SUFFIX}")
        cal, gate = _load(m / "calibration" / f"{name}{SUFFIX}"), _load(m / "gates" / f"{name}{SUFFIX}")
        row: dict[str, Any] = {"auroc": comp.get("auroc"), "gates": gate.get("verdict"),
                               "calibration": cal.get("status"), "ece_after": cal.get("ece_after"),
                               "known_lenses": _load(m / "known_lenses" / f"{name}{SUFFIX}").get("status")}
        h = comp.get(operating_point)
        if isinstance(h, dict):
            row |= {"fpr": float(operating_point.split("_", 1)[1]), "threshold": h.get("threshold"), "low_count": h.get("low_count")}
            groups = (("sky", "all"), ("discoverable", "discoverable")) if h.get("sky") is not None else (("all", "all"),)
            for src, dst in groups:
                row |= {dst: h.get(src), f"{dst}_lo": h.get(f"{src}_boot_lo"), f"{dst}_hi": h.get(f"{src}_boot_hi")}
        out[name] = row
    return out


def write(stage: str, detail_path: str | Path, detail: Mapping[str, Any]) -> Path:
    """Write the detail file and its headline beside it (both atomically); the headline's path."""
    atomic.write_json(detail_path, detail)
    out = path_for(detail_path)
    atomic.write_json(out, STAGES[stage](detail))
    return out
