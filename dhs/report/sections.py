"""Sections across stages: headline table, dataset accounting, galleries, training curves, ROC.
One function per section, each returning a ``Section`` that is never empty: a missing input
yields "not run: <stage> (<path> not found)". Numbers come from the stages' metrics and plots,
named beside them; the galleries draw stamps from the cache and caption them with their scores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dhs.imaging.cache import CacheError, open_split
from dhs.report import figures
from dhs.report.context import Context
from dhs.report.html import Section, badge, esc, fmt, img, not_run, notice, table
from dhs.report.sources import find_number, gates_passed


def problem(text: str) -> str:
    """A per-arch problem string ('not run: ...' or 'error: ...') as a notice."""
    return notice("notrun" if text.startswith("not run") else "error", text)


def _rate_cell(c: dict) -> str:
    """A headline cell of metrics/completeness: completeness [Wilson 95%] and k/n."""
    if not c or not c.get("n"):
        return "no injections"
    boot = (f"<br><span class=more>region bootstrap [{esc(fmt(c.get('boot_lo'), 3))}, {esc(fmt(c.get('boot_hi'), 3))}]</span>"
            if c.get("boot_lo") is not None else "")
    return (f"{esc(fmt(c.get('completeness'), 3))} [{esc(fmt(c.get('wilson_lo'), 3))}, {esc(fmt(c.get('wilson_hi'), 3))}]"
            f"<br><span class=more>{esc(c.get('k'))}/{esc(c.get('n'))}</span>{boot}")


def data_banner(ctx: Context) -> str:
    """What the numbers are measured on: a simulated survey (which population) or real stamps."""
    st = ctx.inputs.json("metrics/stamps.json").value or {}
    source = st.get("source")
    if source is None:
        return notice("warn", "Data source unknown: metrics/stamps.json is missing (stage stamps has not run).")
    n = sum(((st.get("cache") or {}).get("rows_by_split") or {}).values())
    if source == "synthetic":
        sim = ctx.params.get("simulate") or {}
        pop = sim.get("population", "physical")
        extra = " (the train split drawn with simulate.physical_train)" if pop == "physical" and sim.get("physical_train") else ""
        return notice("info", f"Data: SIMULATED survey, {n:,} stamps, population {pop}{extra} "
                              f"(docs/population.md); these curves are the selection function of the finder on that "
                              f"population, not yet on the sky (the known-lens section is the real-data check).")
    if source == "hosts":
        return notice("info", f"Data: REAL host cutouts ({n:,} cached, stamps.hosts) with SIMULATED arcs painted in "
                              f"(docs/real-hosts.md): the hosts, their noise and their neighbours are the sky's; the lensed "
                              f"sources are the simulator's population.")
    return notice("info", f"Data: real cutouts from {source} ({n:,} cached) with the arcs injected in them upstream "
                          f"(the Phase 4c stamp contract: arcs simulated, hosts and noise real).")


def _threshold_note(t: dict) -> str:
    warn = " \u26a0 low count" if t.get("low_count") else ""
    return (f"<span class=more>score &gt; {esc(fmt(t.get('score'), 4))}; {esc(t.get('n_controls_above'))}/{esc(t.get('n_controls'))} "
            f"controls above{warn}</span>")


def ece_after(ctx: Context, arch: str) -> tuple[str, float] | None:
    """(key, value) of the ECE after calibration in the calibration stage's JSON: the key naming
    'ece' with most of after/calibrated/scaled/temperature, equal-width ('uniform') bins, the split."""
    doc = ctx.inputs.json(f"metrics/calibration/{arch}.json").value
    if doc is None:
        return None
    return find_number(doc, ["ece"], prefer=["after", "calibrated", "scaled", "temperature", "uniform", ctx.cfg.split],
                       exclude=["before", "raw", "uncal", "bins", "curve"])


def fpr_thresholds(doc: dict) -> list[dict]:
    """The FPR thresholds (not the fixed-score ones) of a completeness metrics file, in its order."""
    return [t for t in (doc.get("thresholds") or []) if isinstance(t, dict) and t.get("target_fpr") is not None]


def completeness_metrics(ctx: Context) -> tuple[dict[str, dict], dict[str, str]]:
    """Per arch, metrics/completeness/{arch}.json, or why it is not there."""
    docs, problems = {}, {}
    for arch in ctx.cfg.archs:
        rel = f"metrics/completeness/{arch}.json"
        ld = ctx.inputs.json(rel)
        if ld.ok and isinstance(ld.value, dict):
            docs[arch] = ld.value
        else:
            problems[arch] = f"not run: completeness@{arch} ({rel} not found)" if ld.missing else f"error: {ld.error or rel + ': unreadable'}"
    return docs, problems


def headline(ctx: Context) -> Section:
    """The archs side by side: AUROC, TPR at each operating FPR, completeness at theta_E/PSF >= 1
    (metrics/completeness), ECE after calibration (metrics/calibration), gate status (metrics/gates)."""
    docs, problems = completeness_metrics(ctx)
    fprs = list(dict.fromkeys(t["target_fpr"] for d in docs.values() for t in fpr_thresholds(d)))
    heads = ["arch", "controls / injections", "AUROC"]
    heads += [f"TPR @ FPR {x:g}" for x in fprs]
    heads += [f"completeness \u03b8E/PSF \u2265 1 @ FPR {x:g}" for x in fprs]
    heads += ["ECE after calibration", "gates"]
    rows, notes = [], []
    for arch in ctx.cfg.archs:
        gdoc = ctx.inputs.json(f"metrics/gates/{arch}.json").value
        gate = badge(gates_passed(gdoc)) if gdoc is not None else badge(None)
        ece = ece_after(ctx, arch)
        ece_cell = (f"{esc(fmt(ece[1], 3))}<br><span class=more>metrics/calibration/{esc(arch)}.json: {esc(ece[0])}</span>" if ece
                    else "<span class=more>not run: calibration@" + esc(arch) + "</span>")
        d = docs.get(arch)
        if d is None:
            notes.append(problem(problems[arch]))
            rows.append([esc(arch), "\u2014", "\u2014", *["\u2014"] * (2 * len(fprs)), ece_cell, gate])
            continue
        by_fpr = {t["target_fpr"]: t for t in fpr_thresholds(d)}
        head = d.get("headline") or {}
        tpr, res = [], []
        for x in fprs:
            t = by_fpr.get(x)
            h = head.get(t["name"], {}) if t else {}
            tpr.append(_rate_cell((h.get("overall") or {}).get("all") or {}) + "<br>" + _threshold_note(t) if t else "\u2014")
            res.append(_rate_cell((h.get("theta_e_over_psf_ge_1") or {}).get("all") or {}) if t else "\u2014")
        rows_info = d.get("rows") or {}
        rows.append([esc(arch), f"{esc(rows_info.get('controls', '?'))} / {esc(rows_info.get('injections', '?'))}", esc(fmt(d.get("auroc"), 4)),
                     *tpr, *res, ece_cell, gate])
    body = data_banner(ctx) + table(rows, heads, raw_cols=range(len(heads)))
    srcs = ", ".join(f"metrics/completeness/{a}.json" for a in docs) or "no metrics/completeness file yet"
    split = next((d.get("eval_split") for d in docs.values() if d.get("eval_split")), ctx.cfg.split)
    body += notice("info", f"From {srcs} (stage completeness, {split} split); ECE from metrics/calibration, gates from "
                           f"metrics/gates. Each threshold is set on that split's controls at the target FPR (a stamp passes "
                           f"when score > threshold); brackets are Wilson 95% intervals, with the region bootstrap (the interval to quote: "
                           f"it carries the sky-region clustering, docs/uncertainties.md) below; \u26a0 low count: FPR x controls < 10, "
                           f"so a handful of controls set the threshold. Never read AUROC alone.")
    status = "ok" if docs else "notrun"
    return Section("headline", "Headline: architectures on the same test set", body + "".join(notes), status)


def accounting(ctx: Context) -> Section:
    """Rows per split and label, rejections by reason, disjointness, rows scored per arch."""
    ld = ctx.inputs.json("metrics/stamps.json")
    parts: list[str] = []
    status = "ok"
    if not ld.ok:
        parts.append(not_run("stamps", ld.path) if ld.missing else notice("error", ld.error))
        status = "notrun"
    else:
        m = ld.value
        by = m.get("by_split_label") or {}
        reasons = sorted({r for s in by.values() for lab in s.values() for r in (lab.get("rejected") or {})})
        rows, tot_used, tot_rej = [], 0, 0
        for split in sorted(by, key=lambda s: {"train": 0, "val": 1, "test": 2}.get(s, 9)):
            for label, v in sorted(by[split].items()):
                rej = v.get("rejected") or {}
                used, nrej = int(v.get("used", 0)), int(sum(rej.values()))
                tot_used, tot_rej = tot_used + used, tot_rej + nrej
                rows.append([split, label, used + nrej, used, nrej, *[rej.get(r, 0) for r in reasons]])
        rows.append(["all", "all", tot_used + tot_rej, tot_used, tot_rej, *[(m.get("rejected_by_reason") or {}).get(r, 0) for r in reasons]])
        parts.append("<h3>Rows per split and label</h3>")
        parts.append(table(rows, ["split", "label", "read", "used", "rejected", *[f"rejected: {r}" for r in reasons]]))
        read, used, rej = m.get("rows_read"), m.get("rows_used"), m.get("rows_rejected")
        balanced = isinstance(read, int) and isinstance(used, int) and isinstance(rej, int) and read == used + rej
        facts = [["rows read", read], ["rows used", used], ["rows rejected", rej],
                 ["read = used + rejected", "yes" if balanced else "NO: rows are unaccounted for"],
                 ["regions disjoint across splits", m.get("region_disjoint")], ["hosts disjoint across splits", m.get("host_disjoint")],
                 ["source", m.get("source")]]
        for split, n in sorted((m.get("n_regions_by_split") or {}).items()):
            facts.append([f"regions in {split}", n])
        parts.append(table(facts, ["check", "value"], cls="kv"))
        if not balanced:
            parts.append(notice("error", "rows_read != rows_used + rows_rejected: some rows were dropped without a reason"))
            status = "error"
        for key in ("region_disjoint", "host_disjoint"):
            if m.get(key) is False:
                parts.append(notice("error", f"{key} is false: the same sky region or host appears in more than one split (leakage)"))
                status = "error"
    infer_rows = []
    for arch in ctx.cfg.archs:
        d = ctx.inputs.json(f"metrics/infer/{arch}.json").value
        if d is None:
            infer_rows.append([arch, "not run", "\u2014", "\u2014"])
            continue
        for split, c in (d.get("by_split") or {}).items():
            infer_rows.append([arch, split, c.get("scored"), f"{c.get('injection')} / {c.get('control')}"])
    parts.append("<h3>Rows scored (stage infer)</h3>")
    parts.append(table(infer_rows, ["arch", "split", "scored", "injections / controls"]))
    return Section("accounting", "Dataset accounting", "".join(parts), status)


def _gallery_captions(ctx: Context, ids: list[str], with_theta: bool) -> list[str]:
    """'theta_E, theta_E/PSF' (injections) and the score of every arch that scored the stamp."""
    primary = ctx.scores[next(iter(ctx.scores))].set_index("task_id")
    per_arch = [df.set_index("task_id")["score"] for df in ctx.scores.values()]
    caps = []
    for tid in ids:
        lines = []
        if with_theta:
            row = primary.loc[tid]
            tp = row["theta_e_over_psf"] if "theta_e_over_psf" in row else np.nan
            lines.append(f"\u03b8E {row['theta_e_arcsec']:.2f}\u2033  \u03b8E/PSF {tp:.2f}")
        lines.append("s " + " ".join(f"{s.loc[tid]:.3f}" if tid in s.index else "-" for s in per_arch))
        caps.append("\n".join(lines))
    return caps


def galleries(ctx: Context) -> Section:
    """grz composites of injections across theta_E bins and of controls, with their scores."""
    if not ctx.scores:
        reasons = [problem(ctx.score_errors.get(a) or a) for a in ctx.cfg.archs]
        return Section("galleries", "Example galleries", notice("notrun", "not run: no score table to pick stamps from") + "".join(reasons), "notrun")
    try:
        split = open_split(ctx.inputs.cache_dir, ctx.cfg.split)
    except CacheError as exc:
        return Section("galleries", "Example galleries", not_run("stamps", ctx.inputs.rel(ctx.inputs.cache_dir / ctx.cfg.split)) +
                       notice("info", str(exc)), "notrun")
    primary_arch = next(iter(ctx.scores))
    sc = ctx.scores[primary_arch]
    sc = sc[(sc["split"] == ctx.cfg.split) & sc["task_id"].isin(split.meta["task_id"])]
    if sc.empty:
        have = sorted(map(str, ctx.scores[primary_arch]["split"].unique()))
        return Section("galleries", "Example galleries", notice("error", f"error: {ctx.scores_rel(primary_arch)} holds no "
                       f"{ctx.cfg.split!r} rows (splits present: {have}); rerun infer with that split") +
                       "".join(problem(e) for e in ctx.score_errors.values()), "error")
    row_of = pd.Series(np.arange(len(split.meta)), index=split.meta["task_id"].to_numpy())
    rng = np.random.default_rng(ctx.cfg.seed)
    n = ctx.cfg.gallery_n

    def stamps(ids: list[str]) -> list[np.ndarray]:
        idx = row_of.loc[ids].to_numpy()
        order = np.argsort(idx)
        got = np.asarray(split.images[idx[order]], dtype=np.float32)
        out = np.empty_like(got)
        out[order] = got
        return list(out)

    def pick(df: pd.DataFrame, k: int) -> pd.DataFrame:
        return df.iloc[np.sort(rng.choice(len(df), size=min(k, len(df)), replace=False))] if len(df) else df

    inj = sc[(sc["label"] == 1) & np.isfinite(pd.to_numeric(sc.get("theta_e_arcsec"), errors="coerce"))] if "theta_e_arcsec" in sc else sc.iloc[:0]
    ctl = sc[sc["label"] == 0]
    parts = [f"<p>Scores under each stamp (s): {esc(', '.join(ctx.scores))}, in that order (from "
             f"{esc(', '.join(ctx.scores_rel(a) for a in ctx.scores))}); stamps from "
             f"{esc(ctx.inputs.rel(ctx.inputs.cache_dir / ctx.cfg.split))}, composites z\u2192R, r\u2192G, g\u2192B with an asinh stretch.</p>"]
    parts += [problem(e) for e in ctx.score_errors.values()]
    if len(inj):
        edges = np.linspace(inj["theta_e_arcsec"].min(), inj["theta_e_arcsec"].max() + 1e-9, ctx.cfg.gallery_theta_bins + 1)
        rows = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            b = pick(inj[(inj["theta_e_arcsec"] >= lo) & (inj["theta_e_arcsec"] < hi)], n).sort_values("theta_e_arcsec")
            ids = b["task_id"].tolist()
            if ids:
                rows.append((f"\u03b8E {lo:.2f}-{hi:.2f}\u2033", list(zip(stamps(ids), _gallery_captions(ctx, ids, True)))))
        parts.append("<h3>Injections across \u03b8E</h3>" + img(figures.gallery(rows), "gallery of injections across theta_E",
                                                               f"{n} random {ctx.cfg.split} injections per \u03b8E bin"))
    else:
        parts.append(notice("warn", f"no injections with theta_e_arcsec in the {ctx.cfg.split} scores of {primary_arch}"))
    if len(ctl):
        rand = pick(ctl, n)["task_id"].tolist()
        top = ctl.nlargest(n, "score")["task_id"].tolist()
        rows = [("random controls", list(zip(stamps(rand), _gallery_captions(ctx, rand, False)))),
                (f"highest-scoring\ncontrols ({primary_arch})", list(zip(stamps(top), _gallery_captions(ctx, top, False))))]
        parts.append("<h3>Controls</h3>" + img(figures.gallery(rows), "gallery of controls",
                                               "random controls, and the controls that score highest (the false positives that set the thresholds)"))
    else:
        parts.append(notice("warn", f"no controls in the {ctx.cfg.split} scores of {primary_arch}"))
    parts.append(_visible_arcs(ctx, primary_arch, inj, split, row_of, stamps, pick))
    return Section("galleries", "Example galleries", "".join(parts))


def _plot_threshold(ctx: Context, arch: str) -> tuple[str, float] | str:
    """(name, score) of the threshold the completeness curves are drawn at, or why there is none."""
    rel = f"metrics/completeness/{arch}.json"
    ld = ctx.inputs.json(rel)
    if not ld.ok:
        return ld.error or f"not run: completeness@{arch} ({rel} not found)"
    name = ld.value.get("plot_threshold")
    for t in ld.value.get("thresholds") or []:
        if isinstance(t, dict) and t.get("name") == name and isinstance(t.get("score"), (int, float)):
            return str(name), float(t["score"])
    return f"{rel} names no plot threshold with a score (plot_threshold: {name!r})"


def _arcs_alone(ctx: Context, ids: list[str]) -> list[np.ndarray] | None:
    """The noise-free arcs of these injections, rendered again from the simulated survey's own rows
    (the stamps stage's path, so each is the arc inside the cached stamp); None where the stamps
    are not the simulated survey's."""
    if (ctx.inputs.json("metrics/stamps.json").value or {}).get("source") != "synthetic" or not ids:
        return None
    import torch

    from dhs.simulate.config import SimConfig
    from dhs.simulate.fused import set_compile_mode
    from dhs.simulate.population import sample_population
    from dhs.simulate.survey import render_noise_free

    cfg = SimConfig.from_params(dict(ctx.params["simulate"], device="cpu"))
    set_compile_mode("off")
    pop = sample_population(cfg).set_index("task_id")
    if not set(ids) <= set(pop.index):
        return None
    rows = pop.loc[ids].reset_index()
    return list(render_noise_free(rows, cfg, torch.device("cpu")).arc.float().numpy())


def _visible_arcs(ctx: Context, arch: str, inj: pd.DataFrame, split, row_of: pd.Series, stamps, pick) -> str:
    """Arcs a person sees (LensPop-discoverable: integrated S/N > 20, resolved, magnified; where the
    scores carry no such column, arc SNR >= report.gallery_min_arc_snr) that the primary arch
    misses and finds at the plot threshold; under each, the arc alone (noise-free, for the simulated
    survey) and the stamp as the finder receives it (after the ``preprocess`` normalisation and
    host removal, in noise units). What separates the two rows is what the finder has learned a
    lens to be."""
    from dhs.models.loader import NormConfig, normalize   # torch: only where this gallery is drawn
    from dhs.params import ParamsError
    import torch

    head = "<h3>Visible arcs: missed and found</h3>"
    snr_min = ctx.cfg.gallery_min_arc_snr
    thr = _plot_threshold(ctx, arch)
    if isinstance(thr, str):
        return head + notice("notrun", f"not drawn: {thr}")
    try:
        norm = NormConfig.from_params(ctx.params.get("preprocess"), source=ctx.params_path)
    except ParamsError as exc:
        return head + notice("error", f"not drawn: {exc}")
    name, score = thr
    if "discoverable" in inj.columns and "arc_snr_int" in inj.columns:
        vis = inj[pd.to_numeric(inj["discoverable"], errors="coerce") == 1]
        snr_col, which = "arc_snr_int", "LensPop-discoverable injections (integrated S/N > 20, resolved, magnified)"
    elif "arc_snr" in inj.columns:
        vis = inj[pd.to_numeric(inj["arc_snr"], errors="coerce") >= snr_min]
        snr_col, which = "arc_snr", f"injections with arc SNR >= {snr_min:g}"
    else:
        return head + notice("info", f"not drawn: {ctx.scores_rel(arch)} has no arc_snr column (real injections may not carry one)")
    if vis.empty:
        return head + notice("info", f"no {ctx.cfg.split} {which} for {arch}")
    stats = split.norm_stats(norm.annulus_inner_frac, norm.annulus_outer_frac)

    def view(ids: list[str], cubes: list[np.ndarray]) -> list[np.ndarray]:
        idx = row_of.loc[ids].to_numpy()
        st = torch.from_numpy(stats[idx]) if stats is not None else None
        return list(normalize(torch.from_numpy(np.stack(cubes)), norm, st)[:, -3:].numpy())   # the host-subtracted view

    found = vis["score"] > score
    picked = [(what, sel, pick(sel, ctx.cfg.gallery_n).sort_values(snr_col)) for what, sel in (("missed", vis[~found]), ("found", vis[found]))]
    picked = [(what, sel, b) for what, sel, b in picked if len(b)]
    # the arcs of both rows rendered in one pass over the survey's population (drawing it is the cost)
    every = [t for _, _, b in picked for t in b["task_id"]]
    arcs_all = _arcs_alone(ctx, every)
    arc_of = dict(zip(every, arcs_all)) if arcs_all is not None else None
    rows = []
    for what, sel, b in picked:
        ids = b["task_id"].tolist()
        caps = [f"S/N {getattr(r, snr_col):.0f}  \u03b8E/PSF {r.theta_e_over_psf:.2f}\ns {r.score:.3f}" for r in b.itertuples()]
        cubes = stamps(ids)
        rows.append((f"{what}\n{len(sel)} of {len(vis)}", list(zip(cubes, caps))))
        if arc_of is not None:
            rows.append(("the arc alone\n(noise-free)", [(arc_of[t], "") for t in ids]))
        rows.append(("as the finder\nsees them", [(v, "") for v in view(ids, cubes)], figures.finder_view_rgb))
    alone = arc_of is not None
    caption = (f"{ctx.cfg.split} {which} at {name} (score > {score:.4f}): {arch} misses {int((~found).sum())} and finds "
               f"{int(found.sum())} of {len(vis)}; {ctx.cfg.gallery_n} at random per row, ordered by {snr_col}; under each"
               + (", the injected arc alone (rendered again without host, field or noise, same stretch)," if alone else "")
               + f" the same stamp as the finder receives it (preprocess: {norm.mode}, host removal "
               f"{'on' if norm.radial_profile_subtract else 'off'}; z, r, g as R, G, B "
               f"from {figures.FINDER_VIEW_RANGE[0]:g} to {figures.FINDER_VIEW_RANGE[1]:g} noise units)")
    return head + img(figures.gallery(rows), f"visible arcs {arch} misses and finds at {name}", caption)


def _curves(ctx: Context, arch: str) -> tuple[dict, str]:
    """Training curves from dvclive's TSVs, else from the train metrics' epoch history."""
    base = f"dvclive/{arch}/plots/metrics"
    c = {}
    for key, rel in (("train_loss", "train/loss.tsv"), ("val_loss", "val/loss.tsv"), ("val_auc", "val/auc.tsv"),
                     ("val_loss_selected", "val/loss_selected.tsv"), ("val_auc_selected", "val/auc_selected.tsv")):
        ld = ctx.inputs.tsv_xy(f"{base}/{rel}")
        if ld.ok and ld.value[0]:
            c[key] = ld.value
    if c:
        return c, f"{base}/"
    doc = ctx.inputs.json(f"metrics/train/{arch}.json").value or {}
    hist = [h for h in doc.get("history") or [] if isinstance(h, dict) and "step" in h]
    for key in ("train_loss", "val_loss", "val_auc", "val_loss_selected", "val_auc_selected"):
        pts = [(h["step"], h[key]) for h in hist if isinstance(h.get(key), (int, float))]
        if pts:
            c[key] = ([p[0] for p in pts], [p[1] for p in pts])
    return c, f"metrics/train/{arch}.json history"


def training(ctx: Context) -> Section:
    curves, rows, parts, sources, speed, external = {}, [], [], [], [], []
    for arch in ctx.cfg.archs:
        c, src = _curves(ctx, arch)
        if c:
            curves[arch] = c
            sources.append(f"{arch}: {src}")
        ext = ctx.inputs.json(f"metrics/external/{arch}.json").value
        if isinstance(ext, dict):   # trained elsewhere: what was checked when it was imported
            external.append([arch, ext.get("format"), ext.get("model"), str(ext.get("model_sha256", ""))[:16],
                             ext.get("input_shape"), ext.get("output_shape"), ext.get("rows"), f"metrics/external/{arch}.json"])
            continue
        doc = ctx.inputs.json(f"metrics/train/{arch}.json").value
        if doc is None:
            parts.append(not_run(f"train@{arch}", f"metrics/train/{arch}.json"))
            continue
        best, test = doc.get("best") or {}, doc.get("test_at_best") or {}
        rows.append([arch, best.get("epoch"), best.get("step"), best.get("auc"), best.get("loss"), test.get("auc"), test.get("n"),
                     doc.get("n_parameters"), doc.get("steps"), doc.get("device"), doc.get("world_size"), doc.get("completed")])
        # the timing of the run that trained the weights, beside the deterministic metrics
        rate = ctx.inputs.json(f"metrics/train/{arch}.throughput.json").value or {}
        pct = rate.get("fraction_of_peak")
        speed.append([arch, rate.get("images_per_s", "not recorded"), rate.get("train_gflop_per_image"), rate.get("achieved_tflops"),
                      f"{pct:.1%}" if isinstance(pct, (int, float)) else "no peak known" if rate else None,
                      rate.get("device_name"), rate.get("steps_timed"), f"metrics/train/{arch}.throughput.json"])
    body = ""
    if curves:
        body += img(figures.training_figure(curves), "training curves", "sources: " + "; ".join(sources))
    if rows:
        body += table(rows, ["arch", "best epoch", "best step", "val AUROC (what it is trained on)", "val loss (same)",
                             "test AUROC at best (same)", "test n", "parameters", "steps", "device", "processes", "completed"])
        body += notice("info", "The finder is trained, selected and judged here on what it is taught: every control against the "
                               "injections above train.min_arc_snr (the arcs a person can see). The figure draws that AUROC (solid) "
                               "beside the AUROC over every val injection (dotted), most of which are invisible by design: the "
                               "second is lower and measures the population, not the training.")
        body += "<h4>Throughput of the run that trained the weights</h4>" + table(
            speed, ["arch", "images/s", "GFLOP per training image", "TFLOP/s", "of the GPU's bf16 peak", "device", "steps timed", "source"])
    if external:
        body += "<h4>Finders trained elsewhere (stage external: checked against their input spec)</h4>" + table(
            external, ["finder", "format", "model file", "sha256 (first 16)", "input shape checked", "output shape", "table rows",
                       "source"])
    done = len(rows) + len(external)
    status = "ok" if done and done == len(ctx.cfg.archs) else "partial" if done else "notrun"
    return Section("training", "Training curves", body + "".join(parts), status)


def roc(ctx: Context) -> Section:
    """The ROC each completeness stage wrote (plots/roc/{arch}.csv) and the TPR at each operating
    FPR from its metrics (metrics/completeness/{arch}.json)."""
    docs, problems = completeness_metrics(ctx)
    curves, nctl, parts, rows = {}, {}, [], []
    for arch, d in docs.items():
        rel = f"plots/roc/{arch}.csv"
        ld = ctx.inputs.csv(rel)
        if not ld.ok or not ld.value:
            parts.append(problem(f"not run: completeness@{arch} ({rel} not found)" if ld.missing else f"error: {ld.error or rel + ' is empty'}"))
        else:
            try:
                f = np.array([float(r["fpr"]) for r in ld.value])
                tp = np.array([float(r["tpr"]) for r in ld.value])
            except (KeyError, ValueError) as exc:
                parts.append(problem(f"error: {rel}: {exc}"))
            else:
                curves[arch] = (f, tp, float(d.get("auroc", float("nan"))))
                nctl[arch] = int((d.get("rows") or {}).get("controls") or 0)
        head = d.get("headline") or {}
        for t in fpr_thresholds(d):
            c = ((head.get(t["name"]) or {}).get("overall") or {}).get("all") or {}
            rows.append([arch, t["target_fpr"], t.get("score"), t.get("n_controls"), t.get("n_controls_above"), t.get("achieved_fpr"),
                         "yes" if t.get("low_count") else "no", f"{c.get('k')}/{c.get('n')}", c.get("completeness"),
                         f"[{fmt(c.get('wilson_lo'), 3)}, {fmt(c.get('wilson_hi'), 3)}]"])
    if curves:
        fprs = sorted({t["target_fpr"] for d in docs.values() for t in fpr_thresholds(d)}) or [0.01]
        parts.insert(0, img(figures.roc_figure(curves, fprs, nctl), "ROC curves",
                            f"from {', '.join(f'plots/roc/{a}.csv' for a in curves)} (AUROC from metrics/completeness); "
                            f"dashed: the operating FPRs"))
    if rows:
        parts.append("<h3>TPR at fixed FPR</h3>" + table(rows, ["arch", "target FPR", "threshold (score >)", "n_controls", "controls above",
                                                               "achieved FPR", "low count", "recovered", "TPR", "Wilson 95%"]) +
                     notice("info", f"From {', '.join(f'metrics/completeness/{a}.json' for a in docs)}."))
    parts += [problem(problems[a]) for a in ctx.cfg.archs if a in problems]
    return Section("roc", "ROC and TPR at fixed FPR", "".join(parts), "ok" if curves else "notrun")
