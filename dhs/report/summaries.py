"""Tables of what the evaluation stages measured, built from their detail files for a reader:
one row per operating point or curve, intervals as ``value [lo, hi]``, counts as ``k/n``, and
the file each came from. Keys a table does not know are left to the stage's file (named under
the table), never dumped as raw key/value rows or Python reprs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dhs.report.html import badge, esc, fmt, notice, table


def interval(c: Mapping[str, Any] | None, lo: str = "wilson_lo", hi: str = "wilson_hi", digits: int = 3) -> str:
    """``0.103 [0.093, 0.115]`` (or a dash where the interval is absent)."""
    c = c or {}
    v = c.get("completeness", c.get("recall"))
    if v is None:
        return "\u2014"
    if c.get(lo) is None or c.get(hi) is None:
        return fmt(v, digits)
    return f"{fmt(v, digits)} [{fmt(c[lo], digits)}, {fmt(c[hi], digits)}]"


def kn(c: Mapping[str, Any] | None) -> str:
    c = c or {}
    return f"{c['k']}/{c['n']}" if c.get("k") is not None and c.get("n") is not None else "\u2014"


def _boot(c: Mapping[str, Any] | None) -> str:
    c = c or {}
    return "\u2014" if c.get("boot_lo") is None else f"[{fmt(c['boot_lo'], 3)}, {fmt(c['boot_hi'], 3)}]"


GROUP_LABELS = {"overall": "every injection", "theta_e_over_psf_ge_1": "\u03b8E/PSF \u2265 1", "discoverable": "LensPop-discoverable"}


def _neff(c: Mapping[str, Any] | None) -> str:
    c = c or {}
    n_eff = c.get("n_eff")
    if c.get("n") is None:
        return "\u2014"
    return f"{fmt(c['n'])} (n_eff {round(float(n_eff)) if isinstance(n_eff, (int, float)) else fmt(n_eff)})"


def sky_table(doc: Mapping[str, Any]) -> str:
    """The sky-weighted headline: per operating point, completeness of all lenses and of the
    LensPop-discoverable ones as they occur on the sky, with Wilson (at n_eff) and region-bootstrap
    intervals; the discoverable fraction; how far the look-alike rate moves it."""
    sky = doc.get("sky") or {}
    if not isinstance(sky, Mapping) or not sky:
        return ""
    look = (doc.get("lookalike_sensitivity") or {}).get("max_discoverable_shift") or {}
    rows = []
    for t in doc.get("thresholds") or []:
        name = t.get("name") if isinstance(t, Mapping) else None
        cell = sky.get(name) if name else None
        if not isinstance(cell, Mapping):
            continue
        for group in ("all", "discoverable"):
            c = cell.get(group)
            if isinstance(c, Mapping):
                rows.append([name, "every lens" if group == "all" else "LensPop-discoverable", interval(c), _boot(c), _neff(c),
                             fmt(look.get(name), 3) if group == "discoverable" and look.get(name) is not None else "\u2014"])
    frac = sky.get("discoverable_fraction") if isinstance(sky.get("discoverable_fraction"), Mapping) else None
    head = (f"<p>Completeness of lenses as they occur on the sky: each injection weighted back to the physical population "
            f"({'sky_weight' if sky.get('weighted') else 'unit weights: the score table has no sky_weight'}); "
            f"n_eff is Kish's effective sample size."
            + (f" Discoverable fraction of all lenses: {esc(interval(frac))} (region bootstrap {esc(_boot(frac))})." if frac else "")
            + "</p>")
    return head + table(rows, ["threshold", "lenses", "completeness [Wilson 95% at n_eff]", "region bootstrap 95%", "injections",
                               "look-alike rate x0.5 / x2 moves it by"]) if rows else ""


def completeness_table(doc: Mapping[str, Any]) -> str:
    """Completeness at each operating point: threshold with its uncertainty, then per group
    (every injection, theta_E/PSF >= 1) and subset (all, clean) the completeness with Wilson
    95 %, the region-bootstrap 95 % interval and k/n."""
    thr = {t.get("name"): t for t in doc.get("thresholds") or [] if isinstance(t, Mapping)}
    rows = []
    for name, groups in (doc.get("headline") or {}).items():
        t = thr.get(name) or {}
        u = t.get("uncertainty") or {}
        above = f"{t.get('n_controls_above')}/{t.get('n_controls')}" if t.get("n_controls") is not None else "\u2014"
        score_rng = (f" [{fmt(u['score_loose'], 4)}, {fmt(u['score_strict'], 4)}]" if u.get("score_loose") is not None else "")
        for group, subsets in (groups or {}).items():
            for subset, c in (subsets or {}).items():
                rows.append([name, f"{fmt(t.get('score'), 4)}{score_rng}", above + (" \u26a0 low count" if t.get("low_count") else ""),
                             GROUP_LABELS.get(group, group), subset, interval(c), _boot(c), kn(c)])
    if not rows:
        return "<p class=more>no completeness at any operating point in this file</p>"
    return table(rows, ["threshold", "score > [range over the control count's 95% interval]", "controls above", "injections",
                        "subset", "completeness [Wilson 95%]", "region bootstrap 95%", "k/n"])


def excluded_table(doc: Mapping[str, Any]) -> str:
    ex = doc.get("excluded_from_bins") or {}
    rows = [[var, c.get("binned"), c.get("missing"), c.get("out_of_range")] for var, c in ex.items() if isinstance(c, Mapping)]
    return table(rows, ["binning variable", "injections binned", "missing value", "outside the bins"]) if rows else ""


def sensitivity_table(doc: Mapping[str, Any]) -> str:
    rows = []
    for arch, by_fpr in (doc.get("model") or {}).items():
        for name, subsets in (by_fpr or {}).items():
            a, c = (subsets or {}).get("all"), (subsets or {}).get("clean")
            rows.append([f"{arch} at {name}", interval(a), _boot(a), kn(a), interval(c), kn(c)])
    for name, subsets in (doc.get("proxy") or {}).items():
        a, c = (subsets or {}).get("all"), (subsets or {}).get("clean")
        rows.append([f"proxy: {name}", interval(a), _boot(a), kn(a), interval(c), kn(c)])
    if not rows:
        return "<p class=more>no curve in this file</p>"
    return table(rows, ["curve", "all [Wilson 95%]", "all: region bootstrap 95%", "all k/n", "clean [Wilson 95%]", "clean k/n"])


def calibration_tables(doc: Mapping[str, Any]) -> str:
    fit, ev = doc.get("fit") or {}, doc.get("eval") or {}
    params = doc.get("params") or {}
    facts = [["method", doc.get("method")], ["temperature", fmt(doc.get("temperature"), 4)],
             ["fitted on", f"{fit.get('split', params.get('fit_split'))} (NLL {fmt(fit.get('nll_before'), 4)} \u2192 {fmt(fit.get('nll_after'), 4)})"],
             ["evaluated on", params.get("eval_split")], ["checkpoint", doc.get("checkpoint")]]
    out = table(facts, ["", "value"], cls="kv")
    if doc.get("status") == "degenerate":
        out = notice("error", f"degenerate temperature fit: {doc.get('cause')}") + out
    before, after = ev.get("before") or {}, ev.get("after") or {}
    metrics = [k for k in ("ece_uniform", "ece_quantile", "mce_uniform", "mce_quantile", "brier", "log_loss") if k in before or k in after]
    if metrics:
        out += table([[k.replace("_", " "), fmt(before.get(k), 4), fmt(after.get(k), 4)] for k in metrics],
                     ["on the evaluation split", "before", "after"])
    prev = doc.get("prevalence") or {}
    ops = [p for p in prev.get("operating_points") or [] if isinstance(p, Mapping)]
    if ops:
        rows = [[fmt(p.get("target_fpr")), fmt(p.get("threshold_score"), 4), f"{p.get('n_controls_above')}/{p.get('n_controls')}",
                 fmt(p.get("tpr"), 3), fmt(p.get("posterior_at_threshold"), 3),
                 fmt(p.get("purity"), 3) + (f" (\u2265 {fmt(p.get('purity_lower_bound'), 3)})" if p.get("purity_bounded") else "")
                 + (" \u26a0 low count" if p.get("low_count") else "")] for p in ops]
        out += (f"<h4>At survey prevalence {esc(fmt(prev.get('pi_survey')))} (training prevalence {esc(fmt(prev.get('pi_train'), 3))})</h4>"
                + table(rows, ["target FPR", "threshold (score >)", "controls above", "completeness", "P(lens) at the threshold",
                               "purity"]))
    return out


# what each gate tests, in a sentence (dhs.gates; docs/conventions.md, shortcuts)
GATE_TESTS = {
    "core_only": "the data, not the finder: a classifier on the central pixels alone must not separate injections from "
                 "controls (else a finder can win on the host's core)",
    "metadata_only": "the data: observing conditions alone must not separate injections from controls",
    "core_masked": "the finder: replacing the core by sky noise must not cost it much AUROC (it must look at the arc)",
    "ring_probe": "the finder: a faint ring added to a control must not move the score more than a real arc of the same flux",
    "annulus_shuffle": "the finder: injections must beat their own annulus-shuffled versions (the arc's shape matters, not "
                       "only its flux)",
    "shift": "the finder: moving the stamp by a few pixels must not change which stamps pass the operating thresholds",
    "split_integrity": "the data: no region, host or stamp shared between train, val and test",
}


def gate_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One row per gate: verdict, value against threshold, and the stage's own sentence saying
    what was measured (``detail``) with its rule; every other number of the gate is in a
    collapsed list under the table."""
    body, more = [], []
    for g in rows:
        sentence = str(g.get("detail") or "")
        rule = g.get("rule")
        tests = GATE_TESTS.get(str(g.get("name")))
        text = (f"<span class=more>tests {esc(tests)}</span><br>" if tests else "") + esc(sentence) \
            + (f"<br><span class=more>rule: {esc(rule)}</span>" if rule else "")
        body.append([esc(g.get("name")), badge(g.get("passed") if isinstance(g.get("passed"), bool) else None, unknown="?"),
                     esc(fmt(g.get("value"))), esc(fmt(g.get("threshold"))), text])
        extra = [[k, fmt(v)] for k, v in g.items()
                 if k not in ("name", "passed", "value", "threshold", "detail", "rule") and not isinstance(v, (Mapping, list))]
        if extra:
            more.append(f"<h4>{esc(g.get('name'))}</h4>" + table(extra, ["", "value"], cls="kv"))
    out = table(body, ["gate", "result", "value", "threshold", "what was measured"], raw_cols=range(5))
    if more:
        out += f"<details><summary>every number of every gate</summary>{''.join(more)}</details>"
    return out


