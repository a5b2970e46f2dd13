"""Read what the report shows: accuracy run folders (meta.json and parquet tables) and
asv's result files. Nothing is computed here beyond tidying; anything absent or
unreadable is recorded so pages can say what is missing instead of failing."""

from __future__ import annotations

import ast
import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rulelab import store
from rulelab.store.vocabulary import TEXT_COLUMNS, Status

KEYS: tuple[str, ...] = tuple(store.KEYS)
"""Columns that identify one evaluation in every accuracy table."""

TABLES: Mapping[str, tuple[str, ...]] = {name: tuple(columns) for name, columns in store.TABLES.items()}
"""The columns the report reads from each table (the store's schema)."""


@dataclass(frozen=True)
class RunInfo:
    """One accuracy run folder: its meta.json and which tables it lacked."""

    path: Path
    meta: Mapping[str, Any]
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def status(self) -> str:
        return str(self.meta.get("status") or "unknown")


@dataclass(frozen=True)
class Accuracy:
    """The accuracy tables of one or more runs, concatenated (a ``run`` column names the
    source); where two runs hold the same key the later-started one wins."""

    runs: tuple[RunInfo, ...]
    summary: pd.DataFrame
    binned: pd.DataFrame
    worst: pd.DataFrame
    samples: pd.DataFrame
    blame: pd.DataFrame = field(default_factory=store.empty_blame)
    """Why failing results fail: the operation and line blamed at their worst inputs."""
    binned2: pd.DataFrame = field(default_factory=lambda: _empty("binned2"))
    """The error maps of cases of two arguments: per pair of binades of their arguments."""

    @property
    def empty(self) -> bool:
        return self.summary.empty

    def cases(self) -> list[str]:
        """Case names in the order the runs list them."""
        return list(dict.fromkeys(self.summary["case"]))


RUN = "run"
"""The column the report adds to every table: the run a row was read from (not part of
what the row measured, so never an input to a figure)."""


def _empty(name: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in TEXT_COLUMNS else float) for c in (*TABLES[name], RUN)})


def _tidy(df: pd.DataFrame, name: str, run_id: str) -> pd.DataFrame:
    df = df.copy()
    for c in TABLES[name]:
        if c not in df.columns:
            df[c] = "" if c in TEXT_COLUMNS else np.nan
    for c in TEXT_COLUMNS:  # plain Python strings (object dtype): fast to compare and filter
        if c in df.columns:
            missing = df[c].isna().to_numpy()
            text = df[c].astype(str).astype(object)
            text[missing] = ""
            df[c] = text
    for c in df.columns:  # numbers as float64 / int64 (NaN for missing), not nullable extension types
        if c not in TEXT_COLUMNS and c in TABLES[name]:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    if name == "summary":
        df["status"] = df["status"].replace("", Status.OK.value)
    df[RUN] = pd.Series([run_id] * len(df), index=df.index, dtype=object)
    return df


def load_run(path: Path) -> tuple[RunInfo, dict[str, pd.DataFrame]]:
    """Read one run folder through the store. Absent tables come back empty and are
    named in ``RunInfo.missing``; unreadable ones in ``RunInfo.problems``."""
    contents = store.inspect_run(path)
    run_id = str(contents.meta.get("run_id") or Path(path).name)
    tables = {name: _empty(name) if df is None else _tidy(df, name, run_id) for name, df in contents.tables.items()}
    return RunInfo(Path(path), contents.meta, contents.missing, contents.problems), tables


