"""The ``rulelab`` command: ``cases``, ``sweep``, ``report``, ``study``, ``blame``, ``check``.

Each subcommand is one ``add_<name>`` function (its parser block, which sets ``run``)
and one ``cmd_<name>`` function (what it does, returning the exit status); adding a
subcommand is writing both and listing ``add_<name>`` in :data:`SUBCOMMANDS`.

A mistake in what was asked (unknown case, malformed plan, module that fails to import,
absent backend) prints one paragraph and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rulelab.core.errors import UsageError
from rulelab.model.case import CaseError
from rulelab.runs.cluster import SCHEDULER_ENV, scheduler_address

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, as a tool killed by a closed pipe reports."""


def _names(values: Sequence[str] | None) -> list[str] | None:
    """Option values given space- or comma-separated."""
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


def add_module_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--module",
        metavar="PATH_OR_MODULE",
        action="extend",
        nargs="+",
        default=[],
        help="a .py file or importable module that registers your own cases with rulelab.register "
        "(repeatable); its cases are then listed and swept like the catalog's",
    )


def add_scheduler_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="send references and tasks (or an exhaustive sweep's chunks) to a dask.distributed cluster: tcp://host:port of its scheduler, or local:N "
        f"to start N worker processes here (default: ${SCHEDULER_ENV}, else this machine's process pools; needs "
        "pip install -e '.[dask]'). Results are written here, as in a local run",
    )


def add_results_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", metavar="DIR", help="the results folder; accuracy runs live in DIR/accuracy/ (default: results)")


def add_reports_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reports", default="reports", metavar="DIR", help="where the HTML report is written (default: reports)")


