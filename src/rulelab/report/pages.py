"""The accuracy pages: the overview (index), one page per case, and the comparison of
two runs. Each function returns a complete HTML document as text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from rulelab.report import figures, html
from rulelab.report.caseinfo import CaseInfo
from rulelab.report.findings import Finding
from rulelab.report.load import RUN, Accuracy, RunInfo
from rulelab.report.styles import CLASS_LABELS
from rulelab.report.tables import (
    DTYPE_ORDER,
    arg_label,
    blame_table,
    blocks,
    compare_matrix,
    facts_table,
    matrix,
    ordered,
    summary_groups,
    summary_table,
    support_matrix,
    unsettled_table,
    variant_order,
    worst_table,
)
from rulelab.report.verdict import verdict_table
from rulelab.store.vocabulary import COMPLETE, RUNNING, Bucket, Status, table_file

SWEEP_HINT = "run an accuracy sweep, e.g. <code>rulelab sweep quick</code> (or <code>rulelab study</code> for sweep, benchmarks and report in one go), then <code>rulelab report</code>"
ASV_HINT = (
    "run the benchmarks: <code>asv run --python=same --quick --set-commit-hash $(git rev-parse HEAD)</code> "
    "(with <code>--python=same</code> asv keeps results only when given the commit), or <code>asv run --quick</code>, "
    "then <code>rulelab report</code>"
)
PUBLISH_HINT = "<code>asv publish</code> writes asv's own dashboard to <code>reports/asv/</code>"

FINDINGS_PER_CASE = 3
"""Findings listed per case on the overview (the most severe); the rest are on the case
pages."""


@dataclass(frozen=True)
class Links:
    """Which pages exist next to the one being written (for the navigation bar)."""

    performance: bool = True
    compare: bool = False
    dashboard: str = ""

    def nav(self) -> list[tuple[str, str]]:
        out = [("index.html", "accuracy overview")]
        if self.performance:
            out.append(("performance.html", "performance"))
        if self.compare:
            out.append(("compare.html", "comparison of two runs"))
        if self.dashboard:
            out.append((self.dashboard, "asv dashboard"))
        return out


def case_file(case: str) -> str:
    """File name of a case's page."""
    return "case-" + re.sub(r"[^A-Za-z0-9_.-]", "_", case) + ".html"


