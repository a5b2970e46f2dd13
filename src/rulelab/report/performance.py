"""The performance page from asv results: for the newest commit, time per variant and
its ratio to naive, compile time, memory and op counts (tables and bar charts); history
across commits where there is more than one; cost against iteration count for
iterative cases."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd

from rulelab.report import figures, html
from rulelab.report.asv_results import (
    chart_selection,
    commits,
    metric_label,
    newest,
    param_columns,
    ratio_overview,
    step_param,
    time_table,
    track_table,
)
from rulelab.report.load import Bench
from rulelab.report.pages import ASV_HINT, PUBLISH_HINT, Links, case_file
from rulelab.store.vocabulary import MEASURED_AT


def _fixed(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in fixed.items() if v is not None)


def bench_summary(bench: Bench) -> str:
    """A short paragraph for the overview: what the performance page has, or how to
    produce it."""
    if bench.empty:
        return html.note(f"No benchmark results: {ASV_HINT}.", "missing")
    rows = newest(bench.results)
    n = int((rows["status"] == "ok").sum())
    machines = ", ".join(sorted(set(rows["machine"])))
    return f"<p>{html.link('performance.html', 'Performance')}: {n} measurements of the newest commit on {html.esc(machines)}.</p>"


def _machines_table(bench: Bench, rows: pd.DataFrame) -> pd.DataFrame:
    data = {}
    for m, d in rows.groupby("machine", sort=True):
        info = bench.machines.get(m, {})
        n_commits = len(commits(bench.results, m))
        data[m] = {
            "newest commit": str(d["commit"].iloc[0])[:12],
            "commit date": str(d["date"].iloc[0])[:19],
            "environment": str(d["env"].iloc[0]),
            "commits with results": str(n_commits),
            "cpu": str(info.get("cpu", "")),
            "cores": str(info.get("num_cpu", "")),
            "os": str(info.get("os", "")),
            "measurements ok / skipped / failed": " / ".join(str(int((d["status"] == s).sum())) for s in ("ok", "skipped", "failed")),
        }
    df = pd.DataFrame(data)
    df.index.name = "machine"
    return df.map(lambda v: html.Cell(v, "text"))


def _time_section(d: pd.DataFrame, params: list[str], case: str) -> list[str]:
    out = []
    table, constant = time_table(d, params)
    if table.empty:
        return out
    caption = "time per call; ratio to naive in parentheses" + (f" ({_fixed(constant)})" if constant else "")
    out.append(html.table(table, caption=caption))
    keep = ["variant"] + [p for p in ("transform", "dtype") if p in params]
    sel, fixed = chart_selection(d, params, keep)
    if not sel.empty:
        sel = sel.assign(us=sel["value"].astype(float) * 1e6)
        image = figures.bars(
            sel, group="transform" if "transform" in params else "variant", bar="variant", value="us",
            panel="dtype" if "dtype" in params else None, ylabel="\u00b5s per call", logy=True,
            title=f"{case}: time per call" + (f" ({_fixed(fixed)})" if fixed else ""),
        )
        if image:
            out.append(html.img(image, f"{case} time per call by variant", caption=f"Time per call by variant ({_fixed(fixed)})."))
    return out


def _track_section(d: pd.DataFrame, params: list[str], case: str) -> list[str]:
    out = []
    table, constant = track_table(d, params)
    if table.empty:
        return out
    caption = "tracked costs" + (f" ({_fixed(constant)})" if constant else "")
    out.append(html.details(f"{case}: {', '.join(metric_label(m, d) for m in dict.fromkeys(d['metric']))}", html.table(table, caption=caption), open_=False))
    keep = ["variant"] + [p for p in ("transform",) if p in params]
    sel, fixed = chart_selection(d, params, keep)
    zero = [m for m, g in sel.groupby("metric", sort=False) if (g["value"] == 0).all()]
    sel = sel[~sel["metric"].isin(zero)]
    if zero:
        out.append(f"<p>{html.esc(', '.join(metric_label(m, d) for m in zero))}: 0 for every variant ({html.esc(_fixed(fixed))}).</p>")
    if not sel.empty:
        labels = {m: metric_label(m, sel) for m in dict.fromkeys(sel["metric"])}
        image = figures.bars(
            sel, group="transform" if "transform" in params else "variant", bar="variant", value="value", panel="metric",
            ylabel="", logy=False, title=f"{case}: compile time, op counts and memory" + (f" ({_fixed(fixed)})" if fixed else ""),
            panel_labels=labels,
        )
        if image:
            out.append(html.img(image, f"{case} tracked costs by variant", caption=f"Tracked costs by variant ({_fixed(fixed)}); units in the panel titles."))
    return out


def _steps_section(d: pd.DataFrame, params: list[str], case: str) -> list[str]:
    steps = step_param(params)
    assert steps is not None
    keep = [steps, "variant"] + [p for p in ("transform",) if p in params]
    sel, fixed = chart_selection(d, params, keep)
    out = []
    if sel.empty:
        return out
    sel = sel.assign(line=sel["variant"].astype(str) + ((" " + sel["transform"].astype(str)) if "transform" in params else ""))
    labels = {m: metric_label(m, sel) for m in dict.fromkeys(sel["metric"])}
    image = figures.lines(
        sel, x=steps, line="line", value="value", panel="metric", xlabel=steps, ylabel="", logx=True, logy=True,
        title=f"{case}: cost against {steps}" + (f" ({_fixed(fixed)})" if fixed else ""), panel_labels=labels,
    )
    if image:
        out.append(html.img(image, f"{case} cost and memory against {steps}", caption=f"Time, memory and op counts against {steps} ({_fixed(fixed)}); units in the panel titles."))
    for (suite, group), g in d.groupby(["suite", "group"], sort=False):
        table, constant = (time_table if (g["type"] == "time").all() else track_table)(g, params)
        if not table.empty:
            out.append(html.details(f"{group} ({suite}) against {steps}", html.table(table, caption=_fixed(constant))))
    return out


def _stepped(rows: pd.DataFrame, params: Sequence[str]) -> set[str]:
    """Benchmarks among ``rows`` that take an iteration count."""
    return {b for b, g in rows.groupby("benchmark", sort=False) if step_param(param_columns(g, params)) is not None}


def _history_section(all_rows: pd.DataFrame, params: list[str], case: str, machine: str) -> list[str]:
    order = commits(all_rows, machine)
    if len(order) < 2:
        return []
    d = all_rows[(all_rows["machine"] == machine) & (all_rows["case"] == case) & (all_rows["type"] == "time")]
    d = d[~d["benchmark"].isin(_stepped(d, params))]
    ps = param_columns(d, params)
    keep = ["variant"] + [p for p in ("transform",) if p in ps]
    sel, fixed = chart_selection(d, ps, keep)
    if sel.empty:
        return []
    position = {c: i for i, c in enumerate(order)}
    sel = sel.assign(position=sel["commit"].map(position), us=sel["value"].astype(float) * 1e6)
    image = figures.lines(
        sel, x="position", line="variant", value="us", panel="transform" if "transform" in ps else None,
        xlabel="commit", ylabel="\u00b5s per call", logy=True, xlabels=[c[:8] for c in order],
        title=f"{case}: time per call across commits" + (f" ({_fixed(fixed)})" if fixed else ""),
    )
    return [html.img(image, f"{case} time across commits", caption=f"Time per call at each commit with results, oldest first ({_fixed(fixed)}).")] if image else []


def timings_section(timings: pd.DataFrame) -> list[str]:
    """The quick in-process timings ``rulelab study`` stores in its run: time per call and
    the ratio to naive per case, variant and transform, with compile time, op counts and
    temporary memory."""
    if timings.empty:
        return []
    d = timings.copy()
    d["time_us"] = d["time_s"] * 1e6
    ok = d[d["status"] == "ok"]
    first = d.iloc[0]
    out = [
        "<h2>Quick timings (rulelab study)</h2>",
        f"<p>Measured in process with the benchmarks' own code on {int(first['size'])} {html.esc(first['dtype'])} points, "
        f"backend {html.esc(first['backend'])}: best of 3 samples. asv results (below, when present) are the tracked numbers.</p>",
    ]
    if MEASURED_AT in d:
        taken = d[MEASURED_AT].dropna().astype(str)
        if not taken.empty:
            out.append(f"<p>Taken between {html.esc(taken.min())} and {html.esc(taken.max())} (column <code>{MEASURED_AT}</code>): a timing is "
                       "kept until its variant's code, the versions or the backend change; <code>rulelab study --retime</code> takes them all again.</p>")
    ratio = ok.pivot_table(index=["case", "variant"], columns="transform", values="ratio_to_naive", aggfunc="first")
    ratio.columns = [f"{c}: time / naive" for c in ratio.columns]
    cols = ["case", "variant", "transform", "status", "time_us", "compile_ms", "jaxpr_eqns", "hlo_ops", "temp_bytes", MEASURED_AT, "message"]
    out.append(html.table(ratio.round(2), cls="facts", caption="time per call relative to the naive variant of the same case"))
    out.append(html.details("every timing", html.table(d[[c for c in cols if c in d]].round(3), index=False)))
    image = figures.hbars(ok, group="case", bar="variant", value="time_us", panel="transform", xlabel="µs per call", title="time per call", logx=True)
    if image:
        out.append(html.img(image, "time per call per variant", caption="Time per call, log scale, one panel per transform; cases sorted by their median time, slowest first."))
    return out


def performance_page(bench: Bench, links: Links, case_pages: Collection[str] = (), timings: pd.DataFrame | None = None) -> str:
    """The whole performance page (or, without results, what to run)."""
    body: list[str] = []
    if timings is not None:
        body.extend(timings_section(timings))
    for p in bench.problems:
        body.append(html.note(html.esc(p), "warn"))
    if links.dashboard:
        body.append(f"<p>asv's own dashboard (every benchmark across commits): {html.link(links.dashboard, 'reports/asv/index.html')}.</p>")
    else:
        body.append(html.note(f"No asv dashboard here yet: {PUBLISH_HINT}.", "missing"))
    if bench.empty:
        body.append(html.note(f"No benchmark results: {ASV_HINT}.", "missing"))
        return html.page("rulelab performance", "\n".join(body), nav=links.nav())
    rows = newest(bench.results)
    params = list(bench.param_names)
    body.append("<h2>Machines and commits</h2>")
    body.append(html.table(_machines_table(bench, rows), cls="facts"))
    for machine, mrows in rows.groupby("machine", sort=True):
        if rows["machine"].nunique() > 1:
            body.append(f"<h2>Machine {html.esc(machine)}</h2>")
        overview, fixed = ratio_overview(mrows, params)
        if not overview.empty:
            body.append("<h2>Time relative to naive</h2>")
            body.append(html.table(overview, cls="matrix", caption="time per call / naive's" + (f" ({_fixed(fixed)})" if fixed else "") + "; hover for the time"))
        for case in dict.fromkeys(mrows["case"]):
            c = mrows[mrows["case"] == case]
            title = html.link(case_file(case), case) if case in case_pages else html.esc(case)
            section = [f'<h2 id="perf-{html.esc(case)}">{title}</h2>']
            step_names = _stepped(c, params)
            for bench_name, g in c[~c["benchmark"].isin(step_names) & (c["type"] == "time")].groupby("benchmark", sort=False):
                section += _time_section(g, param_columns(g, params), case)
            tracks = c[~c["benchmark"].isin(step_names) & (c["type"] != "time")]
            for (_suite, _group), g in tracks.groupby(["suite", "group"], sort=False):
                section += _track_section(g, param_columns(g, params), case)
            stepped = c[c["benchmark"].isin(step_names)]
            if not stepped.empty:
                section += _steps_section(stepped, param_columns(stepped, params), case)
            section += _history_section(bench.results, params, case, machine)
            if len(section) > 1:
                body.extend(section)
    return html.page("rulelab performance", "\n".join(body), nav=links.nav())
