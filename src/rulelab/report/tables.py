"""Accuracy tables as DataFrames of :class:`~rulelab.report.html.Cell`: the case x variant
matrix, its two-run comparison, the transform support matrix, the summary per
transform, the worst inputs and the backend facts."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from rulelab.core.floats import N_FINITE_FLOAT32, all_finite
from rulelab.model.contract import START_PRECISIONS
from rulelab.report.html import Cell
from rulelab.report.load import RunInfo
from rulelab.report.styles import CLASS_LABELS, nonfinite_count, number, row_class
from rulelab.store.vocabulary import KEYS, Bucket, Status

TRANSFORM_ORDER = ("value", "grad", "jvp", "grad2")
DTYPE_ORDER = ("float32", "float16", "bfloat16", "float64")

Href = Callable[[str, str], str]
"""Link target of a matrix cell, from its case and differentiated argument."""


def ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    """Distinct ``values``, those named in ``order`` first in that order."""
    distinct = list(dict.fromkeys(values))
    return [v for v in order if v in distinct] + [v for v in distinct if v not in order]


def variant_order(summary: pd.DataFrame) -> list[str]:
    """Variants as the store lists them, ``naive`` first and ``library`` last."""
    vs = list(dict.fromkeys(summary["variant"]))
    head = [v for v in vs if v == "naive"]
    tail = [v for v in vs if v == "library"]
    return head + [v for v in vs if v not in ("naive", "library")] + tail


def fmt_ulp(v: Any) -> str:
    """A dULP count as short text: integers up to 9999, then 1.2e5 style."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return ""
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    if x < 1e4:
        return f"{x:.0f}" if x == int(x) else f"{x:.2g}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant}e{int(exp)}"


def arg_label(transform: str, arg: str) -> str:
    """``grad`` or ``grad d/dy`` (the argument is named only where it matters)."""
    return f"{transform} d/d{arg}" if arg and transform != "value" else transform


def multi_arg_cases(summary: pd.DataFrame) -> set[str]:
    """Cases with derivatives in more than one argument."""
    d = summary[summary["arg"] != ""]
    counts = d.groupby("case")["arg"].nunique()
    return set(counts[counts > 1].index)


def result_cell(row: Mapping[str, Any] | None, href: str = "") -> Cell:
    """The matrix cell of one summary row: class by worst bucket (or status), text the
    max dULP and how many points were non-finite."""
    if row is None:
        return Cell("", Status.MISSING.value, Status.MISSING.label)
    cls = row_class(row)
    key = " ".join(str(row.get(k, "")) for k in KEYS if row.get(k, ""))
    if cls in (Status.UNSUPPORTED.value, Status.ERROR.value):
        return Cell(cls, cls, f"{key}: {row.get('message', '')}".strip(), href)
    n_bad = nonfinite_count(row)
    text = fmt_ulp(row.get("max_ulp"))
    if n_bad:
        text += f" · {n_bad} non-finite"
    if number(row.get(Bucket.UNSETTLED.column)):
        text += f" · {int(number(row.get(Bucket.UNSETTLED.column)))} unsettled"
    counts = ", ".join(f"{b.label}: {int(row.get(b.column) or 0)}" for b in Bucket if number(row.get(b.column)))
    title = f"{key}: max {fmt_ulp(row.get('max_ulp'))} ULP, median {fmt_ulp(row.get('median_ulp'))} ULP over {int(number(row.get('n_points')))} points ({counts})"
    return Cell(text, cls, title, href)