def anchor(transform: str, arg: str) -> str:
    """Fragment id of a transform's section on a case page."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{transform}-{arg}" if arg and transform != "value" else transform)


def case_run_notes(acc: Accuracy) -> str:
    """What a case page says of its runs: those still running or missing a table."""
    return run_notes([r for r in acc.runs if r.status == RUNNING or r.missing])


def run_notes(runs: Sequence[RunInfo]) -> str:
    """What is partial or missing about the runs, in plain words."""
    out = []
    for r in runs:
        rid = html.esc(r.run_id)
        if r.status == RUNNING:
            out.append(html.note(
                f"Run <b>{rid}</b> is still running (started {html.esc(r.meta.get('started', '?'))}): the tables show the tasks it has "
                "finished so far. Build the report again when it completes (or resume it with <code>rulelab sweep --resume</code> if it stopped).",
                "warn",
            ))
        elif r.status not in (COMPLETE, "unknown"):
            out.append(html.note(f"Run <b>{rid}</b> has status <b>{html.esc(r.status)}</b>.", "warn"))
        if r.missing:
            tables = ", ".join(html.esc(m) for m in r.missing)
            extra = ""
            if "samples.parquet" in r.missing and len(r.missing) == 1:
                extra = " The plots of values against the reference need it (a plan with <code>samples</code> above 0)."
            out.append(html.note(f"Run <b>{rid}</b> ({html.esc(r.path)}) lacks {tables}.{extra}", "missing"))
        for p in r.problems:
            out.append(html.note(f"Run <b>{rid}</b>: {html.esc(p)}", "warn"))
    return "\n".join(out)


KIND_BADGES = {
    "nonfinite": ("non-finite", Bucket.WRONG_NONFINITE.column),
    "inaccurate": ("inaccurate", Bucket.ULP_GT_1024.column),
    Status.ERROR.value: ("error", Status.ERROR.value),
    Status.UNSUPPORTED.value: ("unsupported", Status.UNSUPPORTED.value),
}


def _finding_html(f: Finding) -> str:
    label, cls = KIND_BADGES.get(f.kind, (f.kind, ""))
    text = f.text
    rest = text[len(f.case):] if text.startswith(f.case) else ": " + text
    return f'<span class="badge {cls}">{html.esc(label)}</span> {html.link(case_file(f.case), f.case)}{html.esc(rest)}'


def _findings_list(items: Sequence[Finding]) -> str:
    return '<ul class="findings">' + "".join(f"<li>{_finding_html(f)}</li>" for f in items) + "</ul>"


def _findings_by_case(found: Sequence[Finding], per_case: int = FINDINGS_PER_CASE) -> str:
    """The findings grouped per case, most severe first, at most ``per_case`` each."""
    groups: dict[str, list[Finding]] = {}
    for f in found:
        groups.setdefault(f.case, []).append(f)
    items = []
    for case, fs in groups.items():
        more = f'<li>{len(fs) - per_case} more on {html.link(case_file(case), "the case page")}</li>' if len(fs) > per_case else ""
        items.append(f"<li><b>{html.link(case_file(case), case)}</b>"
                     f'<ul>{"".join(f"<li>{_finding_html(f)}</li>" for f in fs[:per_case])}{more}</ul></li>')
    return '<ul class="findings">' + "".join(items) + "</ul>"


def _matrices(acc: Accuracy, links: bool = True) -> str:
    parts = [html.legend()]
    current = None
    multi_backend = acc.summary["backend"].nunique() > 1
    for transform, dtype, backend in blocks(acc.summary):
        if transform != current:
            parts.append(("</div>" if current is not None else "") + f'<h2 id="matrix-{transform}">{html.esc(transform)}</h2><div class="blocks">')
            current = transform
        df = matrix(acc.summary, transform, dtype, backend, href=lambda c, a, t=transform: f"{case_file(c)}#{anchor(t, a)}" if links else "")
        caption = f"{transform} in {dtype}" + (f" on {backend}" if multi_backend else "")
        parts.append(html.table(df, cls="matrix", caption=caption))
    if current is not None:
        parts.append("</div>")
    return "\n".join(parts)


def _verdict(acc: Accuracy, timings: pd.DataFrame | None, links: bool = True) -> str:
    v = verdict_table(acc.summary, timings)
    if v.empty:
        return ""
    cells = pd.DataFrame({
        "use": [html.Cell(u, "text") for u in v["use"]],
        "max dULP": [html.Cell(u, c, CLASS_LABELS.get(c, c)) for u, c in zip(v["max dULP"], v["use_class"])],
        "non-finite": [html.Cell(str(n) if n else "0", Bucket.WRONG_NONFINITE.column if n else "") for n in v["non-finite"]],
        "time vs naive": [html.Cell(t) for t in v["time vs naive"]],
        "fail here": [html.Cell(f, "text") for f in v["fail here"]],
    }, index=pd.MultiIndex.from_tuples([(html.Cell(c, "text", href=case_file(c) if links else ""), d) for c, d in zip(v["case"], v["dtype"])], names=["case", "dtype"]))
    timing_note = "" if timings is not None else " (time per call needs the timings of <code>rulelab study</code>)"
    return ("<h2>Verdict</h2><p>Per case and dtype, the variant to use: no non-finite results first, then the smallest "
            "worst max dULP over every transform (the headline, flush-aware), then the cheapest" + timing_note + "; and the "
            "variants that fail there (non-finite results, over 1024 ULP, an error, or a transform they cannot do).</p>"
            + html.table(cells, cls="verdict"))


def inline_view(acc: Accuracy, timings: pd.DataFrame | None = None) -> str:
    """The verdict and the matrices of the index page as one HTML fragment with its
    styles (what a run shows in a Jupyter cell); no links, since no case pages exist."""
    if acc.empty:
        return html.fragment(html.note("The run holds no results.", "missing"))
    return html.fragment(_verdict(acc, timings, links=False) + _matrices(acc, links=False))


def index_page(acc: Accuracy, found: Sequence[Finding], links: Links, bench_note: str, timings: pd.DataFrame | None = None) -> str:
    """The overview: run facts, the verdict per case and dtype, the findings per case,
    the case x variant matrices per transform, dtype and backend, and links to every
    other page."""
    body = [run_notes(acc.runs)]
    if not acc.runs:
        body.append(html.note(f"No accuracy runs were given: {SWEEP_HINT}.", "missing"))
    elif acc.empty:
        body.append(html.note(f"The accuracy runs hold no results yet: {SWEEP_HINT}.", "missing"))
    if acc.runs:
        body.append("<h2>Where the numbers come from</h2>")
        body.append(html.table(facts_table(acc.runs), cls="facts"))
    if not acc.empty:
        body.append(_verdict(acc, timings))
        body.append("<h2>Findings</h2>")
        body.append("<p>Where a variant returns non-finite values or loses more than 1024 ULP, per dtype. A threshold is the "
                    "smallest failing input the run stored (worst inputs and samples), else the binade where failures start; "
                    "a variant is fine there if it has no such failure in those binades.</p>")
        body.append(_findings_by_case(found) if found else "<p>No variant returned a non-finite value, lost more than 1024 ULP, or failed.</p>")
        body.append(_matrices(acc))
        body.append("<h2>Cases</h2>")
        body.append(html.items(html.link(case_file(c), c) for c in acc.cases()))
    body.append("<h2>Performance</h2>")
    body.append(bench_note)
    return html.page("rulelab accuracy report", "\n".join(body), nav=links.nav())


def jax_reports(source: str) -> list[tuple[str, str]]:
    """The JAX issues and pull requests a case's source cites ("jax-ml/jax#39794 …
    #39796; PR #40820"), each with its GitHub address (issues redirect to pull requests)."""
    if "jax-ml/jax#" not in source:
        return []
    numbers = dict.fromkeys(re.findall(r"#(\d{3,6})\b", source))
    return [(n, f"https://github.com/jax-ml/jax/issues/{n}") for n in numbers]


