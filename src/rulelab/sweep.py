"""The accuracy sweep: plan -> tasks -> store.

Phase 1 builds every sweep (one per case and dtype) and computes every reference the
plan needs in a process pool, *before* JAX starts its backend (the pool forks, and a
forked JAX is unsafe). References are taken once per case, derivative and argument over
the union of all dtypes' points (as float64), so one computation serves every dtype.
Phase 2 evaluates each task (case x variant x transform x argument x dtype) on the
backend, measures it against the reference and writes the task's part; float64 tasks
run last, with ``jax_enable_x64`` switched on only for them, so that the narrow dtypes'
results never depend on whether the plan has a float64 control. A variant that fails
is recorded as an error and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from rulelab import store
from rulelab.case import DERIVATIVE_ORDER, Case, get_case
from rulelab.errors import UsageError
from rulelab.evaluate import Outcome, evaluate, first_line
from rulelab.floats import round_double_double
from rulelab.inputs import Sweep, make_sweep
from rulelab.metrics import BUCKETS, binned, point_errors, summarize, worst
from rulelab.modules import load_modules, module_key
from rulelab.plan import Plan, plan_from_dict
from rulelab.reference import cache_dir, reference_pool, references

BACKENDS = ("cpu", "gpu", "tpu")
"""Backends a sweep may be asked to run on (None: JAX's default)."""


class SweepError(UsageError):
    """A sweep cannot start or continue as asked (nothing to run, no such backend …)."""


@dataclass(frozen=True)
class Task:
    """One result to compute: ``arg`` is the argument differentiated ("" for value)."""

    case: str
    variant: str
    transform: str
    arg: str
    dtype: str

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.case, self.variant, self.transform, self.arg, self.dtype)

    @property
    def order(self) -> int:
        return DERIVATIVE_ORDER[self.transform]

    def __str__(self) -> str:
        arg = f"[{self.arg}]" if self.arg else ""
        return f"{self.case}.{self.variant} {self.transform}{arg} {self.dtype}"


def plan_tasks(plan: Plan) -> list[Task]:
    """Every task of ``plan``, in the order the result tables list them."""
    tasks = []
    for name in plan.cases:
        case = get_case(name)
        for variant in plan.variants_of(case):
            for transform in plan.transforms:
                for arg in ("",) if transform == "value" else case.args:
                    for dtype in plan.dtypes:
                        tasks.append(Task(name, variant, transform, arg, dtype))
    return tasks


def execution_order(tasks: Sequence[Task]) -> list[Task]:
    """Tasks in the order they run: every narrow dtype first, float64 last (x64 on)."""
    return [t for t in tasks if t.dtype != "float64"] + [t for t in tasks if t.dtype == "float64"]


# --- phase 1: sweeps and references ---------------------------------------------------------


@dataclass(frozen=True)
class CaseInputs:
    """A case's sweeps in each dtype, the union of their points as float64, and where
    each dtype's points sit in that union."""

    sweeps: Mapping[str, Sweep]
    union: tuple[np.ndarray, ...]
    index: Mapping[str, np.ndarray]


def case_inputs(case: Case, plan: Plan, dtypes: Sequence[str]) -> CaseInputs:
    """Build ``case``'s sweeps for ``dtypes`` with the plan's sizes, and their union."""
    sweeps = {d: make_sweep(case, d, plan.spec(d, len(case.args)), plan.seed) for d in dtypes}
    cols = [np.concatenate([sweeps[d].points[i].astype(np.float64) for d in dtypes]) for i in range(len(case.args))]
    bits = np.stack([c.view(np.uint64) for c in cols], axis=1)
    _, first, inverse = np.unique(bits, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # the union in order of first appearance, so it does not depend on numpy's sort
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    union = tuple(c[first[order]] for c in cols)
    index, start = {}, 0
    for d in dtypes:
        n = len(sweeps[d])
        index[d] = rank[inverse[start : start + n]]
        start += n
    return CaseInputs(sweeps, union, index)


def reference_keys(tasks: Sequence[Task]) -> dict[str, list[tuple[int, str]]]:
    """Per case, the (derivative order, argument) references its tasks need."""
    need: dict[str, dict[tuple[int, str], None]] = {}
    for t in tasks:
        need.setdefault(t.case, {})[(t.order, t.arg if t.order else "")] = None
    return {c: list(keys) for c, keys in need.items()}


def _bar(total: int, desc: str, unit: str, enabled: bool, stream: TextIO) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=stream, disable=not enabled, dynamic_ncols=True, mininterval=0.5, leave=True)