def blocks(summary: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The (transform, dtype, backend) blocks of the overview, in reading order."""
    out = []
    for t in ordered(summary["transform"], TRANSFORM_ORDER):
        for d in ordered(summary.loc[summary["transform"] == t, "dtype"], DTYPE_ORDER):
            sel = summary[(summary["transform"] == t) & (summary["dtype"] == d)]
            for b in dict.fromkeys(sel["backend"]):
                out.append((t, d, b))
    return out


def _row_labels(summary: pd.DataFrame, transform: str) -> list[tuple[str, str, str]]:
    """(label, case, arg) rows of one transform's matrix."""
    multi = multi_arg_cases(summary)
    rows = []
    sel = summary[summary["transform"] == transform]
    for case in dict.fromkeys(summary["case"]):
        args = list(dict.fromkeys(sel.loc[sel["case"] == case, "arg"]))
        for a in args:
            label = f"{case} d/d{a}" if case in multi and a else case
            rows.append((label, case, a))
    return rows


def matrix(summary: pd.DataFrame, transform: str, dtype: str, backend: str, href: Href = lambda case, arg: "") -> pd.DataFrame:
    """Case x variant for one transform, dtype and backend; cells from
    :func:`result_cell`, ``missing`` where a variant was not run."""
    sel = summary[(summary["transform"] == transform) & (summary["dtype"] == dtype) & (summary["backend"] == backend)]
    variants = variant_order(summary)
    index = {(r["case"], r["variant"], r["arg"]): r for r in sel.to_dict("records")}
    data = []
    labels = []
    for label, case, arg in _row_labels(summary, transform):
        if not any((case, v, arg) in index for v in variants):
            continue
        labels.append(label)
        data.append([result_cell(index.get((case, v, arg)), href(case, arg)) for v in variants])
    return pd.DataFrame(data, index=pd.Index(labels, name="case"), columns=variants)


def _compare_key(row: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
    if row is None:
        return None
    return (row_class(row), fmt_ulp(row.get("max_ulp")), nonfinite_count(row))


def compare_matrix(a: pd.DataFrame, b: pd.DataFrame, transform: str, dtype: str, backend: str, names: tuple[str, str] = ("A", "B")) -> tuple[pd.DataFrame, int]:
    """Case x (variant, run) for two runs' summaries side by side. A pair whose class,
    max dULP or non-finite count differs gets the ``changed`` class on both cells.
    Returns the table and the number of changed pairs."""
    both = pd.concat([a, b], ignore_index=True)
    variants = variant_order(both)
    ia = {(r["case"], r["variant"], r["arg"]): r for r in a[(a["transform"] == transform) & (a["dtype"] == dtype) & (a["backend"] == backend)].to_dict("records")}
    ib = {(r["case"], r["variant"], r["arg"]): r for r in b[(b["transform"] == transform) & (b["dtype"] == dtype) & (b["backend"] == backend)].to_dict("records")}
    data, labels, changed = [], [], 0
    for label, case, arg in _row_labels(both, transform):
        if not any((case, v, arg) in ia or (case, v, arg) in ib for v in variants):
            continue
        row = []
        for v in variants:
            ra, rb = ia.get((case, v, arg)), ib.get((case, v, arg))
            ca, cb = result_cell(ra), result_cell(rb)
            if _compare_key(ra) != _compare_key(rb):
                changed += 1
                ca = Cell(ca.text, ca.cls + " changed", ca.title, ca.href)
                cb = Cell(cb.text, cb.cls + " changed", cb.title, cb.href)
            row += [ca, cb]
        labels.append(label)
        data.append(row)
    columns = pd.MultiIndex.from_tuples([(v, n) for v in variants for n in names])
    return pd.DataFrame(data, index=pd.Index(labels, name="case"), columns=columns), changed


def support_matrix(summary_case: pd.DataFrame) -> pd.DataFrame:
    """Variant x transform (per argument) of one case: ok / unsupported / error over
    every dtype and backend, the dtypes named where they disagree."""
    cols = []
    for t in ordered(summary_case["transform"], TRANSFORM_ORDER):
        for a in dict.fromkeys(summary_case.loc[summary_case["transform"] == t, "arg"]):
            cols.append((t, a))
    data = []
    variants = variant_order(summary_case)
    for v in variants:
        row = []
        for t, a in cols:
            sel = summary_case[(summary_case["variant"] == v) & (summary_case["transform"] == t) & (summary_case["arg"] == a)]
            row.append(_support_cell(sel))
        data.append(row)
    return pd.DataFrame(data, index=pd.Index(variants, name="variant"), columns=[arg_label(t, a) for t, a in cols])


def _support_cell(sel: pd.DataFrame) -> Cell:
    if sel.empty:
        return Cell("", Status.MISSING.value, Status.MISSING.label)
    statuses = list(dict.fromkeys(sel["status"]))
    messages = "; ".join(dict.fromkeys(m for m in sel["message"] if m))
    if len(statuses) == 1:
        s = statuses[0]
        cls = s if s in (Status.UNSUPPORTED.value, Status.ERROR.value) else Bucket.EXACT.column
        return Cell(s, cls, messages)
    parts = [f"{s} ({', '.join(dict.fromkeys(sel.loc[sel['status'] == s, 'dtype']))})" for s in statuses]
    cls = Status.ERROR.value if Status.ERROR.value in statuses else Status.UNSUPPORTED.value
    return Cell("; ".join(parts), cls, messages)


BUCKET_COLUMNS = frozenset(b.column for b in Bucket)

SUMMARY_COLUMNS: Mapping[str, str] = {
    "status": "status",
    "n_points": "points",
    "max_ulp": "max ULP",
    "median_ulp": "median ULP",
    "max_ulp_ieee": "max ULP (IEEE)",
    "flushed": "flushed",
    "max_frac_ulp": "max frac. ULP",
    **{b.column: b.short for b in Bucket},
    "compile_s": "compile s",
    "run_s": "run s",
}


def summary_groups(summary_case: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(transform, arg, conventions text) for each summary table of a case."""
    out = []
    for t in ordered(summary_case["transform"], TRANSFORM_ORDER):
        sel_t = summary_case[summary_case["transform"] == t]
        for a in dict.fromkeys(sel_t["arg"]):
            conv = [c for c in dict.fromkeys(sel_t.loc[sel_t["arg"] == a, "conventions"]) if c]
            out.append((t, a, "; ".join(conv)))
    return out


def summary_table(summary_case: pd.DataFrame, transform: str, arg: str) -> pd.DataFrame:
    """One case's summary rows for one transform and argument, indexed by dtype,
    backend and variant; the max-ULP cell and the status cell carry the row's class,
    the bucket counts are shaded when nonzero."""
    sel = summary_case[(summary_case["transform"] == transform) & (summary_case["arg"] == arg)].copy()
    sel["_d"] = sel["dtype"].map({d: i for i, d in enumerate(DTYPE_ORDER)}).fillna(len(DTYPE_ORDER))
    sel["_v"] = sel["variant"].map({v: i for i, v in enumerate(variant_order(summary_case))})
    sel = sel.sort_values(["_d", "dtype", "backend", "_v"], kind="stable")
    data, index = [], []
    multi_backend = sel["backend"].nunique() > 1
    for r in sel.to_dict("records"):
        cls = row_class(r)
        row: list[Any] = []
        for col in SUMMARY_COLUMNS:
            v = r.get(col)
            if col == "status":
                row.append(Cell(str(v), cls if cls in (Status.UNSUPPORTED.value, Status.ERROR.value) else "", str(r.get("message", ""))))
            elif col == "max_ulp":
                row.append(Cell(fmt_ulp(v) if r["status"] == Status.OK.value else "", cls, CLASS_LABELS[cls]))
            elif col in BUCKET_COLUMNS:
                n = int(number(v))
                row.append(Cell(str(n) if r["status"] == Status.OK.value else "", col if n and col != Bucket.EXACT.column else ""))
            elif col == "flushed":
                row.append(Cell(str(int(number(v))) if r["status"] == Status.OK.value and number(v) else ""))
            elif col == "max_ulp_ieee":
                row.append(Cell(fmt_ulp(v) if r["status"] == Status.OK.value and number(r.get("flushed")) else ""))
            elif col in ("compile_s", "run_s"):
                row.append(Cell(f"{number(v):.3g}" if number(v) else ""))
            elif col in ("median_ulp",):
                row.append(Cell(fmt_ulp(v) if r["status"] == Status.OK.value else ""))
            elif col == "max_frac_ulp":
                row.append(Cell(f"{float(v):.3g}" if isinstance(v, (int, float)) and not math.isnan(v) else ""))
            else:
                row.append(Cell("" if r["status"] != Status.OK.value and col == "n_points" else str(int(number(v)))))
        notes = "; ".join(x for x in (r.get("notes", ""), r.get("message", "")) if x)
        row.append(Cell(notes, "msg"))
        data.append(row)
        index.append((r["dtype"], r["backend"], r["variant"]) if multi_backend else (r["dtype"], r["variant"]))
    names = ["dtype", "backend", "variant"] if multi_backend else ["dtype", "variant"]
    columns = [*SUMMARY_COLUMNS.values(), "notes"]
    return pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=names) if index else None, columns=columns)


def _fmt_float(v: Any) -> str:
    """A stored float exactly (shortest round-trip form), to copy into a reproduction."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "nan" if math.isnan(x) else repr(x)


def worst_table(worst_sel: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` worst inputs per variant (as stored, best rank first): inputs by
    argument name, computed value, reference, dULP, fractional ULP, bucket."""
    worst_sel = worst_sel[worst_sel["bucket"] != Bucket.UNSETTLED.column]
    if worst_sel.empty:
        return pd.DataFrame()
    df = worst_sel.copy()
    df["_v"] = df["variant"].map({v: i for i, v in enumerate(variant_order(df))})
    df = df.sort_values(["_v", "rank"], kind="stable")
    df = df.groupby("variant", sort=False).head(k)
    data, index = [], []
    for r in df.to_dict("records"):
        names = [n for n in str(r.get("args", "")).split(",") if n] or ["x"]
        inputs = ", ".join(f"{n} = {_fmt_float(r.get(f'in{i}'))}" for i, n in enumerate(names[:3]))
        bucket = str(r.get("bucket", ""))
        data.append([
            Cell(inputs, "text"),
            Cell(_fmt_float(r.get("computed"))),
            Cell(_fmt_float(r.get("ref_hi")), title=f"lo part {_fmt_float(r.get('ref_lo'))}"),
            Cell(fmt_ulp(r.get("dulp"))),
            Cell(_fmt_float(r.get("frac_ulp")) if number(r.get("frac_ulp")) else ""),
            Cell(CLASS_LABELS.get(bucket, bucket), bucket if bucket in CLASS_LABELS else ""),
        ])
        index.append((r["variant"], int(number(r.get("rank")))))
    return pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=["variant", "rank"]), columns=["input", "computed", "reference", "dULP", "frac. ULP", "bucket"])


def blame_table(blame_sel: pd.DataFrame) -> pd.DataFrame:
    """Where each failing variant loses its digits at its worst inputs: the operation,
    its source line and text, the cause and the operation's local error (the largest),
    one row per line blamed, with the inputs blamed there (worst first)."""
    data, index = [], []
    for (variant, dtype), g in blame_sel.sort_values("rank", kind="stable").groupby(["variant", "dtype"], sort=False):
        lines: dict[tuple[str, str, str, str], list[dict]] = {}
        for r in g.to_dict("records"):
            note = str(r.get("note", ""))
            what = note if note.startswith("not localized") else "" if r.get("primitive") else "no operation loses more than 1 ULP"
            lines.setdefault((what, str(r.get("primitive", "")), str(r.get("source", "")), str(r.get("label", ""))), []).append(r)
        for (what, prim, src, label), rows in lines.items():
            inputs = "; ".join(_point(r) for r in rows)
            if what:
                cells = [Cell(inputs, "text"), Cell("", "text"), Cell("", "text"), Cell(what, "text"), Cell("", "text")]
            else:
                ulp = max(number(r.get("local_ulp")) for r in rows)
                cells = [Cell(inputs, "text"), Cell(f"{prim} at {src.rsplit('/', 1)[-1]}", "text"), Cell(str(rows[0].get("line_text", "")), "code"),
                         Cell(label, "text"), Cell("inf" if math.isinf(ulp) else f"{ulp:.3g}", "num")]
            data.append(cells)
            index.append((variant, dtype))
    return pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=["variant", "dtype"]) if index else None,
                        columns=["worst inputs", "lost at", "line", "cause", "local ULP"])


def _point(r: dict) -> str:
    n_in = sum(1 for i in range(3) if not math.isnan(number(r.get(f"in{i}"))))
    return ", ".join(_fmt_float(r.get(f"in{i}")) for i in range(n_in))


def unsettled_table(worst_sel: pd.DataFrame) -> pd.DataFrame:
    """The stored points whose reference never settled (one row per input and dtype,
    whichever variants listed it), with the highest precision tried."""
    sel = worst_sel[worst_sel["bucket"] == Bucket.UNSETTLED.column]
    data, index = [], []
    for r in sel.drop_duplicates(["dtype", "in0", "in1", "in2"]).to_dict("records"):
        names = [n for n in str(r.get("args", "")).split(",") if n] or ["x"]
        inputs = ", ".join(f"{n} = {_fmt_float(r.get(f'in{i}'))}" for i, n in enumerate(names[:3]))
        data.append([Cell(inputs, "text"), Cell(f"{START_PRECISIONS[0]} to {int(number(r.get('ref_lo')))} bits, doubling", "text")])
        index.append(r["dtype"])
    return pd.DataFrame(data, index=pd.Index(index, name="dtype"), columns=["input", "precisions tried"])


def _backend(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    b = meta.get("backend")
    return b if isinstance(b, Mapping) else {"backend": b or ""}


def _commit(m: Mapping[str, Any]) -> str:
    git = m.get("git")
    if isinstance(git, Mapping):
        text = str(git.get("commit") or "")[:12]
        return text + (" (uncommitted changes)" if git.get("dirty") else "")
    return str(m.get("git_commit") or "")[:12]


def _host(m: Mapping[str, Any]) -> str:
    host = m.get("host")
    if isinstance(host, Mapping):
        return ", ".join(str(host[k]) for k in ("hostname", "platform", "cpus") if host.get(k) not in (None, ""))
    return "" if host is None else str(host)


def _phases(m: Mapping[str, Any]) -> str:
    phases = m.get("phases")
    if not isinstance(phases, Mapping):
        return ""
    return ", ".join(f"{k} {float(v):.1f} s" for k, v in phases.items() if isinstance(v, (int, float)))


def facts_table(runs: Sequence[RunInfo]) -> pd.DataFrame:
    """Where and when each run was computed: backend, device, flush-to-zero per dtype,
    versions, commit, host, dates, wall time per phase and status."""
    data = {}
    for info in runs:
        m = info.meta
        b = _backend(m)
        versions = m.get("versions") if isinstance(m.get("versions"), Mapping) else {}
        ftz = b.get("flushes_subnormals") if isinstance(b.get("flushes_subnormals"), Mapping) else {}
        data[info.run_id] = {
            "status": info.status,
            "backend": b.get("backend", ""),
            "device kind": b.get("device_kind", ""),
            "flushes subnormals": ", ".join(f"{d}: {'yes' if v else 'no'}" for d, v in ftz.items()) or "unknown",
            "x64": str(b.get("x64", "")),
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) or f"jax {b.get('jax', '?')}, jaxlib {b.get('jaxlib', '?')}",
            "git commit": _commit(m),
            "host": _host(m),
            "started": str(m.get("started", "")),
            "finished": str(m.get("finished") or m.get("ended") or ""),
            "wall time": _phases(m),
            "plan": _plan_name(m.get("plan")),
            "inputs": _inputs(m),
            "folder": str(info.path),
        }
    df = pd.DataFrame(data)
    df.index.name = "run"
    return df.map(lambda v: Cell(str(v), "text"))


def _inputs(m: Mapping[str, Any]) -> str:
    """How a run chose its inputs: sampled by its plan, every finite float32 input or
    every pair of finite 16-bit inputs (with each fast reference's validated bound and
    how many points mpmath decided)."""
    ex = m.get("exhaustive")
    if not isinstance(ex, Mapping):
        return "sampled (the plan's sweeps)"
    n = int(ex.get("inputs", 0))
    dtype = str(ex.get("dtype", "float32"))
    if dtype != "float32":
        whole = n == all_finite(dtype).size ** 2
        text = f"all {n:,} pairs of finite {dtype} inputs" if whole else f"every pair of finite {dtype} inputs of {ex.get('chunks')} chunks ({n:,})"
    else:
        text = f"all {n:,} finite float32 inputs" if n == N_FINITE_FLOAT32 else f"every finite float32 input of {ex.get('chunks')} chunks ({n:,})"
    checks = [f"{k}: bound {v.get('bound', float('nan')):.2g} relative, validated at {v.get('n_points', 0):,} mpmath points"
              for k, v in (ex.get("validation") or {}).items()]
    decided = sum(int(v) for v in (ex.get("mpmath_points") or {}).values())
    return "; ".join([text, "fast reference " + ", ".join(checks) if checks else "", f"{decided:,} points decided by mpmath"])


def _plan_name(plan: Any) -> str:
    if isinstance(plan, Mapping):
        return str(plan.get("name") or plan.get("path") or ", ".join(sorted(map(str, plan))))
    return "" if plan is None else str(plan)