def _case_header(info: CaseInfo, acc_case: pd.DataFrame) -> str:
    if not info.registered:
        conventions = [c for c in dict.fromkeys(acc_case["conventions"]) if c]
        text = html.note(
            f"{html.esc(info.problem)}: formula, source, notes and code are not shown; "
            "the tables below come from the stored results alone. Build the report where the case's module is importable "
            "(the module path given to <code>rulelab sweep</code>) to see them.",
            "missing",
        )
        if conventions:
            text += html.note("Conventions (from the stored results): " + "; ".join(html.esc(c) for c in conventions), "conv")
        return text
    rows = [("formula", info.formula), ("arguments", info.domain), ("source", info.source)]
    facts = pd.DataFrame({"": [html.Cell(v, "text") for _, v in rows]}, index=pd.Index([k for k, _ in rows]))
    out = [html.table(facts, cls="facts")]
    if reports := jax_reports(info.source):
        out.append("<p>The reports it reproduces: " + ", ".join(html.link(url, f"jax-ml/jax#{n}") for n, url in reports) + ".</p>")
    if info.notes:
        out.append(f"<p>{html.esc(info.notes)}</p>")
    if info.conventions:
        out.append(html.note("Conventions: " + html.items(html.esc(c) for c in info.conventions), "conv"))
    if info.derivatives:
        out.append("<p>How the reference derivatives are made:</p>" + html.items(html.esc(d) for d in info.derivatives))
    return "\n".join(out)


def _variants_code(info: CaseInfo, variants: Sequence[str]) -> str:
    if not info.registered:
        return "<p>Variants in the stored results: " + ", ".join(html.esc(v) for v in variants) + ".</p>"
    out = []
    for v in info.variants:
        body = (f"<p>{html.esc(v.description)}</p>" if v.description else "") + html.code(v.code)
        out.append(html.details(f"{v.name}: {v.description}" if v.description else v.name, body))
    missing = [v for v in variants if v not in {x.name for x in info.variants}]
    if missing:
        out.append(html.note("In the results but not in the registered case: " + ", ".join(html.esc(v) for v in missing), "missing"))
    return "\n".join(out)


def _arg_names(acc: Accuracy, case: str, info: CaseInfo) -> list[str]:
    if info.args:
        return list(info.args)
    for a in acc.worst.loc[acc.worst["case"] == case, "args"]:
        if a:
            return a.split(",")
    names = [n for n in dict.fromkeys(acc.binned.loc[acc.binned["case"] == case, "binade_of"]) if n]
    return names or ["x"]