def known_lens_tables(doc: Mapping[str, Any]) -> str:
    cut = doc.get("cutouts") or {}
    facts = [["status", doc.get("status")], ["catalogue", doc.get("catalog")], ["lenses selected", cut.get("selected")],
             ["lenses scored", cut.get("scored")]]
    if doc.get("message"):
        facts.append(["message", doc["message"]])
    out = table(facts, ["", "value"], cls="kv")
    by_grade_sel, by_grade_sc = cut.get("selected_by_grade") or {}, cut.get("scored_by_grade") or {}
    not_scored = cut.get("not_scored_by_reason") or {}
    if by_grade_sel:
        out += table([[g, n, by_grade_sc.get(g, 0)] for g, n in by_grade_sel.items()], ["grade", "selected", "scored"])
    if not_scored:
        out += table([[r, n] for r, n in not_scored.items()], ["not scored: reason", "lenses"])
    recall = doc.get("recall") or {}
    thr = doc.get("thresholds") or {}
    rows = []
    for name, groups in recall.items():
        t = thr.get(name) or {}
        for group, c in (groups or {}).items():
            rows.append([name, fmt(t.get("threshold"), 4), group, interval(c, "wilson_low", "wilson_high"), kn(c),
                         "small n" if (c or {}).get("small_n") else ""])
    if rows:
        out += "<h4>Recall</h4>" + table(rows, ["threshold", "value >", "group", "recall [Wilson 95%]", "k/n", ""])
    elif thr:
        out += table([[n, t.get("column"), fmt(t.get("threshold"), 4)] for n, t in thr.items()],
                     ["threshold (recall not measured)", "applied to", "value >"])
    return out
