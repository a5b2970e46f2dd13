"""The compact table a sweep prints when it ends: max dULP per case x variant x dtype
(rows) and transform (columns), with non-finite results flagged."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from rulelab import store
from rulelab.model.plan import plan_from_dict
from rulelab.report.styles import number
from rulelab.store.vocabulary import CACHE_RECORDS, Bucket, Status

LEGEND = (
    "max dULP over the sweep (the worst argument, for derivatives of several arguments). "
    "NaN×k / inf×k: k results NaN / infinite where the reference is finite; fin×k: finite where "
    "the reference is not; ref?×k: k points whose reference never settled (not scored); unsup: JAX cannot apply the transform to this variant; ERR: the "
    "variant failed (summary.parquet has the message)."
)


def ulps(v: float) -> str:
    """A dULP count, short: exact below 10^5, else in powers of ten."""
    if v is None or math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{int(v)}" if v < 1e5 else f"{v:.1e}".replace("e+0", "e").replace("e+", "e")


def cell(rows: Sequence[Mapping[str, Any]]) -> str:
    """One cell from a result's summary rows (one per argument): the worst max dULP
    with non-finite counts flagged; 'unsup' or 'ERR' when nothing ran."""
    statuses = {r["status"] for r in rows}
    ok = [r for r in rows if r["status"] == Status.OK.value]
    if not ok:
        return "ERR" if Status.ERROR.value in statuses else "unsup"
    measured = [float(v) for r in ok if (v := r.get("max_ulp")) is not None and not math.isnan(v)]
    text = ulps(max(measured)) if measured else "-"
    for col, label in (("wrong_nan", "NaN"), ("wrong_inf", "inf"), (Bucket.UNEXPECTED_FINITE.column, "fin"), (Bucket.UNSETTLED.column, "ref?")):
        n = int(sum(number(r.get(col)) for r in ok))
        if n:
            text += f" {label}×{n}"
    if Status.ERROR.value in statuses:
        text += " ERR"
    elif Status.UNSUPPORTED.value in statuses:
        text += " (unsup)"
    return text


def table(summary: pd.DataFrame, transforms: tuple[str, ...]) -> str:
    """The table, case and variant written once per block."""
    if summary.empty:
        return "(no results)"
    header = ["case", "variant", "dtype", *transforms]
    results: dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in summary.to_dict("records"):
        results.setdefault((r["case"], r["variant"], r["dtype"]), {}).setdefault(r["transform"], []).append(r)
    rows = [[case, variant, dtype, *(cell(by[t]) if t in by else "" for t in transforms)] for (case, variant, dtype), by in results.items()]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)]
    last: list[str] | None = None
    for r in rows:
        shown = list(r)
        if last is not None and r[0] == last[0]:
            shown[0] = ""
            if r[1] == last[1]:
                shown[1] = ""
        lines.append(line(shown))
        last = r
    return "\n".join(lines)


def run_digest(run: Path) -> str:
    """The table of a complete run, its counts and timings, and where its files are."""
    meta = store.read_meta(run)
    plan = plan_from_dict(meta.plan)
    summary = store.load_table(run, "summary")
    counts = meta.counts
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in meta.phases.items() if v >= 0.05)
    tasks = ", ".join(f"{k} {v:.1f}s" for k, v in meta.task_seconds.items() if v >= 0.05)
    backend = meta.backend or {}
    return (
        f"{table(summary, plan.transforms)}\n\n{LEGEND}\n\n"
        f"{len(summary)} results ({counts.get(Status.OK.value, 0)} ok, {counts.get(Status.UNSUPPORTED.value, 0)} unsupported, "
        f"{counts.get(Status.ERROR.value, 0)} errors) on {backend.get('backend')} ({backend.get('device_kind')}).\n"
        f"wall: {phases}; within tasks: {tasks}\n{cache_line(meta.sessions)}"
        f"run folder: {run}"
    )


def cache_line(sessions: Sequence[Mapping[str, Any]]) -> str:
    """What the cache of measured results served in the run's last session, a line
    (empty where it was not used)."""
    last = next((s for s in reversed(sessions) if any(k in s for k in CACHE_RECORDS)), None)
    if last is None:
        return ""
    parts = []
    for key, what in CACHE_RECORDS.items():
        c = last.get(key)
        if c:
            parts.append(f"{c['served']} of {c['items']} {what} served, {c['checked']} re-evaluated"
                         + (f" and found different: {c['mismatch']}" if c.get("mismatch") else " and identical" if c["checked"] else ""))
    return f"cache: {'; '.join(parts)}\n"
