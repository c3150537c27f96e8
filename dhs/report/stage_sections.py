"""Sections that show what other stages wrote: completeness, the theta_E x PSF surface,
sensitivity, calibration, gates, known-lens recovery, and the provenance of the run.

Each embeds the PNGs its stage drew (``plots/<stage>/...``) and shows its detail file as tables
built for reading (``dhs.report.summaries``: one row per operating point or curve, intervals as
``value [lo, hi]``); every other key stays in the file named beside the table. Where a stage
wrote CSV but no PNG the figure is redrawn from the CSV; where it wrote nothing the section says
"not run: <stage> (<path> not found)".
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

from dhs.evaluation.prevalence import purity_at_prevalence
from dhs.evaluation.thresholds import operating_point_label
from dhs.report import figures, summaries
from dhs.report.context import Context
from dhs.report.html import Section, badge, esc, fmt, img, not_run, notice, table
from dhs.report.sources import Loaded, dvc_lock_outputs, gate_rows, gates_passed, git_state

PRIORITY = ("theta_e_arcsec", "theta_e", "theta_e_over_psf")
# the variables drawn with every arch on the same axes (completeness section), in this order
OVERLAY = (("theta_e_arcsec", "\u03b8E [arcsec]"), ("theta_e_over_psf", "\u03b8E / PSF FWHM"), ("arc_snr", "arc SNR (peak pixel, log)"),
           ("lensed_src_r_mag", "source r [mag, as lensed]"), ("host_r_mag", "host (lens) r [mag]"))


def _json_or_notice(ld: Loaded, stage: str) -> str:
    return not_run(stage, ld.path) if ld.missing else notice("error", ld.error or f"{ld.path}: unreadable")


def is_surface(p: Path) -> bool:
    """A 2-D completeness table or figure: ``<x>__x__<y>.*`` (or any name with 'surface')."""
    return "__x__" in p.stem or "surface" in p.stem


def _order(paths: list[Path]) -> list[Path]:
    return sorted(paths, key=lambda p: (PRIORITY.index(p.stem) if p.stem in PRIORITY else len(PRIORITY), p.name))


def _embed(ctx: Context, paths: list[Path], what: str) -> str:
    out = []
    for p in paths:
        try:
            out.append(img(p, f"{what}: {p.name}", ctx.inputs.rel(p)))
        except (OSError, ValueError) as exc:
            out.append(notice("error", f"{ctx.inputs.rel(p)}: {exc}"))
    return "".join(out)


def _csv_tables(ctx: Context, paths: list[Path]) -> str:
    out = []
    for p in paths:
        ld = ctx.inputs.csv(ctx.inputs.rel(p))
        if ld.ok and ld.value:
            cols = list(ld.value[0])
            out.append(f"<h4>{esc(ctx.inputs.rel(p))}</h4>" + table([[r.get(c) for c in cols] for r in ld.value], cols))
        else:
            out.append(notice("error" if ld.error else "warn", ld.error or f"{ctx.inputs.rel(p)} is empty"))
    return "".join(out)


def _status(oks: list[bool]) -> str:
    return "ok" if oks and all(oks) else "partial" if any(oks) else "notrun"


def _overlay(ctx: Context) -> str:
    """Completeness of every arch on shared axes at the plot threshold (from each arch's CSVs)."""
    curves, threshold = {}, None
    for arch in ctx.cfg.archs:
        ld = ctx.inputs.json(f"metrics/completeness/{arch}.json")
        if ld.ok and threshold is None:
            threshold = ld.value.get("plot_threshold")
        by_var = {}
        for var, _ in OVERLAY:
            rows = ctx.inputs.csv(f"plots/completeness/{arch}/{var}.csv")
            if rows.ok and rows.value:
                by_var[var] = rows.value
        if by_var:
            curves[arch] = by_var
    if not curves:
        return ""   # each arch's part of the section says which stage has not run
    if threshold is None:
        return notice("warn", "no plot_threshold in any metrics/completeness file: the curves of every arch are not overlaid")
    variables = [(v, label) for v, label in OVERLAY if any(v in c for c in curves.values())]
    srcs = ", ".join(f"plots/completeness/{a}/" for a in curves)
    return img(figures.completeness_overlay(curves, variables, threshold), f"completeness of every arch at {threshold}",
               f"every arch on the same axes at {operating_point_label(threshold)} ({threshold}, completeness.plot_fpr), all "
               f"injections, Wilson 95% band; from {srcs}")


def completeness(ctx: Context) -> Section:
    """Every arch overlaid at the plot threshold; then per arch: completeness at each operating
    point with both intervals, and its curves against every binning variable (theta_E and
    theta_E/PSF first) at every threshold."""
    parts, oks = [_overlay(ctx)], []
    for arch in ctx.cfg.archs:
        parts.append(f"<h3>{esc(arch)}</h3>")
        rel = f"metrics/completeness/{arch}.json"
        ld = ctx.inputs.json(rel)
        d = f"plots/completeness/{arch}"
        pngs = _order([p for p in ctx.inputs.pngs(d) if not is_surface(p)])
        csvs = _order([p for p in ctx.inputs.pngs(d, "*.csv") if not is_surface(p) and p.stem != "top_controls"])
        if ld.ok:
            parts.append(f"<p>AUROC {esc(fmt(ld.value.get('auroc'), 4))} on the {esc(ld.value.get('eval_split'))} split "
                         f"({esc(fmt((ld.value.get('rows') or {}).get('injections')))} injections, "
                         f"{esc(fmt((ld.value.get('rows') or {}).get('controls')))} controls); from {esc(rel)}.</p>")
            parts.append(summaries.sky_table(ld.value))
            parts.append(summaries.completeness_table(ld.value))
            excluded = summaries.excluded_table(ld.value)
            if excluded:
                parts.append(f"<details><summary>injections per binning variable (binned, missing, outside the bins)</summary>{excluded}</details>")
        else:
            parts.append(_json_or_notice(ld, f"completeness@{arch}"))
        if pngs:
            parts.append(_embed(ctx, pngs, f"completeness {arch}"))
        elif csvs:
            for p in csvs:
                rows = ctx.inputs.csv(ctx.inputs.rel(p))
                try:
                    parts.append(img(figures.completeness_from_csv(rows.value or [], p.stem), f"completeness {arch} {p.stem}",
                                     f"redrawn from {ctx.inputs.rel(p)} (the stage wrote no PNG)"))
                except ValueError as exc:
                    parts.append(notice("error", f"{ctx.inputs.rel(p)}: {exc}"))
        else:
            parts.append(not_run(f"completeness@{arch} figures", f"{d}/*.png or *.csv"))
        oks.append(ld.ok and bool(pngs or csvs))
    return Section("completeness", "Completeness against \u03b8E and \u03b8E/PSF", "".join(parts), _status(oks))


def surface(ctx: Context) -> Section:
    """The theta_E x PSF completeness surface per arch: the stage's PNG, else redrawn from its CSV."""
    parts, oks = [], []
    for arch in ctx.cfg.archs:
        d = f"plots/completeness/{arch}"
        pngs = [p for p in ctx.inputs.pngs(d) if is_surface(p)]
        csvs = [p for p in ctx.inputs.pngs(d, "*.csv") if is_surface(p)]
        parts.append(f"<h3>{esc(arch)}</h3>")
        if pngs:
            parts.append(_embed(ctx, pngs, f"surface {arch}"))
        for p in [] if pngs else csvs:
            rel = ctx.inputs.rel(p)
            ld = ctx.inputs.csv(rel)
            try:
                parts.append(img(figures.surface_from_csv(ld.value or [], p.stem.split("__x__")), f"surface {arch}", f"redrawn from {rel}"))
            except ValueError as exc:
                parts.append(notice("warn", f"{rel}: {exc}; shown as a table") + _csv_tables(ctx, [p]))
        if not (pngs or csvs):
            parts.append(not_run(f"completeness@{arch} surface", f"{d}/<theta>__x__<psf>.png or .csv"))
        oks.append(bool(pngs or csvs))
    return Section("surface", "Completeness surface \u03b8E x PSF", "".join(parts), _status(oks))


SELECTION_FIGURES = ("theta_e_over_psf", "theta_e_arcsec", "arc_snr_int", "src_r_mag", "psf_r_arcsec", "magnification")


def selection(ctx: Context) -> Section:
    """The selection-function model per arch: its curves with their band beside the binned points,
    the held-out validation, the sky-weighted completeness it gives; then the closure test."""
    parts, oks = [], []
    for arch in ctx.cfg.archs:
        parts.append(f"<h3>{esc(arch)}</h3>")
        rel = f"metrics/selection/{arch}.json"
        ld = ctx.inputs.json(rel)
        if not ld.ok:
            parts.append(_json_or_notice(ld, f"selection@{arch}"))
            oks.append(False)
            continue
        m = ld.value
        r = m.get("rows") or {}
        parts.append(f"<p>P(found | θE, PSF, depth, source magnitude and size, magnification, lens magnitude) per operating "
                     f"point, fitted on {esc(r.get('fit'))} injections of {esc(r.get('fit_regions'))} sky regions of the "
                     f"{esc(m.get('eval_split'))} split and validated on {esc(r.get('held_out'))} injections of the other "
                     f"{esc(r.get('held_out_regions'))} regions ({esc(r.get('held_out_outside_range'))} of them outside the fit's "
                     f"range, left out). File: <code>{esc(m.get('file'))}</code> (docs/selection.md: load it with numpy, or "
                     f"<code>python -m dhs.selection annotate</code>).</p>")
        rows = []
        order = [o.get("name") for o in m.get("operating_points") or []]
        for name, v in sorted((m.get("validation") or {}).items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
            cal = v.get("calibration") or {}
            sky = (m.get("sky") or {}).get(name) or {}
            b = sky.get("binned") or {}
            rows.append([name, f"{fmt(v.get('fraction_inside_predictive'), 3)} of {v.get('n_bins_counted')} bins",
                         fmt(v.get("fraction_inside_model_band"), 3), f"{fmt(cal.get('statistic'), 3)} / {cal.get('dof')}, p = {fmt(cal.get('p_value'), 3)}",
                         f"{fmt(sky.get('model'), 3)} [{fmt(sky.get('model_lo'), 3)}, {fmt(sky.get('model_hi'), 3)}]",
                         f"{fmt(b.get('completeness'), 3)} [{fmt(b.get('boot_lo'), 3)}, {fmt(b.get('boot_hi'), 3)}]"])
        min_n = next(iter((m.get("validation") or {}).values()), {}).get("min_bin_n")
        parts.append(table(rows, ["operating point", f"held-out bins inside the predictive band (n \u2265 {esc(min_n)})",
                                  "inside the bare model band", "calibration χ² / dof (held out)",
                                  "sky-weighted completeness, model [95 %]", "sky-weighted, binned [bootstrap 95 %]"]))
        parts.append(f"<p class=more>from {esc(rel)}; the predictive band is the model's band widened by each bin's own binomial "
                     f"scatter (an observed fraction of n injections is not the mean P)</p>")
        d = f"plots/selection/{arch}"
        pngs = [p for name in SELECTION_FIGURES for p in ctx.inputs.pngs(d) if p.stem == name]
        parts.append(_embed(ctx, pngs, f"selection model {arch}") if pngs else not_run(f"selection@{arch} figures", f"{d}/*.png"))
        oks.append(bool(pngs))
    ld = ctx.inputs.json("metrics/closure.json")
    parts.append("<h3>Closure test of the measuring chain</h3>")
    if ld.ok:
        c = ld.value
        parts.append(f"<p>An analytic finder whose selection function is known in closed form, run through completeness and "
                     f"selection like a trained one, {esc(c.get('n_seeds'))} seeds; coverage of the truth by each 95 % interval "
                     f"over (seed, bin) cells with n ≥ {esc(c.get('min_bin_n'))}, with the Wilson interval of the coverage "
                     f"itself. A binned estimate is judged against the population truth over the other seeds' draws, which "
                     f"scatters itself: with {esc(c.get('n_seeds'))} seeds a calibrated 95 % interval reads "
                     f"{esc(fmt(c.get('expected_binned_coverage'), 3))} here (the model's truth is exact). "
                     f"<code>python benchmarks/closure.py --seeds 20</code> gives the figure docs/results.md quotes.</p>")
        est_order = ("wilson", "bootstrap", "model")
        cov = sorted((c.get("coverage") or {}).items(),
                     key=lambda kv: (est_order.index(kv[0].split("@")[0]) if kv[0].split("@")[0] in est_order else 9, "@" in kv[0]))
        rows = [[k.replace("@", " at "), fmt(v.get("coverage"), 3), f"[{fmt(v.get('lo'), 3)}, {fmt(v.get('hi'), 3)}]", v.get("n")]
                for k, v in cov]
        parts.append(table(rows, ["interval", "coverage", "95 % interval of the coverage", "cells"]))
        pngs = [p for p in ctx.inputs.pngs("plots/closure") if p.stem == "coverage"]
        if pngs:
            parts.append(_embed(ctx, pngs, "closure coverage"))
        parts.append("<p class=more>from metrics/closure.json and plots/closure/</p>")
    else:
        parts.append(_json_or_notice(ld, "closure"))
    oks.append(ld.ok)
    return Section("selection", "The selection function as a model, and the closure test", "".join(parts), _status(oks))


def sensitivity(ctx: Context) -> Section:
    ld = ctx.inputs.json("metrics/sensitivity.json")
    pngs = ctx.inputs.pngs("plots/sensitivity")
    csvs = ctx.inputs.pngs("plots/sensitivity", "*.csv")
    parts = [(f"<p>Completeness of arcs with SNR \u2265 {esc(fmt(ld.value.get('snr_min')))} on the {esc(ld.value.get('eval_split'))} split: "
              f"each model at each operating point beside the Phase 4d proxy (\u03b8E/PSF cuts); from metrics/sensitivity.json.</p>"
              + summaries.sensitivity_table(ld.value)) if ld.ok else _json_or_notice(ld, "sensitivity")]
    if pngs:
        parts.append(_embed(ctx, pngs, "sensitivity"))
    elif csvs:
        parts.append(_csv_tables(ctx, csvs))
    elif ld.ok:
        parts.append(notice("warn", "the sensitivity stage wrote no figure under plots/sensitivity/"))
    return Section("sensitivity", "Sensitivity sweep (Phase 4d proxy thresholds)", "".join(parts), _status([ld.ok, bool(pngs or csvs)]))


def calibration(ctx: Context) -> Section:
    parts, oks = [], []
    for arch in ctx.cfg.archs:
        parts.append(f"<h3>{esc(arch)}</h3>")
        ld = ctx.inputs.json(f"metrics/calibration/{arch}.json")
        parts.append(summaries.calibration_tables(ld.value) + f"<p class=more>from metrics/calibration/{esc(arch)}.json</p>"
                     if ld.ok else _json_or_notice(ld, f"calibration@{arch}"))
        pngs = ctx.inputs.pngs("plots/calibration", f"{arch}.png") + ctx.inputs.pngs("plots/calibration", f"{arch}_*.png") \
            + ctx.inputs.pngs(f"plots/calibration/{arch}")
        csvs = ctx.inputs.pngs("plots/calibration", f"{arch}.csv")
        if pngs:
            parts.append(_embed(ctx, pngs, f"calibration {arch}"))
        elif csvs:
            parts.append(_csv_tables(ctx, csvs))
        oks.append(ld.ok)
    return Section("calibration", "Calibration", "".join(parts), _status(oks))


def _gate_table(doc) -> str:
    rows = gate_rows(doc)
    if not rows:
        return notice("warn", "no gate results found in the file (expected a list under 'gates')")
    return summaries.gate_table(rows)


def gates(ctx: Context) -> Section:
    parts, oks = [], []
    for arch in ctx.cfg.archs:
        ld = ctx.inputs.json(f"metrics/gates/{arch}.json")
        state = gates_passed(ld.value) if ld.ok else None
        parts.append(f"<h3>{esc(arch)} {badge(state)}</h3>")
        if ld.ok:
            ext = ld.value.get("external") if isinstance(ld.value, dict) else None
            if isinstance(ext, dict):
                parts.append(notice("info", f"{arch} is an external finder ({ext.get('format')}, {ext.get('model')}). The "
                                            "data gates (core_only, metadata_only, split_integrity) test the stamps, not the "
                                            "finder; the finder gates test it on stamps like these, which a finder trained on "
                                            "other data meets for the first time: a failure says how it behaves here, and "
                                            "a score table cannot be probed (SKIP)."))
            parts.append(_gate_table(ld.value))
        else:
            parts.append(_json_or_notice(ld, f"gates@{arch}"))
        parts.append(_embed(ctx, ctx.inputs.pngs("plots/gates", f"{arch}.png") + ctx.inputs.pngs(f"plots/gates/{arch}"), f"gates {arch}"))
        oks.append(ld.ok)
    base = ctx.inputs.json("metrics/baseline.json")
    parts.append("<h3>Metadata-only leak detector (stage baseline)</h3>")
    if base.ok:
        leak = base.value.get("leak") or {}
        ci = leak.get("auc_test_ci95") or [None, None]
        parts.append(table([["test AUROC", leak.get("auc_test")], ["95% interval", f"[{fmt(ci[0])}, {fmt(ci[-1])}]"],
                            ["interval excludes 0.5", leak.get("auc_ci95_excludes_chance")], ["features", ", ".join(map(str, leak.get("features") or []))]],
                           ["", "value"], cls="kv"))
        parts.append(notice("info", "A classifier on observing conditions alone should score about 0.5: above it, injections and "
                                    "controls differ in more than the arc."))
    else:
        parts.append(_json_or_notice(base, "baseline"))
    return Section("gates", "Gates (shortcut checks)", "".join(parts), _status(oks))


def known_lenses(ctx: Context) -> Section:
    parts, oks = [], []
    for arch in ctx.cfg.archs:
        ld = ctx.inputs.json(f"metrics/known_lenses/{arch}.json")
        parts.append(f"<h3>{esc(arch)}</h3>")
        if not ld.ok:
            parts.append(_json_or_notice(ld, f"known_lenses@{arch}"))
            oks.append(False)
            continue
        doc = ld.value
        status = str(doc.get("status", "unknown")) if isinstance(doc, dict) else "unknown"
        if status == "offline":
            parts.append(notice("warn", "offline: the Legacy Survey cutout service could not be reached when the stage ran; "
                                        "no known-lens recall was measured"))
        elif status == "partial":
            parts.append(notice("warn", "partial: some cutouts could not be fetched; recall covers the fetched lenses only"))
        elif status == "not_scorable":
            parts.append(notice("warn", "not measured: this finder is a score table, which scores the pipeline's stamps "
                                        "only; its model file would be needed to score known-lens cutouts"))
        parts.append(summaries.known_lens_tables(doc) + f"<p class=more>from metrics/known_lenses/{esc(arch)}.json</p>")
        parts.append(_embed(ctx, ctx.inputs.pngs("plots/known_lenses", f"{arch}*.png"), f"known lenses {arch}"))
        oks.append(True)
    return Section("known_lenses", "Known-lens recovery", "".join(parts), _status(oks))


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def provenance(ctx: Context) -> Section:
    """params.yaml (hash and content), git commit, and the dvc.lock hashes of every data output."""
    parts = []
    pp = Path(ctx.params_path) if Path(ctx.params_path).is_absolute() else ctx.inputs.path(ctx.params_path)
    if pp.is_file():
        text = pp.read_text()
        parts.append(table([["params file", ctx.inputs.rel(pp)], ["sha256", hashlib.sha256(text.encode()).hexdigest()],
                            ["report settings", yaml.safe_dump(_plain(asdict(ctx.cfg)), default_flow_style=True, sort_keys=False).strip()]],
                           ["", "value"], cls="kv"))
        parts.append(f"<details><summary>params.yaml</summary><pre>{esc(text)}</pre></details>")
    else:
        parts.append(notice("error", f"{pp} not found"))
    g = git_state(ctx.inputs.root)
    if g["commit"]:
        dirty = "yes: uncommitted changes to " + ", ".join(g["changed"]) if g["dirty"] else "no"
        parts.append(table([["git commit", g["commit"]], ["branch", g["branch"]], ["uncommitted changes", dirty]], ["", "value"], cls="kv"))
    else:
        parts.append(notice("warn", f"git: {ctx.inputs.root} is not a git checkout; no commit recorded"))
    lock = dvc_lock_outputs(ctx.inputs.path("dvc.lock"))
    if lock.ok:
        rows = [[r["stage"], r["path"], r["hash"], r["size"], r["nfiles"]] for r in lock.value]
        parts.append("<h3>Data outputs (dvc.lock)</h3>" + (table(rows, ["stage", "path", "hash", "bytes", "files"]) if rows
                                                             else notice("warn", "dvc.lock records no outputs yet")))
        parts.append(notice("info", "dvc.lock as it stood when the report ran: stages that ran in the same `dvc repro` before the "
                                    "report are recorded; the report's own entry is left out."))
    else:
        parts.append(not_run("dvc repro", "dvc.lock") if lock.missing else notice("error", lock.error))
    return Section("provenance", "Params and data version", "".join(parts))


def gate_banner(ctx: Context) -> str:
    """The gate status of every arch, above everything else."""
    cells = []
    for arch in ctx.cfg.archs:
        ld = ctx.inputs.json(f"metrics/gates/{arch}.json")
        state = gates_passed(ld.value) if ld.ok else None
        cls = "pass" if state is True else "fail" if state is False else "unknown"
        failed = [g for g in gate_rows(ld.value) if g.get("passed") is False] if ld.ok else []
        # a verdict is only useful with its reason: which gate, its value against its threshold
        why = (" (" + "; ".join(f"{g.get('name')}: {fmt(g.get('value'), 3)} against threshold {fmt(g.get('threshold'), 3)}"
                                 for g in failed) + ")") if failed else "" if ld.ok else \
            f" (not run: {ld.path} not found)" if ld.missing else " (unreadable)"
        more = ' <a href="#gates">what each gate checks</a>' if failed else ""
        cells.append(f'<div class="{cls}"><b>{esc(arch)}</b> gates {badge(state)}{esc(why)}{more}</div>')
    return f'<div class="gatebar" id="gate-banner">{"".join(cells)}</div>'


def _pct(frac) -> str:
    """0.9587 -> '95.9 %' (a dash where the stage wrote no number)."""
    return f"{100 * float(frac):.1f} %" if isinstance(frac, (int, float)) else "\u2014"


def _snr_bin_order(label: str) -> float:
    """'<0.8' < '0.8-2' < ... < '>=20': the metrics file stores the bins with their keys sorted as text."""
    num = float(label.lstrip("<>=").split("-")[0])
    return -1.0 if label.startswith("<") else num


def population(ctx: Context) -> Section:
    """The injected population beside the LensPop forecast, and the arc-SNR mix (metrics/stamps.json
    ``population``, plots/stamps/population.png)."""
    rel = "metrics/stamps.json"
    ld = ctx.inputs.json(rel)
    if not ld.ok:
        return Section("population", "The injected population", _json_or_notice(ld, "stamps"), "notrun")
    pop = (ld.value or {}).get("population") or {}
    if not pop.get("n_injections"):
        return Section("population", "The injected population",
                       notice("info", f"{rel} describes no injected population (a real dataset without injection columns)"), "notrun")
    splits = pop.get("splits")
    where = f" of the {' and '.join(map(esc, splits))} split{'s' if len(splits) > 1 else ''}, where completeness is measured" if splits else ""
    parts = [f"<p>{esc(pop['n_injections'])} injections{where} (from {esc(rel)}, <code>population</code>). Percentiles "
             f"{esc('/'.join(map(str, pop.get('percentiles') or [])))} % of every injection, of those LensPop's cuts call discoverable "
             f"(its DES full-coadd conditions, the rendered magnification), and of the LensPop forecast of discoverable lenses "
             f"(Collett 2015); docs/population.md says how the population is drawn.</p>"]
    png = ctx.inputs.root / "plots/stamps/population.png"
    if png.exists():
        parts.append(_embed(ctx, [png], "the injected population"))
    det = (pop.get("lenspop_detectable") or {}).get("ours", {})
    rows = []
    for key, vals in pop.get("ours", {}).items():
        if key not in pop.get("lenspop", {}) or vals is None:
            continue
        f = lambda v: " / ".join(fmt(x, 2) for x in v) if v else "-"  # noqa: E731
        rows.append([key, f(vals), f(det.get(key)), f(pop["lenspop"][key])])
    if rows:
        frac = (pop.get("lenspop_detectable") or {}).get("fraction")
        parts.append(table(rows, ["quantity", "every injection", f"LensPop-discoverable ({fmt(frac, 3) if frac is not None else '-'} of them)",
                                  "LensPop forecast"]))
    mix = pop.get("arc_snr_mix")
    if mix:
        ref = pop.get("arc_snr_reference_mix_of_visible", {})
        vis = pop.get("arc_snr_mix_of_visible", {})
        parts.append("<h4>Arc peak SNR</h4>" + table(
            [[k, fmt(mix[k], 3), fmt(vis.get(k), 3) if k in vis else "-", fmt(ref.get(k), 2) if k in ref else "-"]
             for k in sorted(mix, key=_snr_bin_order)],
            ["arc SNR", "share of injections", "share of visible arcs (SNR >= 0.8)", "reference mix of visible arcs"]))
        parts.append(f"<p>{_pct(pop.get('arc_snr_below_8'))} of the injections have an arc SNR below 8 and "
                     f"{_pct(pop.get('arc_snr_at_least_20'))} at or above 20.</p>")
    train = (ld.value or {}).get("population_train") or {}
    if train.get("n_injections") and train.get("arc_snr_mix"):
        parts.append(f"<p>The train split ({esc(train['n_injections'])} injections; <code>population_train</code>) may be drawn with "
                     f"its own overrides (<code>simulate.physical_train</code>) so that a finder sees enough arcs to learn from: "
                     f"{_pct(train.get('arc_snr_below_8'))} of its arcs have SNR below 8, "
                     f"{_pct(train.get('arc_snr_at_least_20'))} at or above 20.</p>")
    return Section("population", "The injected population", "".join(parts))


def false_positives(ctx: Context) -> Section:
    """False-positive rate by kind of control at each operating threshold
    (metrics/completeness/{arch}.json ``false_positives_by_control``), and the highest-scoring
    controls of each kind (plots/completeness/{arch}/top_controls.csv, stamps from the cache)."""
    from dhs.imaging.cache import CacheError, open_split

    parts, oks = [], []
    for arch in ctx.cfg.archs:
        rel = f"metrics/completeness/{arch}.json"
        ld = ctx.inputs.json(rel)
        parts.append(f"<h3>{esc(arch)}</h3>")
        if not ld.ok:
            parts.append(_json_or_notice(ld, f"completeness@{arch}"))
            oks.append(False)
            continue
        groups = ld.value.get("false_positives_by_control") or {}
        thr = [t for t in ld.value.get("thresholds", []) if t.get("target_fpr") is not None]
        if not groups:
            parts.append(notice("info", f"{rel}: no control kinds in the score table (real data carries none)"))
            oks.append(True)
            continue
        heads = ["group", "controls"] + [f"FPR at {t['name']} [Wilson 95%] (all controls {fmt(t.get('achieved_fpr'), 4)})" for t in thr]
        rows = []
        for group, by in groups.items():
            for name, g in sorted(by.items()):
                cells = []
                for t in thr:
                    c = g.get(t["name"], {})
                    cells.append("-" if c.get("fpr") is None else
                                 f"{fmt(c['fpr'], 4)} [{fmt(c['wilson_lo'], 4)}, {fmt(c['wilson_hi'], 4)}] ({c['k']})")
                label = {"control_kind": "kind", "core_kind": "core"}.get(group, "feature")
                rows.append([f"{label}: {name}", g.get("n_controls")] + cells)
        parts.append(f"<p>From {esc(rel)}: how often each kind of control passes each threshold (k in brackets). The thresholds "
                     f"are set on all controls; a kind far above the overall rate is where the finder's false positives come "
                     f"from.</p>" + table(rows, heads))
        top_rel = f"plots/completeness/{arch}/top_controls.csv"
        top = ctx.inputs.csv(top_rel)
        if top.ok and top.value:
            try:
                split = open_split(ctx.inputs.cache_dir, ld.value.get("eval_split", "test"))
                row_of = {t: i for i, t in enumerate(split.meta["task_id"])}
                gallery_rows = []
                by_kind: dict[str, list] = {}
                for r in top.value:
                    by_kind.setdefault(r["control_kind"], []).append(r)
                for kind, rs in by_kind.items():
                    idx = [row_of[r["task_id"]] for r in rs if r["task_id"] in row_of][: ctx.cfg.gallery_n]
                    stamps = [np.asarray(split.images[i], dtype=np.float32) for i in idx]
                    caps = [f"s {float(r['score']):.3f}" for r in rs if r["task_id"] in row_of][: ctx.cfg.gallery_n]
                    if stamps:
                        gallery_rows.append((kind, list(zip(stamps, caps))))
                if gallery_rows:
                    parts.append(img(figures.gallery(gallery_rows), f"highest-scoring controls of each kind ({arch})",
                                     f"the highest-scoring controls of each kind ({top_rel}; stamps from the cache)"))
            except (CacheError, KeyError) as exc:
                parts.append(notice("warn", f"gallery of top controls: {exc}"))
        oks.append(True)
    return Section("false_positives", "False positives by kind of control", "".join(parts), _status(oks))


def _count(x) -> str:
    return f"{float(x):,.0f}" if isinstance(x, (int, float)) else "\u2014"


def _finder_words(ctx: Context, arch: str) -> str:
    """What the finder is, from its training (or import) record: size, steps, device, input."""
    ext = ctx.inputs.json(f"metrics/external/{arch}.json").value
    if isinstance(ext, dict):
        return f"{arch}: a finder trained elsewhere ({ext.get('format')} {ext.get('model')}, imported by the external stage)"
    t = ctx.inputs.json(f"metrics/train/{arch}.json").value
    if not isinstance(t, dict):
        return f"{arch} (not trained yet: metrics/train/{arch}.json not found)"
    pre = ctx.params.get("preprocess") or {}
    channels = "6-channel (stamp and host-subtracted residual)" if pre.get("input") == "raw_and_residual" else "3-channel"
    n_par = t.get("n_parameters")
    size = f"{n_par / 1e6:.2f} M parameters" if isinstance(n_par, (int, float)) and n_par >= 1e5 else f"{n_par} parameters"
    steps = t.get("steps")
    data = "batches rendered on the fly" if t.get("data") == "simulate" else f"{t.get('n_train', '?'):,} cached training stamps" \
        if isinstance(t.get("n_train"), int) else "cached training stamps"
    done = "" if t.get("completed") is not False else ", stopped before its last step"
    return (f"{arch}: {size}, {channels} input, {steps:,} steps of batch {t.get('batch_size')} on {t.get('device')} from {data}{done}"
            if isinstance(steps, int) else f"{arch}: {size}")


def _warnings(ctx: Context, arch: str, comp: dict) -> list[str]:
    """What makes this finder's numbers unreadable, said before the numbers."""
    out = []
    cal = ctx.inputs.json(f"metrics/calibration/{arch}.json").value
    if isinstance(cal, dict) and cal.get("status") == "degenerate":
        out.append(f"calibration: {cal.get('cause')}")
    auc = comp.get("auroc")
    if isinstance(auc, (int, float)) and auc < 0.6:
        out.append(f"the finder barely tells injections from controls (test AUROC {auc:.3f}): every completeness below "
                   f"measures an untrained or uninformative finder")
    t = ctx.inputs.json(f"metrics/train/{arch}.json").value
    if isinstance(t, dict) and t.get("completed") is False:
        out.append("training stopped before its last step (metrics/train: completed false)")
    return out


def result_summary(ctx: Context) -> str:
    """The result in a sentence per finder, first on the page: at the plot operating point, the
    sky-weighted completeness of all lenses and of LensPop-discoverable ones with their region-
    bootstrap intervals and effective sample sizes, the discoverable fraction, and the purity at the
    survey prevalence those imply; what the finder is; and what makes the numbers unreadable."""
    prevalence = (ctx.params.get("calibration") or {}).get("survey_prevalence")
    source = (ctx.inputs.json("metrics/stamps.json").value or {}).get("source")
    population = {"synthetic": "the simulated lens population", "hosts": "simulated arcs on real host cutouts"}.get(
        source, f"the injections of {source}" if source else "the injected population")
    items = []
    for arch in ctx.cfg.archs:
        ld = ctx.inputs.json(f"metrics/completeness/{arch}.json")
        if not ld.ok or not isinstance(ld.value, dict):
            items.append(f"<li><b>{esc(arch)}</b>: no result yet (completeness@{esc(arch)} has not run)</li>")
            continue
        d = ld.value
        name = d.get("plot_threshold") or "fpr_0.01"
        sky = (d.get("sky") or {}).get(name) or {}
        thr = (d.get("threshold_by_name") or {}).get(name) or {}
        warn = "".join(f"<br><b class=warnword>\u26a0 {esc(w)}</b>" for w in _warnings(ctx, arch, d))

        def part(c: dict, what: str) -> str:
            if not c or c.get("completeness") is None:
                return f"{what}: not measured"
            return (f"<b>{_pct(c['completeness'])}</b> [{_pct(c.get('boot_lo'))}, {_pct(c.get('boot_hi'))}] of {what} "
                    f"(n = {esc(c.get('n'))}, n<sub>eff</sub> = {_count(c.get('n_eff'))})")

        all_c, disc = sky.get("all") or {}, sky.get("discoverable") or {}
        frac = ((d.get("sky") or {}).get("discoverable_fraction") or {}).get("completeness")
        disc_what = f"LensPop-discoverable lenses ({_pct(frac)} of them)" if frac is not None else "LensPop-discoverable lenses"
        fpr = thr.get("achieved_fpr")
        purity = ""
        c = all_c.get("completeness")
        if isinstance(prevalence, (int, float)) and isinstance(fpr, (int, float)) and isinstance(c, (int, float)) and c + fpr > 0:
            p = purity_at_prevalence(c, fpr, prevalence)
            purity = f"; at a lens prevalence of {prevalence:g} that is a purity of {_pct(p)} (achieved FPR {fpr:.4f})"
        items.append(f"<li><b>{esc(_finder_words(ctx, arch))}</b>. At {esc(operating_point_label(name))} "
                     f"(score &gt; {esc(fmt(thr.get('score'), 4))}), it finds {part(all_c, esc(population) + ', as on the sky')} "
                     f"and {part(disc, disc_what)}{purity}.{warn}</li>")
    return (f'<div class="result" id="result"><h2>Result</h2><ul>{"".join(items)}</ul><p class=more>Sky-weighted completeness '
            f"from metrics/completeness/&lt;finder&gt;.json (<code>sky</code>), intervals: region bootstrap 95 %; purity from that "
            f"completeness, the achieved FPR and calibration.survey_prevalence. Every curve, gate and check is below.</p></div>")