def case_page(acc: Accuracy, case: str, info: CaseInfo, found: Sequence[Finding], links: Links) -> str:
    """One case: what it is, its variants' code, the support matrix, and per transform
    the summary (with its conventions), error and value plots, and worst inputs."""
    s = acc.summary[acc.summary["case"] == case]
    b = acc.binned[acc.binned["case"] == case]
    w = acc.worst[acc.worst["case"] == case]
    smp = acc.samples[acc.samples["case"] == case]
    variants = variant_order(s)
    args = _arg_names(acc, case, info)
    body = [case_run_notes(acc)]
    body.append(_case_header(info, s))
    mine = [f for f in found if f.case == case]
    if mine:
        body.append("<h2>Findings</h2>" + _findings_list(mine))
    body.append("<h2>Variants</h2>" + _variants_code(info, variants))
    body.append("<h2>Transform support</h2>")
    body.append(html.table(support_matrix(s), cls="matrix"))
    if smp.empty:
        body.append(html.note("No samples stored for this case: the plots of the values against the reference need <code>samples.parquet</code> (a plan with <code>samples</code> above 0).", "missing"))
    if b.empty:
        body.append(html.note("No per-binade results stored for this case (<code>binned.parquet</code>): the error plots are missing.", "missing"))
    body.append(html.legend())
    flushed = s[s["flushed"].fillna(0) > 0]
    if not flushed.empty:
        where = ", ".join(f"{d} on {b}" for d, b in dict.fromkeys(zip(flushed["dtype"], flushed["backend"])))
        body.append(html.note(
            f"<b>Flushing:</b> the backend flushes subnormals to zero here ({html.esc(where)}): it reads a subnormal input as "
            "zero and writes a subnormal result as zero, whatever the rule does. So each point is also measured against the "
            "reference as the backend can represent it; <i>max ULP</i> and the buckets use the closer of the two, "
            "<i>max ULP (IEEE)</i> the IEEE reference alone, and <i>flushed</i> counts the points flushing explains. "
            "An intermediate that underflows inside a rule is still the rule's.", "conv"))
    for transform, arg, conventions in summary_groups(s):
        label = arg_label(transform, arg)
        body.append(f'<h2 id="{anchor(transform, arg)}">{html.esc(label)}</h2>')
        if conventions:
            body.append(html.note("<b>convention:</b> " + html.esc(conventions) + " The reference follows it; the numbers below are measured against it.", "conv"))
        body.append(html.table(summary_table(s, transform, arg), caption=f"{case}: {label}"))
        why = blame_table(acc.blame[(acc.blame["case"] == case) & (acc.blame["transform"] == transform) & (acc.blame["arg"] == arg)])
        if not why.empty:
            body.append(html.table(why, caption=f"{case}: {label}, where the digits are lost (the operation with the largest local error "
                                   "at the worst input, or the first to turn non-finite)"))
        unsettled = unsettled_table(w[(w["transform"] == transform) & (w["arg"] == arg)])
        if not unsettled.empty:
            body.append(html.note(
                "<b>unsettled:</b> at these inputs two evaluations of the reference never agreed up to the precision cap "
                "(the plan's <code>max_precision</code>), so no variant is scored there; raise the cap, or give the case an "
                "analytic derivative or a convention.", "missing"))
            body.append(html.table(unsettled, caption=f"{case}: {label}, unsettled references"))
        sel_s = s[(s["transform"] == transform) & (s["arg"] == arg)]
        panels = [(d, be) for d in ordered(sel_s["dtype"], DTYPE_ORDER) for be in dict.fromkeys(sel_s.loc[sel_s["dtype"] == d, "backend"])]
        argument = arg if arg else (args[0] if args else "")
        bsel = b[(b["transform"] == transform) & (b["arg"] == arg)]
        if not bsel.empty:
            ofs = list(dict.fromkeys(bsel["binade_of"]))
            argument = argument if argument in ofs else ofs[0]
            bsel = bsel[bsel["binade_of"] == argument]
        ssel = smp[(smp["transform"] == transform) & (smp["arg"] == arg)]
        column = f"in{args.index(argument)}" if argument in args else "in0"
        what = "value" if transform == "value" else label
        # (without the run's name, which would make every run's figures new to the figure cache)
        image = figures.accuracy_figure(bsel.drop(columns=RUN), ssel.drop(columns=RUN), variants, panels, column=column, argument=argument,
                                        title=f"{case}: {what}", line=len(args) == 1)
        if image:
            other = "" if len(args) == 1 else " (the other arguments vary between points)"
            parts = []
            if not bsel.empty:
                parts.append(f"{'Top' if not ssel.empty else 'Plot'}: max dULP per binade of {argument}, on a symmetric binade axis; "
                             "shaded binades, and the strip above, show where each variant returned non-finite values.")
            if not ssel.empty:
                parts.append(f"{'Bottom' if not bsel.empty else 'Plot'}: {what} computed by each variant (dots) and the mpmath "
                             f"reference (grey) over the stored samples against {argument}{other}; ticks on the top edge mark non-finite results.")
            body.append(html.img(image, f"{case} {what}: error per binade and values against the reference", caption=" ".join(parts)))
        body.extend(_error_maps(acc, case, transform, arg, args, variants, f"{case}: {what}"))
        wsel = w[(w["transform"] == transform) & (w["arg"] == arg)]
        if not wsel.empty:
            parts = []
            for dtype in ordered(wsel["dtype"], DTYPE_ORDER):
                for backend in dict.fromkeys(wsel.loc[wsel["dtype"] == dtype, "backend"]):
                    t = worst_table(wsel[(wsel["dtype"] == dtype) & (wsel["backend"] == backend)])
                    parts.append(html.table(t, caption=f"{dtype}" + (f" on {backend}" if wsel["backend"].nunique() > 1 else "")))
            body.append(html.details(f"worst inputs ({label})", "\n".join(parts)))
    return html.page(f"case: {case}", "\n".join(body), nav=links.nav())