def compute_references(
    inputs: Mapping[str, CaseInputs],
    keys: Mapping[str, Sequence[tuple[int, str]]],
    workers: int | None,
    progress: bool,
    stream: TextIO,
) -> dict[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]:
    """Every reference the tasks need, over each case's union of points (cache first)."""
    total = sum(len(inputs[c].union[0]) * len(ks) for c, ks in keys.items())
    out = {}
    with reference_pool(workers) as pool, _bar(total, "references", "pt", progress, stream) as bar:
        for name, ks in keys.items():
            case = get_case(name)
            for order, arg in ks:
                bar.set_postfix_str(f"{name} {'value' if not order else f'd{order}/d{arg}'}", refresh=False)
                out[(name, order, arg)] = references(case, order, arg or case.args[0], inputs[name].union, pool, bar.update)
    return out


# --- phase 2: one task --------------------------------------------------------------------------


def _pad_inputs(points: Sequence[np.ndarray], idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Input columns in0, in1, in2 (… for more arguments) as float64, NaN where absent."""
    cols = {}
    n = len(points[0]) if idx is None else len(idx)
    for i in range(max(len(store.POINT_INPUTS), len(points))):
        if i < len(points):
            x = np.asarray(points[i]).astype(np.float64)
            cols[f"in{i}"] = x if idx is None else x[idx]
        else:
            cols[f"in{i}"] = np.full(n, np.nan)
    return cols


def thin(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of at most ``k`` points spread evenly over ``x`` sorted (stable)."""
    order = np.argsort(np.asarray(x, dtype=np.float64), kind="stable")
    if len(order) <= k:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, k).round().astype(np.int64))]


def _keys(task: Task, backend: str, n: int) -> dict[str, list[str]]:
    return {"case": [task.case] * n, "variant": [task.variant] * n, "transform": [task.transform] * n,
            "arg": [task.arg] * n, "dtype": [task.dtype] * n, "backend": [backend] * n}  # fmt: skip


def _columns(df: pd.DataFrame) -> dict[str, Any]:
    return {c: df[c].to_numpy() for c in df.columns}


def task_tables(
    task: Task,
    case: Case,
    sweep: Sweep,
    outcome: Outcome,
    ref: tuple[np.ndarray, np.ndarray] | None,
    rounded: np.ndarray | None,
    plan: Plan,
    backend: str,
) -> dict[str, dict[str, Any]]:
    """The rows one task adds to each table (column -> values)."""
    conventions = "; ".join(c.note for c in case.conventions_for(task.arg, task.order)) if task.order else ""
    row: dict[str, Any] = {
        "status": outcome.status,
        "message": outcome.message,
        "n_points": len(sweep),
        "notes": "; ".join(outcome.notes),
        "conventions": conventions,
        "compile_s": outcome.compile_s,
        "run_s": outcome.run_s,
    }
    empty = {name: {} for name in ("binned", "worst", "samples")}
    if outcome.status != "ok" or outcome.values is None or ref is None:
        return {"summary": {**_keys(task, backend, 1), **{k: [v] for k, v in row.items()}}, **empty}
    hi, lo = ref
    values = outcome.values
    errors = point_errors(values, hi, lo, task.dtype, rounded)
    row.update(summarize(errors))
    wrong = errors.bucket == BUCKETS.index("wrong_nonfinite")
    row["wrong_nan"] = int(np.isnan(values.astype(np.float64)[wrong]).sum())
    row["wrong_inf"] = int(wrong.sum()) - row["wrong_nan"]
    summary = {**_keys(task, backend, 1), **{k: [v] for k, v in row.items()}}

    pos = case.args.index(task.arg) if task.arg else 0
    x = sweep.points[pos].astype(np.float64)
    b = binned(x, errors)
    b.insert(0, "binade_of", case.args[pos])
    w = worst(sweep.points, values, hi, lo, errors, k=plan.worst)
    w_cols = {**_pad_inputs([w[f"in{i}"].to_numpy() for i in range(len(case.args))]),
              **{c: w[c].to_numpy() for c in ("computed", "ref_hi", "ref_lo", "dulp", "frac_ulp")},
              "bucket": list(w["bucket"]), "rank": np.arange(len(w)), "args": [",".join(case.args)] * len(w)}  # fmt: skip
    idx = thin(x, plan.samples)
    s_cols = {**_pad_inputs(sweep.points, idx), "computed": values.astype(np.float64)[idx], "ref_hi": hi[idx], "dulp": errors.dulp[idx]}
    return {
        "summary": summary,
        "binned": {**_keys(task, backend, len(b)), **_columns(b)},
        "worst": {**_keys(task, backend, len(w)), **w_cols},
        "samples": {**_keys(task, backend, len(idx)), **s_cols},
    }


