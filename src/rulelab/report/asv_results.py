"""Benchmark results shaped for the performance page: the newest commit per machine,
tables of time per variant (with the ratio to ``naive``) and of tracked costs, and the
selections the charts plot. Parameters are handled generically: ``variant`` becomes
the columns or bars, every other parameter the index, and one that never varies is
dropped from the index and named in the caption instead."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from rulelab.report.html import Cell
from rulelab.report.tables import DTYPE_ORDER, TRANSFORM_ORDER, ordered
from rulelab.store.vocabulary import Status

STEP_PARAMS = ("steps", "iterations", "iters", "n_iter", "max_iter", "n_steps")
"""Parameter names that count iterations (the solver suites)."""

BASELINE = "naive"


def step_param(params: Sequence[str]) -> str | None:
    """The iteration-count parameter among ``params``, if any."""
    return next((p for p in params if p in STEP_PARAMS or "step" in p or "iter" in p), None)


def newest(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of the newest commit (by asv's commit date) on each machine."""
    if results.empty:
        return results
    parts = []
    for _, d in results.groupby("machine", sort=True):
        dates = d.groupby("commit")["date"].max().sort_values()
        parts.append(d[d["commit"] == dates.index[-1]])
    return pd.concat(parts, ignore_index=True)


def commits(results: pd.DataFrame, machine: str) -> list[str]:
    """Commits with results on ``machine``, oldest first."""
    d = results[results["machine"] == machine]
    return list(d.groupby("commit")["date"].max().sort_values().index)


def fmt_unit(value: float, unit: str) -> str:
    """A measurement with a readable unit (seconds as us/ms, bytes as KiB/MiB)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    v = float(value)
    if unit == "seconds":
        for scale, name in ((1e-6, "ns"), (1e-3, "\u00b5s"), (1.0, "ms")):
            if abs(v) < scale:
                return f"{v / scale * 1e3:.3g} {name}"
        return f"{v:.3g} s"
    if unit == "bytes":
        for scale, name in ((2**10, "B"), (2**20, "KiB"), (2**30, "MiB")):
            if abs(v) < scale:
                return f"{v / scale * 2**10:.4g} {name}"
        return f"{v / 2**30:.4g} GiB"
    if unit == "ms":
        return f"{v:.3g} ms"
    if v == int(v):
        return f"{int(v)}"
    return f"{v:.4g}"


def param_columns(df: pd.DataFrame, param_names: Sequence[str]) -> list[str]:
    """The parameters the rows of ``df`` actually have (not all None)."""
    return [p for p in param_names if p in df and df[p].notna().any()]


def _sort_key(p: str) -> Any:
    """Sort key of an index level: transforms and dtypes in their usual order, numbers
    ascending, other text in order of first appearance."""
    order = {"transform": TRANSFORM_ORDER, "dtype": DTYPE_ORDER}

    def key(s: pd.Series) -> pd.Series:
        if p in order:
            rank = {v: i for i, v in enumerate(order[p])}
            return s.map(lambda v: rank.get(v, len(rank)))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in s):
            return s.astype(float)
        first = {v: i for i, v in enumerate(dict.fromkeys(s))}
        return s.map(first)

    return key


def _present(df: pd.DataFrame) -> pd.DataFrame:
    """Drop parameter combinations skipped everywhere (absent backends, refused
    transforms): keep rows that ran or failed."""
    return df[df["status"] != "skipped"]


def fixed_params(df: pd.DataFrame, params: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """(varying, constant) parameters of ``df``: constant ones with their value."""
    varying, constant = [], {}
    for p in params:
        vals = list(dict.fromkeys(df[p]))
        if len(vals) <= 1:
            constant[p] = vals[0] if vals else None
        else:
            varying.append(p)
    return varying, constant


def time_table(df: pd.DataFrame, params: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Time per call of one case's variants (columns), indexed by the other varying
    parameters, each cell with its ratio to ``naive``. Returns the table and the
    parameters held constant."""
    df = _present(df)
    if df.empty:
        return pd.DataFrame(), {}
    rest = [p for p in params if p != "variant"]
    varying, constant = fixed_params(df, rest)
    variants = _variants(df)
    unit = str(df["unit"].iloc[0])
    rows: dict[tuple[Any, ...], dict[str, Cell]] = {}
    for key, g in df.groupby(varying, sort=False, dropna=False) if varying else [((), df)]:
        key = key if isinstance(key, tuple) else (key,)
        base = g.loc[(g["variant"] == BASELINE) & (g["status"] == "ok"), "value"]
        base_v = float(base.iloc[0]) if len(base) else math.nan
        cells = {}
        for r in g.to_dict("records"):
            if r["status"] == "failed":
                cells[r["variant"]] = Cell("failed", Status.ERROR.value, "the benchmark raised an error")
                continue
            text = fmt_unit(r["value"], unit)
            if not math.isnan(base_v) and base_v > 0 and r["variant"] != BASELINE:
                text += f" ({r['value'] / base_v:.2f}\u00d7)"
            cells[r["variant"]] = Cell(text)
        rows[key] = cells
    return _frame(rows, varying, variants, df), constant