def add_renamed_option(p: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` (an earlier spelling of ``new``) for one more release, with a note."""
    p.add_argument(old, dest=f"renamed_{old.lstrip('-')}", metavar="DIR", help=argparse.SUPPRESS)
    p.set_defaults(renamed=(*(p.get_default("renamed") or ()), (old, new)))


def _apply_renamed(args: argparse.Namespace) -> None:
    for old, new in getattr(args, "renamed", ()):
        value = getattr(args, f"renamed_{old.lstrip('-')}", None)
        if value is not None:
            print(f"note: rulelab {args.command} {old} is now {new}; {old} will be removed in the next release", file=sys.stderr)
            setattr(args, new.lstrip("-"), value)


def checked_workers(workers: int | None) -> int | None:
    """``--workers`` as given, at most the cores this machine has (more only queue behind
    each other, each starting its own backend); UsageError below 1."""
    if workers is None:
        return None
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    cores = os.cpu_count() or 1
    if workers > cores:
        print(f"note: --workers {workers} is more than this machine's {cores} cores; using {cores}", file=sys.stderr)
        return cores
    return workers


def add_no_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="measure everything: serve nothing from the cache of measured results (group tables, blame, timings) and keep "
        "nothing in it (also RULELAB_NO_CACHE=1). Without it, unchanged groups are served from the cache, and a random "
        "sample of them is re-evaluated and compared bit for bit on every run; references are always cached",
    )


def add_max_points_option(p: argparse.ArgumentParser) -> None:
    from rulelab.model.sweep_size import MAX_POINTS

    p.add_argument(
        "--max-points",
        type=int,
        default=MAX_POINTS,
        metavar="N",
        help=f"refuse a plan with a sweep (one case in one dtype) of more than N points (default: {MAX_POINTS:,}); "
        "the estimate is printed before anything runs",
    )


# --- cases --------------------------------------------------------------------------------------


def add_cases(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cases",
        help="list the cases (catalog and --module) with their formulas, variants and sources",
        description="List every registered case: name, arguments, formula, variants and where it comes from.",
    )
    add_module_option(p)
    p.set_defaults(run=cmd_cases)


def table(rows: Sequence[Sequence[str]], header: Sequence[str], width: int | None = None) -> str:
    """A plain text table; with ``width``, the last column is cut to fit."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    if width is not None:
        room = width - sum(widths[:-1]) - 2 * (len(widths) - 1)
        widths[-1] = max(min(widths[-1], room), 20)

    def line(r: Sequence[str]) -> str:
        cells = [str(c) if len(str(c)) <= w else str(c)[: w - 1] + "…" for c, w in zip(r, widths)]
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def cmd_cases(args: argparse.Namespace) -> int:
    from rulelab.model.case import cases
    from rulelab.model.modules import load_modules

    load_modules(args.module)
    rows = [(c.name, ", ".join(c.args), c.formula, ", ".join(c.variants), c.source) for c in cases()]
    width = shutil.get_terminal_size((160, 24)).columns if sys.stdout.isatty() else None
    print(table(rows, ("case", "args", "formula", "variants", "source"), width))
    return 0


# --- sweep --------------------------------------------------------------------------------------


def _is_exhaustive(results: str, run_id: str) -> bool:
    from rulelab import store
    from rulelab.model.exhaustive_spec import PLANS

    try:
        return store.read_meta(store.open_run(results, run_id)).plan.get("name") in PLANS
    except Exception:  # noqa: BLE001 - the sampled sweep's resume reports a missing or damaged run
        return False


def exhaustive_spec(args: argparse.Namespace) -> Any:
    """The exhaustive sweep the options ask for: one case, its variants (or those
    named), the transforms named (default: value and grad), the dtype (exhaustive16:
    bfloat16 or float16), the binades named (exhaustive32)."""
    from rulelab.model import exhaustive_spec as exhaustive
    from rulelab.model.case import get_case

    plan = args.plan
    what = "a case of one argument" if plan == exhaustive.PLAN else "a case of two arguments"
    cases = _names(args.cases) or []
    if len(cases) != 1:
        raise UsageError(f"{plan} sweeps one case at a time: give --cases NAME ({what} with a fast reference)")
    case = get_case(cases[0])
    variants = _names(args.variants) or list(case.variants)
    unknown = [v for v in variants if v not in case.variants]
    if unknown:
        raise UsageError(f"case {case.name!r} has no variant {', '.join(map(repr, unknown))}; it has {', '.join(case.variants)}")
    dtypes = _names(args.dtypes) or []
    if plan == exhaustive.PLAN:
        if dtypes and dtypes != ["float32"]:
            hint = f" (every pair of 16-bit inputs of a case of two arguments: {exhaustive.PLAN16})" if set(dtypes) <= set(exhaustive.DTYPES16) else ""
            raise UsageError(f"{plan} sweeps float32 only; drop --dtypes{hint}")
        dtype = "float32"
    else:
        if len(dtypes) != 1 or dtypes[0] not in exhaustive.DTYPES16:
            raise UsageError(f"{plan} sweeps one 16-bit dtype: give --dtypes {' or '.join(exhaustive.DTYPES16)}")
        dtype = dtypes[0]
    transforms = _names(args.transforms) or ["value", "grad"]
    chunks = exhaustive.chunks_of_binades(*args.exponents) if args.exponents else ()
    return exhaustive.Spec(case.name, tuple(variants), tuple(transforms), chunks=chunks, dtype=dtype)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    from rulelab.core.floats import DTYPES
    from rulelab.jaxrun.backend import BACKENDS
    from rulelab.model.case import TRANSFORMS

    p = sub.add_parser(
        "sweep",
        help="measure the accuracy of every variant in a plan against mpmath; results go to RESULTS/accuracy/<run-id>/",
        description="Run an accuracy sweep: references first (mpmath, cached, in parallel), then every case x "
        "variant x transform x argument x dtype of the plan on one backend, measured in ULPs. Results go "
        "to RESULTS/accuracy/<run-id>/ (meta.json and parquet tables); a run stopped part-way (Ctrl-C, kill) "
        "continues with --resume RUN_ID and recomputes nothing it finished.",
        epilog="examples: rulelab sweep quick | rulelab sweep default --cases softplus --dtypes float32 | "
        "rulelab sweep quick --module my_cases.py --cases my_case | rulelab sweep --resume 20250101T120000Z-1234-ab12",
    )
    p.add_argument(
        "plan",
        nargs="?",
        default=None,
        metavar="PLAN",
        help="a packaged plan (quick, default, exhaustive), the path of a plan .toml file (default: default), "
        "exhaustive32: every finite float32 input of one case of one argument (--cases NAME), or exhaustive16: every pair "
        "of finite 16-bit inputs of one case of two arguments (--cases NAME --dtypes bfloat16|float16); both chunked and resumable",
    )
    p.add_argument("--cases", nargs="+", action="extend", metavar="CASE", help="only these cases (space- or comma-separated)")
    p.add_argument("--variants", nargs="+", action="extend", metavar="VARIANT", help="only these variants of each case")
    p.add_argument("--dtypes", nargs="+", action="extend", metavar="DTYPE", help=f"these dtypes instead of the plan's ({', '.join(DTYPES)})")
    p.add_argument(
        "--transforms", nargs="+", action="extend", metavar="TRANSFORM", help=f"these transforms instead of the plan's ({', '.join(TRANSFORMS)})"
    )
    p.add_argument("--backend", choices=BACKENDS, help="run the variants on this backend (default: JAX's default device)")
    add_module_option(p)
    p.add_argument("--resume", metavar="RUN_ID", help="continue a run that stopped part-way, as it was planned (no PLAN or filters)")
    add_results_option(p)
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes computing references and, on a CPU backend, evaluating variants (default: every core)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_max_points_option(p)
    add_scheduler_option(p)
    p.add_argument(
        "--exponents",
        nargs=2,
        type=int,
        metavar=("LO", "HI"),
        help="exhaustive32 only: just the float32 inputs whose biased exponent field is in [LO, HI], both signs "
        "(0: subnormals and zeros, 127: [1, 2), 254: the largest binade)",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled XLA executables in the cache folder ($RULELAB_CACHE/jax) between runs",
    )
    add_no_cache_option(p)
    p.add_argument(
        "--mpmath-only",
        action="store_true",
        help="sampled plans: an mpmath reference at every point. Without it, where a case has a validated fast float64 "
        "reference and it spares enough mpmath points to pay for its validation, it stands in wherever it settles the "
        "rounding, and mpmath is taken after evaluation at the points whose fractional error a table shows: the tables "
        "are the same either way",
    )
    add_renamed_option(p, "--out", "--results")
    p.set_defaults(run=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from rulelab.model.exhaustive_spec import PLAN, PLANS
    from rulelab.model.modules import load_modules
    from rulelab.model.plan import load_plan, with_overrides
    from rulelab.report.terminal import run_digest
    from rulelab.runs import exhaustive, result_cache
    from rulelab.runs import sampled as sweep
    from rulelab.runs.executors import Options

    workers = checked_workers(args.workers)
    if args.max_points < 1:
        raise UsageError(f"--max-points must be a positive number of points, got {args.max_points}")
    if args.exponents and args.plan != PLAN and not args.resume:
        raise UsageError(f"--exponents chooses binades of {PLAN} (every float32 input of one case); plan {args.plan or 'default'!r} has its own sweeps: drop --exponents")
    options = Options(
        backend=args.backend, workers=workers, progress=not args.no_progress, compile_cache=not args.no_compile_cache,
        max_points=args.max_points, scheduler=scheduler_address(args.scheduler), result_cache=result_cache.enabled(not args.no_cache),
        fast_tier=not args.mpmath_only,
    )

    started: list[Path] = []

    def announce(run: Path) -> None:
        started.append(run)
        print(f"run {run.name} in {run} (if it stops, continue with: rulelab sweep --resume {run.name} --results {args.results})", file=sys.stderr)

    try:
        if args.resume:
            given = [o for o, v in (("PLAN", args.plan), ("--cases", args.cases), ("--variants", args.variants),
                                    ("--dtypes", args.dtypes), ("--transforms", args.transforms)) if v]  # fmt: skip
            if given:
                raise UsageError(f"--resume continues run {args.resume} exactly as it was planned; drop {', '.join(given)}")
            driver = exhaustive if _is_exhaustive(args.results, args.resume) else sweep
            run = driver.resume(args.resume, args.results, options, on_start=announce, modules=args.module)
            if not started:
                print(f"rulelab sweep: run {run.name} is complete; nothing to resume", file=sys.stderr)
        elif args.plan in PLANS:
            load_modules(args.module)
            run = exhaustive.start(exhaustive_spec(args), args.results, options, args.module, on_start=announce)
        else:
            load_modules(args.module)
            plan = load_plan(args.plan or "default")
            plan = with_overrides(plan, _names(args.cases), _names(args.variants), _names(args.transforms), _names(args.dtypes))
            run = sweep.start(plan, args.results, args.module, options, on_start=announce)
    except (KeyboardInterrupt, OSError) as exc:
        if not started or isinstance(exc, BrokenPipeError):  # (with the output gone, there is no one to tell)
            raise
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else os_problem(exc)
        on = f" --scheduler {options.scheduler}" if options.scheduler else ""
        print(f"rulelab sweep: {what}; the finished tasks are kept: continue with rulelab sweep --resume {started[0].name} --results {args.results}{on}",
              file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_USAGE
    print(run_digest(run))
    return 0


# --- report ---------------------------------------------------------------------------------------


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the HTML report of accuracy runs and asv results",
        description="Write static HTML (opens from disk, images embedded) from the results store and asv's "
        "results: reports/index.html (overview), one page per case, performance.html. Never runs JAX or mpmath.",
    )
    p.add_argument("runs", nargs="*", metavar="RUN_ID", help="accuracy runs to report (default: the newest complete run per backend; newer damaged or unfinished runs are named and passed over)")
    add_results_option(p)
    p.add_argument("--asv", default=None, metavar="DIR", help="asv results (default: RESULTS/asv)")
    add_reports_option(p)
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="also write compare.html: two runs side by side")
    p.add_argument("--workers", type=int, metavar="N", help="processes drawing case pages (default: every core)")
    add_renamed_option(p, "--out", "--reports")
    p.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from rulelab import store
    from rulelab.report import build_report, latest_runs

    if not Path(args.results).is_dir() and not (args.asv and Path(args.asv).is_dir()):
        raise UsageError(f"no results folder at {args.results}; run a sweep first (rulelab sweep quick), or give --results DIR")
    runs = [store.open_run(args.results, r) for r in args.runs] or latest_runs(
        store.accuracy_dir(args.results), warn=lambda m: print(f"rulelab report: {m}", file=sys.stderr)
    )
    compare = tuple(store.open_run(args.results, r) for r in args.compare) if args.compare else None
    for run in compare or ():
        damage = store.inspect_run(run).damage
        if damage:
            print(f"rulelab report: run {run.name} given to --compare is not whole ({'; '.join(damage)}); "
                  "compare.html says so instead of comparing", file=sys.stderr)
    asv_dir = Path(args.asv) if args.asv else Path(args.results) / "asv"
    print(build_report(runs, asv_dir, Path(args.reports), compare, workers=checked_workers(args.workers)))
    return 0


# --- study ----------------------------------------------------------------------------------------


def add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="the main job: sweep, quick timings of every variant, and the HTML report",
        description="Run an accuracy sweep (the quick plan by default), time every variant in process with the "
        "benchmarks' own code, and write the report; prints the path of reports/index.html.",
    )
    from rulelab.jaxrun.backend import BACKENDS

    p.add_argument("--plan", default="quick", help="a plan name (quick, default, exhaustive) or TOML path (default: quick)")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="backend to evaluate on (default: JAX's)")
    add_results_option(p)
    add_reports_option(p)
    p.add_argument("--no-timings", action="store_true", help="skip the quick timings")
    p.add_argument("--retime", action="store_true",
                   help="time every variant again (by default a timing is kept until its variant's code, the versions or the backend change)")
    add_no_cache_option(p)
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: every core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_max_points_option(p)
    add_module_option(p)
    add_scheduler_option(p)
    add_renamed_option(p, "--out", "--reports")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # the default plan; the flag is accepted one more release
    p.set_defaults(run=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from rulelab.report import build_report
    from rulelab.report.terminal import run_digest
    from rulelab.runs.study import run_study

    if args.quick:
        print("note: rulelab study --quick is the default and the flag will be removed; drop it", file=sys.stderr)
    workers = checked_workers(args.workers)
    run = run_study(args.plan, args.results, args.module, args.backend, workers,
                    timings=not args.no_timings, progress=not args.no_progress, max_points=args.max_points,
                    scheduler=scheduler_address(args.scheduler), cache=not args.no_cache, retime=args.retime)
    print(run_digest(run))
    t0 = time.perf_counter()
    index = build_report([run], Path(args.results) / "asv", Path(args.reports), workers=workers)
    print(f"report: {index} ({time.perf_counter() - t0:.1f} s)")
    return 0


# --- blame ----------------------------------------------------------------------------------------


def add_blame(sub: argparse._SubParsersAction) -> None:
    from rulelab.core.floats import DTYPES
    from rulelab.jaxrun.backend import BACKENDS
    from rulelab.model.case import TRANSFORMS

    p = sub.add_parser(
        "blame",
        help="which operation and source line lose the digits of one variant at one input",
        description="Trace the variant under the transform as a sweep measures it and evaluate it equation by equation, in the "
        "dtype and exactly (mpmath); print each equation's local error (the operation on its exact inputs rounded, against "
        "its exact result rounded) and blame the one that loses the digits.",
        epilog="example: rulelab blame softplus custom_jvp grad --at -20",
    )
    p.add_argument("case")
    p.add_argument("variant")
    p.add_argument("transform", choices=TRANSFORMS)
    p.add_argument("--at", required=True, metavar="X[,Y…]", help="the input: one number per argument, comma-separated")
    p.add_argument("--arg", help="the argument the derivative is in (default: the first)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="the dtype (default: float32)")
    p.add_argument("--backend", choices=BACKENDS, help="run on this backend (default: JAX's default device)")
    p.add_argument("--all", action="store_true", help="list every equation, not only those the result depends on")
    add_module_option(p)
    p.set_defaults(run=cmd_blame)


def cmd_blame(args: argparse.Namespace) -> int:
    from rulelab.model.case import get_case
    from rulelab.model.modules import load_modules
    from rulelab.scoring.blame import localize

    load_modules(args.module)
    case = get_case(args.case)
    if args.variant not in case.variants:
        raise UsageError(f"case {case.name!r} has no variant {args.variant!r}; it has {', '.join(case.variants)}")
    try:
        point = tuple(float(v) for v in args.at.split(","))
    except ValueError:
        raise UsageError(f"--at {args.at}: give one number per argument of {case.name} ({', '.join(case.args)}), comma-separated") from None
    if len(point) != len(case.args):
        raise UsageError(f"--at {args.at}: {case.name} takes {len(case.args)} arguments ({', '.join(case.args)}); give one number each")
    arg = None if args.transform == "value" else (args.arg or case.args[0])
    if arg is not None and arg not in case.args:
        raise UsageError(f"--arg {arg}: {case.name} has arguments {', '.join(case.args)}")
    loc = localize(case, args.variant, args.transform, arg, args.dtype, point, args.backend)
    rows = [(str(s.index), s.primitive, f"{Path(s.source.file).name}:{s.source.line}" + (" (JAX)" if s.source.jax else ""),
             f"{s.computed:.9g}", f"{s.exact:.9g}", "" if s.local_ulp == 0 else f"{s.local_ulp:.3g}", " ".join((*s.flags, s.label)).strip())
            for s in loc.steps if (s.live or args.all) and not math.isnan(s.computed)]
    if rows:
        print(table(rows, ("eqn", "primitive", "source", "computed", "exact (rounded)", "local ULP", "flags")))
    print(f"{case.name} {args.variant} {args.transform}{f' in {arg}' if arg else ''} at {args.at} ({args.dtype}): "
          f"computed {loc.computed!r}, exact {loc.exact!r} (confirmed at {loc.precision} bits)")
    if loc.blamed is not None and loc.blamed.source.text:
        print(f"  {loc.blamed.source.file}:{loc.blamed.source.line}: {loc.blamed.source.text}")
    print(loc.summary())
    return 0


# --- the accuracy ratchet ------------------------------------------------------------------------


def add_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="write what each result of a run achieves, as the baseline rulelab gate compares later runs with",
        description="Write, per result of a complete run, its headline max dULP, its worst bucket, its non-finite count and "
        "its status, one line per result in a TOML file a person can read and edit.",
        epilog="example: rulelab baseline 20261205T101500Z-1234-ab12 -o accuracy-baseline.toml",
    )
    p.add_argument("run_ref", nargs="?", metavar="RUN", help="a run folder's path, or a run id under --results (default: the newest complete run)")
    p.add_argument("-o", "--output", default="accuracy-baseline.toml", metavar="FILE", help="where to write (default: accuracy-baseline.toml)")
    add_results_option(p)
    p.set_defaults(run=cmd_baseline)


def cmd_baseline(args: argparse.Namespace) -> int:
    from rulelab import store
    from rulelab.ratchet import write_baseline

    out = write_baseline(store.complete_run(args.run_ref, args.results), args.output)
    print(f"baseline written to {out}")
    return 0


def add_gate(sub: argparse._SubParsersAction) -> None:
    from rulelab.ratchet import TOLERANCE

    p = sub.add_parser(
        "gate",
        help="fail (exit 1) where a run does worse than a baseline: for CI",
        description="Compare a complete run with a baseline written by rulelab baseline. Exit 1 and list every result that got "
        "worse (a worse bucket, a larger max dULP beyond the tolerance, more non-finite points, a new error or unsupported "
        "transform, a result missing); exit 0 otherwise, naming the results that improved. A baseline of another backend, or "
        "a run that did not sweep the baseline's results, is refused (exit 2).",
        epilog="example: rulelab gate --baseline accuracy-baseline.toml",
    )
    p.add_argument("run_ref", nargs="?", metavar="RUN", help="a run folder's path, or a run id under --results (default: the newest complete run)")
    p.add_argument("--baseline", required=True, metavar="FILE", help="the baseline TOML")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, metavar="F",
                   help=f"a max dULP is larger only beyond this fraction of the baseline's, and by more than 1 ULP (default: {TOLERANCE})")
    add_results_option(p)
    p.set_defaults(run=cmd_gate)


def cmd_gate(args: argparse.Namespace) -> int:
    from rulelab import store
    from rulelab.ratchet import gate, gate_lines, load_baseline

    if not args.tolerance >= 0:
        raise UsageError(f"--tolerance must be a fraction of 0 or more, got {args.tolerance}")
    baseline = load_baseline(args.baseline)
    run = store.complete_run(args.run_ref, args.results)
    result = gate(baseline, run, args.tolerance)
    print("\n".join(gate_lines(result, args.baseline, run, args.results)))
    return 1 if result.worse else 0


# --- check ----------------------------------------------------------------------------------------


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="validate plans and user modules without running anything",
        description="Load each plan (checking every key, case, variant, transform and dtype) and each --module "
        "(checking every case it registers); report what is wrong, exit 2 if anything is.",
    )
    p.add_argument("plans", nargs="*", metavar="PLAN", help="plan names or TOML paths (default: the packaged plans)")
    add_module_option(p)
    add_max_points_option(p)
    p.set_defaults(run=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from rulelab.model.case import cases
    from rulelab.model.modules import load_modules
    from rulelab.model.plan import load_plan, packaged_plans
    from rulelab.model.sweep_size import check_size

    load_modules(args.module)
    for ref in args.plans or packaged_plans():
        plan = load_plan(ref)
        print(f"plan {plan.name}: ok, {check_size(plan, args.max_points)}")
    print(f"{len(cases())} cases registered: ok")
    return 0


# --- the command ----------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_cases, add_sweep, add_report, add_study, add_blame, add_baseline, add_gate, add_check]
"""Parser blocks of the subcommands, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rulelab",
        description="Accuracy and cost of JAX custom derivative rules: every case's naive, custom-rule and "
        "library variants measured in ULPs against mpmath references.",
    )
    from rulelab import __version__

    parser.add_argument("--version", action="version", version=f"rulelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def os_problem(exc: OSError) -> str:
    """One line for a file system error: the path, what went wrong, what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    hint = "free some space" if exc.errno == errno.ENOSPC else "choose a writable folder (--results, --reports, $RULELAB_CACHE)"
    return f"cannot use{where}: {what}; {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    _apply_renamed(args)
    try:
        status = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except BrokenPipeError:  # output piped into `head` and the like: end quietly, as a Unix tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(devnull, stream.fileno())
        return EXIT_BROKEN_PIPE
    except (UsageError, CaseError) as exc:
        print(f"rulelab {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"rulelab {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a folder that cannot be written, a full disk …
        print(f"rulelab {args.command}: {os_problem(exc)}", file=sys.stderr)
        return EXIT_USAGE