# --- facts recorded with a run -------------------------------------------------------------------


def versions() -> dict[str, str | None]:
    """Versions of the packages results depend on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("rulelab", "jax", "jaxlib", "numpy", "mpmath", "gmpy2", "ml_dtypes", "pandas", "pyarrow"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit(cwd: str | Path | None = None) -> dict[str, Any]:
    """The commit checked out in ``cwd`` (None outside a git repository) and whether the
    working tree has uncommitted changes to tracked files."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit, "dirty": dirty}


def host() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}


# --- the backend ---------------------------------------------------------------------------------------


def _probe(backend: str, conn: Any) -> None:
    try:
        import jax

        conn.send(("ok", [str(d) for d in jax.devices(backend)]))
    except Exception as exc:  # noqa: BLE001
        conn.send(("error", first_line(exc)))
    finally:
        conn.close()


def check_backend(backend: str | None) -> None:
    """Fail early (before references) when a named backend is absent. A backend that
    is not yet started is probed in a forked child, so this process stays fork-safe."""
    if backend is None or backend == "cpu":
        return
    if backend not in BACKENDS:
        raise SweepError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (or none for JAX's default)")
    import multiprocessing

    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        started = True
    if started or "fork" not in multiprocessing.get_all_start_methods():
        status, detail = "ok", ""
        try:
            import jax

            jax.devices(backend)
        except RuntimeError as exc:
            status, detail = "error", first_line(exc)
    else:
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_probe, args=(backend, child))
        p.start()
        child.close()
        status, detail = parent.recv() if parent.poll(300) else ("error", "the probe did not answer")
        p.join(10)
    if status != "ok":
        raise SweepError(f"backend {backend!r} is not available here ({detail}); run on cpu, or install the JAX plugin for {backend}")


def use_compilation_cache(enabled: bool) -> str | None:
    """Keep compiled XLA executables on disk (under the reference cache folder) so a
    repeated sweep skips compilation; returns the folder, None when off."""
    import jax

    if not enabled:
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return str(current)
    folder = cache_dir() / "jax"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return str(folder)


@contextlib.contextmanager
def _x64(enabled: bool) -> Iterator[None]:
    import jax

    old = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