def _variants(df: pd.DataFrame) -> list[str]:
    vs = list(dict.fromkeys(df["variant"])) if "variant" in df else []
    return [v for v in vs if v == BASELINE] + [v for v in vs if v not in (BASELINE, "library")] + [v for v in vs if v == "library"]


def _frame(rows: dict[tuple[Any, ...], dict[str, Cell]], index_names: list[str], columns: list[str], df: pd.DataFrame) -> pd.DataFrame:
    keys = list(rows)
    if index_names:
        frame = pd.DataFrame(keys, columns=index_names)
        order = frame.sort_values(index_names, key=lambda s: _sort_key(s.name)(s), kind="stable").index
        keys = [keys[i] for i in order]
    data = [[rows[k].get(c, Cell("", Status.MISSING.value)) for c in columns] for k in keys]
    index = pd.MultiIndex.from_tuples(keys, names=index_names) if index_names else pd.Index([""] * len(keys))
    return pd.DataFrame(data, index=index, columns=columns)


def track_table(df: pd.DataFrame, params: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Tracked costs (one column per ``track_*`` metric, with its unit) of one case,
    indexed by the varying parameters and variant."""
    df = _present(df)
    if df.empty:
        return pd.DataFrame(), {}
    rest = [p for p in params if p != "variant"]
    varying, constant = fixed_params(df, rest)
    index_names = varying + (["variant"] if "variant" in params else [])
    metrics = list(dict.fromkeys(df["metric"]))
    rank = {v: i for i, v in enumerate(_variants(df))}
    rows: dict[tuple[Any, ...], dict[str, Cell]] = {}
    for r in df.sort_values("variant", key=lambda s: s.map(rank), kind="stable").to_dict("records"):
        key = tuple(r[p] for p in index_names)
        text = "failed" if r["status"] == "failed" else fmt_unit(r["value"], r["unit"])
        rows.setdefault(key, {})[r["metric"]] = Cell(text, Status.ERROR.value if r["status"] == "failed" else "")
    table = _frame(rows, index_names, metrics, df)
    table.columns = [metric_label(m, df) for m in metrics]
    return table, constant


def metric_label(metric: str, df: pd.DataFrame) -> str:
    """``track_temp_bytes`` -> ``temp_bytes``; ``time_call`` -> ``time per call (seconds)``."""
    name = "time per " + metric.removeprefix("time_") if metric.startswith("time_") else metric.removeprefix("track_")
    unit = str(df.loc[df["metric"] == metric, "unit"].iloc[0]) if (df["metric"] == metric).any() else ""
    return f"{name} ({unit})" if unit and unit not in name else name


def chart_selection(df: pd.DataFrame, params: Sequence[str], keep: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rows that ran, with every parameter not in ``keep`` fixed at one value (numbers at
    their largest, others at the first that has results). Returns the rows and the
    fixed values, for the caption."""
    d = df[df["status"] == "ok"]
    fixed: dict[str, Any] = {}
    for p in params:
        if p in keep or d.empty:
            continue
        vals = list(dict.fromkeys(d[p]))
        if len(vals) <= 1:
            if vals:
                fixed[p] = vals[0]
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            choice = max(vals)
        elif p == "dtype":
            choice = ordered(vals, DTYPE_ORDER)[0]
        else:
            choice = vals[0]
        fixed[p] = choice
        d = d[d[p] == choice]
    return d, fixed


def ratio_overview(newest_rows: pd.DataFrame, params: Sequence[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Time of every variant relative to ``naive``, one row per case and transform,
    other parameters fixed as in :func:`chart_selection`."""
    t = newest_rows[(newest_rows["type"] == "time") & (newest_rows["status"] == "ok")]
    if t.empty:
        return pd.DataFrame(), {}
    out: dict[tuple[Any, ...], dict[str, Cell]] = {}
    fixed_all: dict[str, Any] = {}
    variants: list[str] = []
    for (case, bench), g in t.groupby(["case", "benchmark"], sort=False):
        ps = param_columns(g, params)
        if step_param(ps) is not None or "variant" not in ps:
            continue
        keep = ["variant"] + (["transform"] if "transform" in ps else [])
        sel, fixed = chart_selection(g, ps, keep)
        fixed_all.update(fixed)
        for tr, gt in sel.groupby("transform", sort=False) if "transform" in ps else [("", sel)]:
            base = gt.loc[gt["variant"] == BASELINE, "value"]
            if base.empty:
                continue
            b = float(base.iloc[0])
            row = {}
            for r in gt.to_dict("records"):
                ratio = r["value"] / b if b > 0 else math.nan
                cls = "slower" if ratio > 1.5 else ("faster" if ratio < 0.9 else "")
                row[r["variant"]] = Cell(f"{ratio:.2f}\u00d7", cls, fmt_unit(r["value"], str(r["unit"])))
                if r["variant"] not in variants:
                    variants.append(r["variant"])
            out[(case, tr)] = row
    if not out:
        return pd.DataFrame(), {}
    cols = _variants(pd.DataFrame({"variant": variants}))
    return _frame(out, ["case", "transform"], cols, t), fixed_all
