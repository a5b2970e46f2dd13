"""The ``rulelab`` command: ``cases``, ``sweep``, ``report``, ``study``, ``check``.

Each subcommand is one ``add_<name>`` function (its parser block, which sets ``run``)
and one ``cmd_<name>`` function (what it does, returning the exit status); adding a
subcommand is writing both and listing ``add_<name>`` in :data:`SUBCOMMANDS`.

A mistake in what was asked (unknown case, malformed plan, module that fails to import,
absent backend) prints one paragraph and exits with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rulelab.core.errors import UsageError
from rulelab.model.case import CaseError
from rulelab.runs.cluster import SCHEDULER_ENV, scheduler_address

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
        help="send references and tasks (or exhaustive32's chunks) to a dask.distributed cluster: tcp://host:port of its scheduler, or local:N "
        f"to start N worker processes here (default: ${SCHEDULER_ENV}, else this machine's process pools; needs "
        "pip install -e '.[dask]'). Results are written here, as in a local run",
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


def _is_exhaustive(out: str, run_id: str) -> bool:
    from rulelab import store
    from rulelab.runs import exhaustive

    try:
        return store.read_meta(store.open_run(out, run_id)).plan.get("name") == exhaustive.PLAN
    except Exception:  # noqa: BLE001 - sweep.resume reports a missing or damaged run
        return False


def exhaustive_spec(args: argparse.Namespace) -> Any:
    """The exhaustive sweep the options ask for: one case, its variants (or those
    named), the transforms named (default: value and grad), the binades named."""
    from rulelab.model.case import get_case
    from rulelab.runs import exhaustive

    cases = _names(args.cases) or []
    if len(cases) != 1:
        raise UsageError(f"{exhaustive.PLAN} sweeps one case at a time: give --cases NAME (a case of one argument with a fast reference)")
    case = get_case(cases[0])
    variants = _names(args.variants) or list(case.variants)
    unknown = [v for v in variants if v not in case.variants]
    if unknown:
        raise UsageError(f"case {case.name!r} has no variant {', '.join(map(repr, unknown))}; it has {', '.join(case.variants)}")
    if args.dtypes and _names(args.dtypes) != ["float32"]:
        raise UsageError(f"{exhaustive.PLAN} sweeps float32 only; drop --dtypes")
    transforms = _names(args.transforms) or ["value", "grad"]
    chunks = exhaustive.chunks_of_binades(*args.exponents) if args.exponents else ()
    return exhaustive.Spec(case.name, tuple(variants), tuple(transforms), chunks=chunks)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    from rulelab.core.floats import DTYPES
    from rulelab.jaxrun.backend import BACKENDS
    from rulelab.model.case import TRANSFORMS

    p = sub.add_parser(
        "sweep",
        help="measure the accuracy of every variant in a plan against mpmath; results go to OUT/accuracy/<run-id>/",
        description="Run an accuracy sweep: references first (mpmath, cached, in parallel), then every case x "
        "variant x transform x argument x dtype of the plan on one backend, measured in ULPs. Results go "
        "to OUT/accuracy/<run-id>/ (meta.json and parquet tables); a run stopped part-way (Ctrl-C, kill) "
        "continues with --resume RUN_ID and recomputes nothing it finished.",
        epilog="examples: rulelab sweep quick | rulelab sweep default --cases softplus --dtypes float32 | "
        "rulelab sweep quick --module my_cases.py --cases my_case | rulelab sweep --resume 20250101T120000Z-1234-ab12",
    )
    p.add_argument(
        "plan",
        nargs="?",
        default=None,
        metavar="PLAN",
        help="a packaged plan (quick, default, exhaustive), the path of a plan .toml file (default: default), or "
        "exhaustive32: every finite float32 input of one case of one argument (--cases NAME), chunked and resumable",
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
    p.add_argument("--out", default="results", metavar="DIR", help="results folder; runs go to DIR/accuracy/ (default: results)")
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
    p.set_defaults(run=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from rulelab.model.modules import load_modules
    from rulelab.model.plan import load_plan, with_overrides
    from rulelab.report.terminal import run_digest
    from rulelab.runs import exhaustive
    from rulelab.runs import sampled as sweep

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    options = sweep.Options(
        backend=args.backend, workers=args.workers, progress=not args.no_progress, compile_cache=not args.no_compile_cache,
        max_points=args.max_points, scheduler=scheduler_address(args.scheduler),
    )

    started: list[Path] = []

    def announce(run: Path) -> None:
        started.append(run)
        print(f"run {run.name} in {run} (if it stops, continue with: rulelab sweep --resume {run.name} --out {args.out})", file=sys.stderr)

    try:
        if args.resume:
            given = [o for o, v in (("PLAN", args.plan), ("--cases", args.cases), ("--variants", args.variants),
                                    ("--dtypes", args.dtypes), ("--transforms", args.transforms)) if v]  # fmt: skip
            if given:
                raise UsageError(f"--resume continues run {args.resume} exactly as it was planned; drop {', '.join(given)}")
            load_modules(args.module)
            if _is_exhaustive(args.out, args.resume):
                run = exhaustive.run(None, args.out, args.workers, args.backend, not args.no_progress, args.resume, announce,
                                     options.scheduler, args.module)
            else:
                run = sweep.resume(args.resume, args.out, options, on_start=announce)
        elif args.plan == exhaustive.PLAN:
            load_modules(args.module)
            run = exhaustive.run(exhaustive_spec(args), args.out, args.workers, args.backend, not args.no_progress, on_start=announce,
                                 scheduler=options.scheduler, modules=args.module)
        else:
            load_modules(args.module)
            plan = load_plan(args.plan or "default")
            plan = with_overrides(plan, _names(args.cases), _names(args.variants), _names(args.transforms), _names(args.dtypes))
            run = sweep.start(plan, args.out, args.module, options, on_start=announce)
    except (KeyboardInterrupt, OSError) as exc:
        if not started:
            raise
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else os_problem(exc)
        on = f" --scheduler {options.scheduler}" if options.scheduler else ""
        print(f"rulelab sweep: {what}; the finished tasks are kept: continue with rulelab sweep --resume {started[0].name} --out {args.out}{on}",
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
    p.add_argument("--results", default="results", help="the results folder (default: results)")
    p.add_argument("--asv", default=None, metavar="DIR", help="asv results (default: RESULTS/asv)")
    p.add_argument("--out", default="reports", help="where to write the HTML (default: reports)")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="also write compare.html: two runs side by side")
    p.add_argument("--workers", type=int, metavar="N", help="processes drawing case pages (default: every core)")
    p.set_defaults(run=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from rulelab import store
    from rulelab.report import build_report, latest_runs

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
    print(build_report(runs, asv_dir, Path(args.out), compare, workers=args.workers))
    return 0


# --- study ----------------------------------------------------------------------------------------


def add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="the main job: sweep, quick timings of every variant, and the HTML report",
        description="Run an accuracy sweep (the quick plan by default), time every variant in process with the "
        "benchmarks' own code, and write the report; prints the path of reports/index.html.",
    )
    p.add_argument("--quick", action="store_true", help="use the quick plan (the default; kept for clarity)")
    p.add_argument("--plan", default=None, help="a plan name (quick, default, exhaustive) or TOML path; overrides --quick")
    p.add_argument("--backend", choices=("cpu", "gpu", "tpu"), default=None, help="backend to evaluate on (default: JAX's)")
    p.add_argument("--results", default="results", help="the results folder (default: results)")
    p.add_argument("--out", default="reports", help="where to write the HTML (default: reports)")
    p.add_argument("--no-timings", action="store_true", help="skip the quick timings")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: every core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_max_points_option(p)
    add_module_option(p)
    add_scheduler_option(p)
    p.set_defaults(run=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from rulelab.runs.study import run_study

    index = run_study(args.plan or "quick", args.results, args.out, args.module, args.backend, args.workers,
                      timings=not args.no_timings, progress=not args.no_progress, max_points=args.max_points,
                      scheduler=scheduler_address(args.scheduler))
    print(f"report: {index}")
    return 0


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

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_cases, add_sweep, add_report, add_study, add_check]
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
    hint = "free some space" if exc.errno == errno.ENOSPC else "choose a writable folder (--out, --results, $RULELAB_CACHE)"
    return f"cannot use{where}: {what}; {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except (UsageError, CaseError) as exc:
        print(f"rulelab {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"rulelab {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # a folder that cannot be written, a full disk …
        print(f"rulelab {args.command}: {os_problem(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
