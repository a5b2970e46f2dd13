"""The results of accuracy runs: layout, schema and atomic, resumable writes.

Layout (``root`` is the results folder, ``results/`` by default)::

    root/accuracy/latest                 the id of the most recently completed run (text)
    root/accuracy/<run-id>/meta.json     plan as run, versions, backend facts, git commit,
                                         host, times per phase and per task, status
    root/accuracy/<run-id>/parts/        one file per finished task (while running)
    root/accuracy/<run-id>/summary.parquet, binned.parquet, worst.parquet, samples.parquet
    root/accuracy/<run-id>/timings.parquet  the quick timings of ``rulelab study``

Every name in it (files, columns, buckets, statuses) is spelled out once, in
:mod:`rulelab.store.vocabulary`.

meta.json is a :class:`~rulelab.store.vocabulary.RunMeta` (plan as run, user modules,
versions, backend facts, git commit, host, sessions, times per phase and per task,
status) plus ``schema_version``; only this module reads and writes it.

Every table has the key columns ``case, variant, transform, arg, dtype, backend``: one
*result* is one case x variant x transform x differentiated argument (``arg``, "" for
``value``) x dtype x backend. The columns of each table are :data:`TABLES`; the layout
and the columns carry :data:`SCHEMA_VERSION`, raised whenever either changes.

Every file is written to a temporary name and renamed over its final name, so a reader
(or a run killed at any instant, SIGKILL included) sees a whole file or none. A task's
part file appears only when the task is finished; resuming a run recomputes exactly the
tasks without one. The final tables are assembled from the parts in the plan's task
order, so a resumed run's tables equal an uninterrupted run's (timing columns aside).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import pickle
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rulelab.core.errors import UsageError
from rulelab.core.files import atomic_write
from rulelab.store.vocabulary import (
    ACCURACY_DIR,
    BINNED,
    BLAME,
    BLAME_FILE,
    COMPLETE,
    KEYS,
    LATEST_FILE,
    META_FILE,
    PARTS_DIR,
    POINT_INPUTS,
    SAMPLES,
    SCHEMA_VERSION,
    SUMMARY,
    TABLES,
    TIMING_COLUMNS,
    TIMINGS_FILE,
    WORST,
    RunMeta,
    table_file,
)

__all__ = ["BINNED", "KEYS", "POINT_INPUTS", "SAMPLES", "SCHEMA_VERSION", "SUMMARY", "TABLES", "TIMING_COLUMNS", "WORST", "RunMeta"]  # re-exported


class StoreError(UsageError):
    """A run folder is missing, incomplete or of another schema."""


# --- atomic files --------------------------------------------------------------------------


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, then rename)."""
    atomic_write(path, data)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Write a table as parquet, atomically."""
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


# --- runs ---------------------------------------------------------------------------------


def accuracy_dir(root: str | Path) -> Path:
    """Where accuracy runs live under a results folder."""
    return Path(root) / ACCURACY_DIR


def now() -> str:
    """The current time, ISO 8601 with the UTC offset."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def new_run(root: str | Path) -> Path:
    """Create a fresh, empty run folder with a unique id (UTC time, pid, random suffix),
    made with an exclusive mkdir so that runs started together never share one."""
    base = accuracy_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for _ in range(100):
        run = base / f"{stamp}-{os.getpid()}-{secrets.token_hex(2)}"
        try:
            run.mkdir()
        except FileExistsError:
            continue
        (run / PARTS_DIR).mkdir()
        return run
    raise StoreError(f"could not create a unique run folder under {base}")


def open_run(root: str | Path, run_id: str) -> Path:
    """The folder of an existing run under ``root``. A run id is a name, never a path
    (a path could reach outside the results folder)."""
    if not run_id or run_id in (".", "..") or "/" in run_id or os.sep in run_id:
        raise StoreError(
            f"{run_id!r} is not a run id: give the name of a folder under {accuracy_dir(root)} "
            "(and --results for another results folder)"
        )
    run = accuracy_dir(root) / run_id
    if not (run / META_FILE).is_file():
        known = ", ".join(list_runs(root)[-5:]) or "(none)"
        raise StoreError(f"no run {run_id!r} under {accuracy_dir(root)} (no meta.json there); recent runs: {known}")
    return run