# --- running ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """How to run (not what): backend (None: JAX's default), reference workers (None:
    every core), progress bars, the on-disk compilation cache, and where bars go."""

    backend: str | None = None
    workers: int | None = None
    progress: bool = True
    compile_cache: bool = True
    stream: TextIO = field(default=sys.stderr, compare=False)


@dataclass
class _Clock:
    """Seconds per phase in this session."""

    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("sweeps", "references", "backend_init", "compile", "evaluate", "metrics", "write", "assemble"), 0.0))  # fmt: skip

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] += time.perf_counter() - t0


def start(
    plan: Plan,
    root: str | Path = "results",
    modules: Sequence[str] = (),
    options: Options = Options(),
    on_start: Callable[[Path], None] | None = None,
) -> Path:
    """Run ``plan`` into a new run folder under ``root``; returns the folder.
    ``modules``: the user modules its cases come from (recorded, so a resume reloads
    them); ``on_start(run)`` is called once the folder exists."""
    tasks = plan_tasks(plan)
    if not tasks:
        raise SweepError(f"plan {plan.name!r} selects nothing to run (no variant of the chosen cases matches its variants)")
    check_backend(options.backend)
    run = store.new_run(root)
    meta = {
        "run_id": run.name,
        "status": "running",
        "plan": plan.to_dict(),
        "plan_text": Path(plan.path).read_text() if plan.path and Path(plan.path).is_file() else None,
        "modules": [module_key(m) for m in modules],
        "backend_requested": options.backend,
        "n_tasks": len(tasks),
        "versions": versions(),
        "git": git_commit(),
        "host": host(),
        "started": store.now(),
        "ended": None,
        "sessions": [],
    }
    store.write_meta(run, meta)
    if on_start:
        on_start(run)
    return _execute(run, meta, plan, tasks, root, options)


def resume(
    run_id: str, root: str | Path = "results", options: Options | None = None, on_start: Callable[[Path], None] | None = None
) -> Path:
    """Continue a run that stopped part-way: load its modules and plan as recorded and run
    only the tasks without a part. A complete run is returned as it is."""
    run = store.open_run(root, run_id)
    meta = store.read_meta(run)
    options = options or Options()
    if meta["status"] == "complete":
        return run
    requested = meta.get("backend_requested")
    if options.backend is not None and options.backend != requested:
        raise SweepError(f"run {run.name} was started with backend {requested!r}; resume it on the same backend (drop --backend)")
    load_modules(meta.get("modules", []))
    plan = plan_from_dict(meta["plan"])
    options = replace(options, backend=requested)
    check_backend(options.backend)
    if on_start:
        on_start(run)
    return _execute(run, meta, plan, plan_tasks(plan), run.parent.parent, options)


def _execute(run: Path, meta: dict[str, Any], plan: Plan, tasks: list[Task], root: str | Path, options: Options) -> Path:
    """Phases 1 and 2 for the tasks of ``run`` without a part, then the final tables."""
    clock = _Clock()
    session: dict[str, Any] = {"started": store.now(), "pid": os.getpid(), "host": socket.gethostname()}
    t_start = time.perf_counter()
    done = store.finished(run, [t.key for t in tasks])
    todo = execution_order([t for t in tasks if t.key not in done])

    # phase 1: sweeps and references (before the JAX backend starts: the pool forks)
    with clock.phase("sweeps"):
        dtypes_of: dict[str, list[str]] = {}
        for t in todo:
            dtypes_of.setdefault(t.case, [])
            if t.dtype not in dtypes_of[t.case]:
                dtypes_of[t.case].append(t.dtype)
        inputs = {c: case_inputs(get_case(c), plan, sorted(ds, key=plan.dtypes.index)) for c, ds in dtypes_of.items()}
    with clock.phase("references"):
        refs = compute_references(inputs, reference_keys(todo), options.workers, options.progress, options.stream)

    # phase 2: evaluate, measure, write
    with clock.phase("backend_init"):
        import jax

        session["jax_compilation_cache"] = use_compilation_cache(options.compile_cache)
        narrow = tuple(d for d in plan.dtypes if d != "float64")
        facts = _backend_facts(options.backend, narrow, "float64" in plan.dtypes)
    session["backend"] = facts
    meta.setdefault("backend", facts)
    if facts["backend"] != meta["backend"]["backend"]:
        raise SweepError(f"run {run.name} ran on {meta['backend']['backend']}; this session's backend is {facts['backend']}")
    session["phases"] = clock.phases
    meta["sessions"].append(session)
    store.write_meta(run, meta)
    backend = facts["backend"]
    rounded: dict[tuple[str, int, str, str], np.ndarray] = {}  # references rounded per dtype, one case at a time
    n_run = 0
    with _bar(len(todo), "evaluate", "task", options.progress, options.stream) as bar:
        for t in todo:
            bar.set_postfix_str(str(t), refresh=False)
            if rounded and next(iter(rounded))[0] != t.case:
                rounded.clear()
            t0 = time.perf_counter()
            tables = _run_task(t, inputs[t.case], refs, rounded, plan, options.backend, backend, clock)
            with clock.phase("write"):
                store.write_part(run, t.key, tables, {"wall_s": time.perf_counter() - t0})
            n_run += 1
            bar.update(1)

    with clock.phase("assemble"):
        keys = [t.key for t in tasks]
        parts = store.finished(run, keys)
        tables = store.assemble(run, keys, parts)
    session.update(ended=store.now(), tasks_run=n_run, wall_s=time.perf_counter() - t_start, phases=clock.phases)
    meta["phases"] = {k: sum(s.get("phases", {}).get(k, 0.0) for s in meta["sessions"]) for k in clock.phases}
    meta["tasks"] = {"/".join(k): parts[tuple(k)]["info"].get("wall_s") for k in keys}
    meta["counts"] = {s: int((tables["summary"]["status"] == s).sum()) for s in ("ok", "unsupported", "error")}
    meta.update(status="complete", ended=store.now())
    store.write_meta(run, meta)
    store.set_latest(root, run.name)
    store.remove_parts(run)
    return run


def _backend_facts(backend: str | None, narrow: tuple[str, ...], with64: bool) -> dict[str, Any]:
    from rulelab.evaluate import backend_facts, flushes_subnormals

    facts = backend_facts(backend, narrow)
    if with64:
        with _x64(True):
            facts["flushes_subnormals"]["float64"] = flushes_subnormals("float64", backend)
        facts["x64"] = "float64 tasks only"
    return facts


def _run_task(
    t: Task,
    inp: CaseInputs,
    refs: Mapping[tuple[str, int, str], tuple[np.ndarray, np.ndarray]],
    rounded: dict[tuple[str, int, str, str], np.ndarray],
    plan: Plan,
    backend: str | None,
    platform_name: str,
    clock: _Clock,
) -> dict[str, dict[str, Any]]:
    """Evaluate and measure one task; any failure becomes an error row."""
    case = get_case(t.case)
    sweep = inp.sweeps[t.dtype]
    try:
        with clock.phase("evaluate"), _x64(t.dtype == "float64"):
            outcome = evaluate(case, t.variant, t.transform, t.arg or None, t.dtype, sweep.points, backend)
        clock.phases["evaluate"] -= outcome.compile_s
        clock.phases["compile"] += outcome.compile_s
        with clock.phase("metrics"):
            key = (t.case, t.order, t.arg)
            hi, lo = refs[key]
            idx = inp.index[t.dtype]
            ref = (hi[idx], lo[idx])
            rkey = (*key, t.dtype)
            if outcome.status == "ok" and rkey not in rounded:
                rounded[rkey] = round_double_double(ref[0], ref[1], t.dtype)
            return task_tables(t, case, sweep, outcome, ref, rounded.get(rkey), plan, platform_name)
    except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the others
        where = f"case {t.case!r}, variant {t.variant!r}, transform {t.transform!r}, dtype {t.dtype}"
        failed = Outcome("error", f"{where}: {first_line(exc)}")
        return task_tables(t, case, sweep, failed, None, None, plan, platform_name)


# --- the closing table ---------------------------------------------------------------------------------


def _fmt_ulp(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{int(v)}" if v < 1e5 else f"{v:.1e}".replace("e+0", "e").replace("e+", "e")


def cell(rows: pd.DataFrame) -> str:
    """One table cell: the worst max dULP over a result's arguments, with non-finite
    counts flagged, or 'unsup' / 'ERR'."""
    ok = rows[rows["status"] == "ok"]
    if ok.empty:
        return "ERR" if (rows["status"] == "error").any() else "unsup"
    text = _fmt_ulp(float(ok["max_ulp"].max(skipna=True))) if ok["max_ulp"].notna().any() else "-"
    for col, label in (("wrong_nan", "NaN"), ("wrong_inf", "inf"), ("unexpected_finite", "fin")):
        n = int(ok[col].fillna(0).sum())
        if n:
            text += f" {label}×{n}"
    if (rows["status"] == "error").any():
        text += " ERR"
    elif (rows["status"] == "unsupported").any():
        text += " (unsup)"
    return text


def format_table(summary: pd.DataFrame, plan: Plan) -> str:
    """Max dULP per case x variant x dtype (rows) and transform (columns)."""
    if summary.empty:
        return "(no results)"
    header = ["case", "variant", "dtype", *plan.transforms]
    rows = []
    for (case, variant, dtype), g in summary.groupby(["case", "variant", "dtype"], sort=False):
        rows.append([case, variant, dtype, *(cell(g[g["transform"] == t]) if (g["transform"] == t).any() else "" for t in plan.transforms)])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    last = None
    for r in rows:
        shown = list(r)
        if last is not None and r[0] == last[0]:
            shown[0] = ""
            if r[1] == last[1]:
                shown[1] = ""
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(shown, widths)).rstrip())
        last = r
    lines.append("")
    lines.append(
        "max dULP over the sweep (worst argument for derivatives). NaN×k / inf×k: k results NaN / infinite where the "
        "reference is finite; fin×k: finite where the reference is not; unsup: JAX cannot apply the transform; ERR: "
        "the variant failed (summary.parquet has the message)."
    )
    return "\n".join(lines)


def report_text(run: Path) -> str:
    """The closing table of a complete run and where its files are."""
    meta = store.read_meta(run)
    plan = plan_from_dict(meta["plan"])
    summary = store.load_table(run, "summary")
    counts = meta.get("counts", {})
    phases = meta.get("phases", {})
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in phases.items() if v >= 0.05)
    return (
        f"{format_table(summary, plan)}\n\n"
        f"{len(summary)} results ({counts.get('ok', 0)} ok, {counts.get('unsupported', 0)} unsupported, "
        f"{counts.get('error', 0)} errors) on {meta['backend']['backend']} ({meta['backend']['device_kind']}); {timing}\n"
        f"run folder: {run}"
    )