def _error_maps(acc: Accuracy, case: str, transform: str, arg: str, args: Sequence[str], variants: Sequence[str], title: str) -> list[str]:
    """The error maps over both arguments of a case of two (one image per dtype and
    backend), where the run stored them."""
    m = acc.binned2
    sel = m[(m["case"] == case) & (m["transform"] == transform) & (m["arg"] == arg)] if len(args) == 2 and not m.empty else m.iloc[:0]
    out = []
    for dtype in ordered(sel["dtype"], DTYPE_ORDER):
        for backend in dict.fromkeys(sel.loc[sel["dtype"] == dtype, "backend"]):
            cells = sel[(sel["dtype"] == dtype) & (sel["backend"] == backend)].drop(columns=RUN)
            image = figures.error_map(cells, variants, args=tuple(args), title=f"{title}, {dtype}" + (f" on {backend}" if sel["backend"].nunique() > 1 else ""))
            if image:
                out.append(html.img(image, f"{title}: error map over {args[0]} and {args[1]} in {dtype}", caption=(
                    f"Error map ({dtype}): the largest dULP over each pair of binades of {args[0]} (across) and {args[1]} (up), "
                    "each sign on its own side of zero; red where a variant returned non-finite values, white where there are no points.")))
    return out


def compare_page(a: Accuracy, b: Accuracy, found_a: Sequence[Finding], found_b: Sequence[Finding], links: Links) -> str:
    """Two runs side by side: per block the matrix with an A and a B column per
    variant, the pairs that differ outlined; then the findings only one run has."""
    name_a = a.runs[0].run_id if a.runs else "A"
    name_b = b.runs[0].run_id if b.runs else "B"
    body = [run_notes([*a.runs, *b.runs])]
    body.append("<h2>Runs</h2>")
    body.append(html.table(facts_table([*a.runs, *b.runs]), cls="facts"))
    for acc, name in ((a, name_a), (b, name_b)):
        if acc.empty:
            body.append(html.note(f"Run <b>{html.esc(name)}</b> holds no results: {SWEEP_HINT}.", "missing"))
    lacking = [(r.run_id, m) for r in (*a.runs, *b.runs) for m in r.missing if m != table_file("samples")]
    if lacking:
        body.append(html.note("The runs cannot be compared result by result: " + "; ".join(
            f"run <b>{html.esc(rid)}</b> has no {html.esc(m)}" for rid, m in lacking) + ". Resume or re-run it first.", "missing"))
        return html.page(f"comparison: {name_a} vs {name_b}", "\n".join(body), nav=links.nav())
    keys = list(dict.fromkeys([*blocks(a.summary), *blocks(b.summary)]))
    tables, total = [], 0
    current = None
    for transform, dtype, backend in keys:
        if transform != current:
            tables.append(("</div>" if current is not None else "") + f'<h2>{html.esc(transform)}</h2><div class="blocks">')
            current = transform
        df, changed = compare_matrix(a.summary, b.summary, transform, dtype, backend, names=("A", "B"))
        total += changed
        tables.append(html.table(df, cls="matrix", caption=f"{transform} in {dtype} on {backend}: {changed} changed"))
    if current is not None:
        tables.append("</div>")
    body.append(f"<p>A = <b>{html.esc(name_a)}</b>, B = <b>{html.esc(name_b)}</b>. "
                f"<b>{total}</b> result(s) differ in class, max dULP or non-finite count; they are outlined.</p>")
    body.append(html.legend())
    body.extend(tables)
    only_a = [f for f in found_a if f.text not in {g.text for g in found_b}]
    only_b = [f for f in found_b if f.text not in {g.text for g in found_a}]
    body.append("<h2>Findings that changed</h2>")
    body.append(f"<h3>only in A ({html.esc(name_a)})</h3>" + (_findings_list(only_a) if only_a else "<p>none</p>"))
    body.append(f"<h3>only in B ({html.esc(name_b)})</h3>" + (_findings_list(only_b) if only_b else "<p>none</p>"))
    return html.page(f"comparison: {name_a} vs {name_b}", "\n".join(body), nav=links.nav())