def list_runs(root: str | Path) -> list[str]:
    """Ids of every run under ``root`` (complete or not), oldest first."""
    base = accuracy_dir(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / META_FILE).is_file())


def read_meta(run: Path) -> RunMeta:
    """A run's meta.json; refuses another schema version."""
    try:
        data = json.loads((run / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{run / META_FILE} is unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise StoreError(f"{run} has results schema {version!r}; this rulelab reads schema {SCHEMA_VERSION}")
    try:
        return RunMeta.from_json(data)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{run / META_FILE} does not fit schema {SCHEMA_VERSION}: {exc}") from None


def write_meta(run: Path, meta: RunMeta) -> None:
    """Write a run's meta.json atomically."""
    write_json(run / META_FILE, {"schema_version": SCHEMA_VERSION, **meta.to_json()})


def set_latest(root: str | Path, run_id: str) -> None:
    """Name ``run_id`` as the latest complete run (under a lock, atomically)."""
    base = accuracy_dir(root)
    with open(base / ".latest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_bytes(base / LATEST_FILE, f"{run_id}\n".encode())


def latest(root: str | Path) -> Path | None:
    """The folder of the most recently completed run, or None."""
    try:
        run_id = (accuracy_dir(root) / LATEST_FILE).read_text().strip()
    except OSError:
        return None
    run = accuracy_dir(root) / run_id
    return run if run_id and run.is_dir() else None


def complete_run(ref: str | Path | None, root: str | Path = "results") -> Path:
    """The folder of a complete run named by ``ref``: a run folder, a results root (its
    newest complete run), a run id under ``root``, or None (the newest under ``root``)."""
    if ref is not None and (Path(ref) / ACCURACY_DIR).is_dir():
        root, ref = ref, None
    if ref is None:
        run = latest(root)
        if run is None:
            raise StoreError(f"no complete run under {accuracy_dir(root)}: sweep one first (rulelab sweep, or rulelab.sweep)")
    else:
        run = Path(ref) if (Path(ref) / META_FILE).is_file() else open_run(root, str(ref))
    meta = read_meta(run)
    if meta.status != COMPLETE:
        raise StoreError(f"run {meta.run_id} is {meta.status}, not complete: continue it with rulelab sweep --resume {meta.run_id} "
                         f"--results {run.parent.parent}")
    return run


# --- pickled files: parts and exhaustive chunks ---------------------------------------------

MOVED_MODULES = {
    "rulelab.exhaustive": ("rulelab.scoring.chunks", "rulelab.model.exhaustive_spec"),
    "rulelab.chunkscore": ("rulelab.scoring.chunks",),
    "rulelab.fastref": ("rulelab.reference.fast",),
    "rulelab.metrics": ("rulelab.scoring.metrics",),
    "rulelab.case": ("rulelab.model.case",),
    "rulelab.tasks": ("rulelab.model.tasks",),
}
"""Where the classes that files written by an earlier layout name now live (the first of
these modules that has the class), so that a run started before a move still resumes
and assembles: chunk files name ``rulelab.exhaustive.Aggregate`` or
``rulelab.chunkscore.Aggregate``."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        for candidate in MOVED_MODULES.get(module, ()):
            try:
                return super().find_class(candidate, name)
            except AttributeError:
                continue
        return super().find_class(module, name)


def read_pickle(path: Path) -> Any:
    """The object pickled in ``path`` (classes of modules that moved are found where they are now)."""
    with open(path, "rb") as f:
        return _Unpickler(f).load()


# --- parts: one file per finished task -----------------------------------------------------


def part_name(key: Sequence[str]) -> str:
    """File name of a task's part: readable, and unique by a hash of the exact key."""
    readable = re.sub(r"[^A-Za-z0-9_.+-]", "_", ".".join(k or "-" for k in key))[:120]
    digest = hashlib.sha256("\x00".join(key).encode()).hexdigest()[:10]
    return f"{readable}.{digest}.part"


def write_part(run: Path, key: Sequence[str], tables: Mapping[str, Mapping[str, Any]], info: Mapping[str, Any]) -> Path:
    """Record a finished task: its rows of each table (column -> array or list) and
    ``info`` (wall time …). Atomic, so the part exists only once it is whole."""
    data = {"key": list(key), "schema_version": SCHEMA_VERSION, "tables": dict(tables), "info": dict(info)}
    path = run / PARTS_DIR / part_name(key)
    write_bytes(path, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def read_part(path: Path) -> dict[str, Any] | None:
    """A part's content, or None when it is unreadable (then its task is run again)."""
    try:
        data = read_pickle(path)
    except Exception:  # noqa: BLE001 - an unreadable part is just unfinished work
        return None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        return None
    return data


def written(run: Path, keys: Iterable[Sequence[str]]) -> list[tuple[str, ...]]:
    """The keys whose part file exists (without reading the parts)."""
    return [tuple(k) for k in keys if (run / PARTS_DIR / part_name(k)).exists()]


def finished(run: Path, keys: Iterable[Sequence[str]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The parts of ``keys`` already written: {key: part}. Unreadable parts are moved
    aside (``.bad``) so that their tasks are recomputed."""
    out = {}
    for key in keys:
        path = run / PARTS_DIR / part_name(key)
        if not path.exists():
            continue
        part = read_part(path)
        if part is None or tuple(part["key"]) != tuple(key):
            with contextlib.suppress(OSError):
                path.replace(path.with_suffix(".bad"))
            continue
        out[tuple(key)] = part
    return out


def empty_table(name: str) -> pd.DataFrame:
    """A table of no rows with every column at its documented dtype."""
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, (t, _) in TABLES[name].items()})


def _frame(name: str, columns: Mapping[str, Any]) -> pd.DataFrame:
    """A table from column arrays: documented columns first, at their dtypes."""
    df = pd.DataFrame(dict(columns))
    if df.empty:
        return empty_table(name)
    for c, (t, _) in TABLES[name].items():
        df[c] = df[c].astype(t) if c in df else pd.Series(np.nan, index=df.index).astype(t)
    extra = [c for c in df.columns if c not in TABLES[name]]
    return df[list(TABLES[name]) + extra]


def _concat(blocks: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Join column blocks (column -> values, equal lengths within a block) end to end; a
    column missing from a block is NaN there."""
    blocks = [b for b in blocks if b and len(next(iter(b.values())))]
    names = list(dict.fromkeys(c for b in blocks for c in b))
    out = {}
    for c in names:
        pieces = []
        for b in blocks:
            n = len(next(iter(b.values())))
            pieces.append(np.asarray(b[c], dtype=object if isinstance(b[c], list) else None) if c in b else np.full(n, np.nan))
        out[c] = np.concatenate(pieces) if pieces else np.array([])
    return out


def assemble(
    run: Path, keys: Sequence[Sequence[str]], parts: Mapping[tuple[str, ...], Mapping[str, Any]] | None = None
) -> dict[str, pd.DataFrame]:
    """Build every table from the parts of ``keys`` (read from ``run`` unless given) in
    that order and write the parquet files. Every key must have its part."""
    parts = finished(run, keys) if parts is None else parts
    missing = [k for k in keys if tuple(k) not in parts]
    if missing:
        raise StoreError(f"{run}: {len(missing)} task(s) have no part, e.g. {'/'.join(missing[0])}")
    out = {}
    for name in TABLES:
        df = _frame(name, _concat([parts[tuple(k)]["tables"][name] for k in keys]))
        write_parquet(run / table_file(name), df)
        out[name] = df
    return out


def remove_parts(run: Path) -> None:
    """Delete the parts once the final tables are written."""
    folder = run / PARTS_DIR
    for p in folder.glob("*.part"):
        with contextlib.suppress(OSError):
            p.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def load_table(run: str | Path, name: str) -> pd.DataFrame:
    """One table of a complete run."""
    path = Path(run) / table_file(name)
    if name not in TABLES:
        raise StoreError(f"no table {name!r}; tables: {', '.join(TABLES)}")
    if not path.is_file():
        raise StoreError(f"{path} does not exist: the run is not complete (resume it with rulelab sweep --resume)")
    return pd.read_parquet(path)


# --- reading runs for reports: tolerant, never raising -------------------------------------


@dataclass(frozen=True)
class RunContents:
    """What a run folder holds, read without failing: its meta (empty if unreadable), each
    table (None where absent or unreadable; a running or stopped run's tables come from
    the parts it finished), and what is missing or unreadable."""

    path: Path
    meta: Mapping[str, Any]
    tables: Mapping[str, pd.DataFrame | None]
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return str(self.meta.get("status") or "unknown")

    @property
    def damage(self) -> tuple[str, ...]:
        """Why this run cannot stand as a complete result: problems, absent files, or a
        status other than complete."""
        status = () if self.status == COMPLETE else (f"status {self.status}",)
        return (*status, *(f"{m} is missing" for m in self.missing), *self.problems)


def _parts_tables(folder: Path) -> dict[str, pd.DataFrame]:
    frames: dict[str, list[pd.DataFrame]] = {}
    for file in sorted(folder.glob("*.part")) if folder.is_dir() else ():
        part = read_part(file)
        for name, columns in ((part or {}).get("tables") or {}).items():
            try:
                df = pd.DataFrame(dict(columns))
            except (TypeError, ValueError):
                continue
            if len(df) and name in TABLES:
                frames.setdefault(name, []).append(df)
    return {name: pd.concat(fs, ignore_index=True) for name, fs in frames.items()}


def inspect_run(run: str | Path) -> RunContents:
    """Read a run folder for a report: whatever can be read, and a list of the rest."""
    path = Path(run)
    problems: list[str] = []
    missing: list[str] = []
    meta: dict[str, Any] = {}
    if not path.is_dir():
        return RunContents(path, meta, dict.fromkeys(TABLES), (), (f"{path} is not a folder",))
    if (path / META_FILE).is_file():
        try:
            meta = json.loads((path / META_FILE).read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{META_FILE} unreadable: {exc}")
        if meta and meta.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"results schema {meta.get('schema_version')!r}, this rulelab reads schema {SCHEMA_VERSION}")
    else:
        missing.append(META_FILE)
    tables: dict[str, pd.DataFrame | None] = {}
    from_parts = _parts_tables(path / PARTS_DIR) if not (path / table_file("summary")).is_file() else {}
    for name in TABLES:
        file = path / table_file(name)
        if not file.is_file():
            tables[name] = from_parts.get(name)
            if name not in from_parts:
                missing.append(file.name)
            continue
        try:
            tables[name] = pd.read_parquet(file)
        except Exception as exc:  # noqa: BLE001 - a half-written or foreign file must not stop a report
            problems.append(f"{file.name} unreadable: {exc}")
            tables[name] = None
    return RunContents(path, meta, tables, tuple(missing), tuple(problems))


def write_blame(run: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store a run's blame table (``vocabulary.BLAME``'s columns, one row per localized point)."""
    df = pd.DataFrame({c: [r.get(c) for r in rows] for c in BLAME})
    write_parquet(run / BLAME_FILE, df.astype({c: t for c, (t, _) in BLAME.items()}))


def load_blame(run: str | Path) -> pd.DataFrame:
    """A run's blame table (empty, with its columns, for a run without one)."""
    path = Path(run) / BLAME_FILE
    return pd.read_parquet(path) if path.is_file() else empty_blame()


def empty_blame() -> pd.DataFrame:
    """A blame table without rows."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, (t, _) in BLAME.items()})


def write_timings(run: Path, df: pd.DataFrame) -> None:
    """Store the quick in-process timings of ``rulelab study`` in its run."""
    write_parquet(run / TIMINGS_FILE, df)


def load_timings(run: str | Path) -> pd.DataFrame | None:
    """A run's study timings, or None when it has none."""
    path = Path(run) / TIMINGS_FILE
    return pd.read_parquet(path) if path.is_file() else None