def load_accuracy(paths: Sequence[Path]) -> Accuracy:
    """Read and combine accuracy runs (e.g. one per backend)."""
    loaded = [load_run(Path(p)) for p in paths]
    loaded.sort(key=lambda item: str(item[0].meta.get("started") or ""))
    infos = tuple(info for info, _ in loaded)
    combined: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        frames = [tables[name] for _, tables in loaded if not tables[name].empty]
        if not frames:
            combined[name] = _empty(name)
            continue
        df = pd.concat(frames, ignore_index=True)
        if len(frames) > 1:
            # a key present in several runs: keep the rows of the latest-started run
            latest = df.groupby(list(KEYS), sort=False)[RUN].transform("last")
            df = df[df[RUN] == latest].reset_index(drop=True)
        combined[name] = df
    blames = [store.load_blame(info.path).assign(**{RUN: info.path.name}) for info in infos]
    blame = pd.concat([b for b in blames if not b.empty], ignore_index=True) if any(not b.empty for b in blames) else store.empty_blame()
    return Accuracy(infos, **combined, blame=blame)


def latest_runs(results_dir: Path, warn: Callable[[str], None] | None = None) -> list[Path]:
    """The newest complete run under ``results_dir`` (``results/accuracy``) per backend,
    for a report of "the current state" when no run is named. A newer run that is
    damaged or unfinished is passed over, and ``warn`` is told which and why."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    newest: dict[str, tuple[str, Path]] = {}
    passed_over: list[tuple[str, str, Path, tuple[str, ...]]] = []
    for d in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        contents = store.inspect_run(d)
        meta = contents.meta
        if not meta:  # not a run, or one whose meta.json cannot be read
            if contents.problems and warn:
                warn(f"run {d.name} is passed over ({'; '.join(contents.problems)})")
            continue
        backend = str((meta.get("backend") or {}).get("backend", "") if isinstance(meta.get("backend"), Mapping) else meta.get("backend", ""))
        started = str(meta.get("started") or d.name)
        if contents.damage:
            passed_over.append((backend, started, d, contents.damage))
        elif backend not in newest or started >= newest[backend][0]:
            newest[backend] = (started, d)
    for backend, started, d, damage in passed_over:
        if warn and (backend not in newest or started > newest[backend][0]):
            chosen = [newest[backend]] if backend in newest else [] if backend else sorted(newest.values())  # (no backend yet: any)
            instead = f"; the report uses {', '.join(c[1].name for c in chosen)}" if chosen else "; no complete run to report instead"
            warn(f"run {d.name} is passed over ({'; '.join(damage)}){instead}")
    return [p for _, p in sorted(newest.values())]


# --- asv ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """asv results in long form: one row per benchmark, parameter combination, machine
    and commit. ``results`` columns: machine, commit, date, env, benchmark, suite,
    group, case, metric, type, unit, status (ok / skipped / failed), value, and one
    column per parameter name (None where a benchmark lacks that parameter)."""

    results: pd.DataFrame
    param_names: tuple[str, ...]
    machines: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    dashboard: Path | None = None

    @property
    def empty(self) -> bool:
        return self.results.empty or not (self.results["status"] == "ok").any()


_BENCH_COLUMNS = ("machine", "commit", "date", "env", "benchmark", "suite", "group", "case", "metric", "type", "unit", "status", "value")


def _literal(text: Any) -> Any:
    """An asv parameter value: asv stores ``repr`` strings ("'naive'", "16")."""
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_name(name: str) -> tuple[str, str, str]:
    parts = name.split(".")
    if len(parts) >= 3:
        return ".".join(parts[:-2]), parts[-2], parts[-1]
    if len(parts) == 2:
        return parts[0], "", parts[1]
    return "", "", name


def _result_rows(doc: Mapping[str, Any], machine: str, benchmarks: Mapping[str, Any]) -> list[dict[str, Any]]:
    columns = list(doc.get("result_columns") or ["result", "params"])
    rows: list[dict[str, Any]] = []
    date = pd.to_datetime(doc.get("date"), unit="ms", utc=True) if doc.get("date") else pd.NaT
    for name, entry in (doc.get("results") or {}).items():
        record = dict(zip(columns, entry)) if isinstance(entry, list) else {"result": entry}
        meta = benchmarks.get(name, {})
        params = record.get("params") or meta.get("params") or []
        names = list(meta.get("param_names") or [f"param{i + 1}" for i in range(len(params))])
        values = [[_literal(v) for v in axis] for axis in params]
        combos = [tuple(c) for c in itertools.product(*values)]
        result = record.get("result")
        if not isinstance(result, list):
            result = [result] * len(combos)
        suite, group, metric = _split_name(name)
        kind = meta.get("type") or ("time" if metric.startswith("time_") else "track")
        for combo, value in zip(combos, result):
            if value is None:
                status, v = "failed", math.nan
            else:
                v = float(value)
                status = "skipped" if math.isnan(v) else "ok"
            row = {
                "machine": machine,
                "commit": str(doc.get("commit_hash", "")),
                "date": date,
                "env": str(doc.get("env_name", "")),
                "benchmark": name,
                "suite": suite,
                "group": group,
                "case": group,
                "metric": metric,
                "type": kind,
                "unit": str(meta.get("unit", "seconds" if kind == "time" else "")),
                "status": status,
                "value": v,
            }
            row.update(dict(zip(names, combo)))
            rows.append(row)
    return rows


GROUP_SUFFIXES: tuple[str, ...] = ("_memory", "_steps", "_tracks")
"""A benchmark class named ``<case><suffix>`` (``newton_sqrt_memory``) measures ``<case>``."""


def _case_names(groups: Sequence[str]) -> dict[str, str]:
    """Map benchmark class names to case names (see :data:`GROUP_SUFFIXES`)."""
    known = set(groups)
    out = {}
    for g in known:
        out[g] = g
        for suffix in GROUP_SUFFIXES:
            if g.endswith(suffix) and g[: -len(suffix)] in known:
                out[g] = g[: -len(suffix)]
    return out


def load_asv(asv_dir: Path | None, html_dir: Path | None = None) -> Bench:
    """Read ``results/asv`` (asv 0.6 format: ``<machine>/machine.json``,
    ``<machine>/<commit>-<env>.json`` and ``benchmarks.json``). ``html_dir`` is where
    ``asv publish`` writes its dashboard, linked when its index exists."""
    dashboard = Path(html_dir) / "index.html" if html_dir is not None else None
    dashboard = dashboard if dashboard is not None and dashboard.is_file() else None
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in _BENCH_COLUMNS})
    if asv_dir is None or not Path(asv_dir).is_dir():
        return Bench(empty, (), {}, (), dashboard)
    asv_dir = Path(asv_dir)
    problems: list[str] = []
    benchmarks: dict[str, Any] = {}
    bfile = asv_dir / "benchmarks.json"
    if bfile.is_file():
        try:
            benchmarks = json.loads(bfile.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"benchmarks.json unreadable: {exc}")
    machines: dict[str, Mapping[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for mdir in sorted(p for p in asv_dir.iterdir() if p.is_dir()):
        mfile = mdir / "machine.json"
        if mfile.is_file():
            try:
                machines[mdir.name] = json.loads(mfile.read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"{mdir.name}/machine.json unreadable: {exc}")
        for rfile in sorted(mdir.glob("*.json")):
            if rfile.name == "machine.json":
                continue
            try:
                doc = json.loads(rfile.read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"{mdir.name}/{rfile.name} unreadable: {exc}")
                continue
            if doc.get("version") != 2:
                problems.append(f"{mdir.name}/{rfile.name}: asv results version {doc.get('version')!r} not read (expected 2)")
                continue
            rows.extend(_result_rows(doc, mdir.name, benchmarks))
    if not rows:
        return Bench(empty, (), machines, tuple(problems), dashboard)
    df = pd.DataFrame(rows)
    cases = _case_names(list(dict.fromkeys(df["group"])))
    df["case"] = df["group"].map(cases)
    param_names = tuple(c for c in df.columns if c not in _BENCH_COLUMNS)
    for c in param_names:  # keep parameter values as asv gave them (ints stay ints)
        df[c] = pd.Series([row.get(c) for row in rows], index=df.index, dtype=object)
    return Bench(df, param_names, machines, tuple(problems), dashboard)
