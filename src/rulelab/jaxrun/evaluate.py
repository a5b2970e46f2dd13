"""Run a variant under a transform: jit-compiled, vectorised, in one dtype, on one backend.

A transform a variant cannot do (forward mode through ``custom_vjp``, reverse mode
through ``while_loop``) is recorded as ``unsupported`` with JAX's message; any other
failure is ``error`` with a message naming case, variant, transform and dtype. Neither
stops the caller.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rulelab.core.errors import first_line
from rulelab.core.floats import fmt
from rulelab.jaxrun.backend import device_for
from rulelab.model.case import TRANSFORMS, Case, Variant
from rulelab.store.vocabulary import Status

UNSUPPORTED_PATTERNS: tuple[str, ...] = (
    r"can't apply forward-mode autodiff \(jvp\) to a custom_vjp function",
    r"Reverse-mode differentiation does not work for lax\.while_loop",
    r"Reverse-mode differentiation does not work for lax\.fori_loop",
    r"can't apply reverse-mode autodiff",
    r"Differentiation rule for '[^']+' not implemented",
    r"not implemented for .*(forward|reverse)-mode",
)


@dataclass(frozen=True)
class Outcome:
    """What one evaluation produced. ``values`` is None unless ``status`` is ``Status.OK``."""

    status: Status
    message: str = ""
    values: np.ndarray | None = None
    compile_s: float = 0.0
    run_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)


def scalar_transform(fn: Callable[..., Any], transform: str, argnum: int, nargs: int) -> Callable[..., Any]:
    """The scalar function ``transform`` asks of ``fn`` (one scalar per argument):
    value, grad / jvp (first derivative in argument ``argnum``, reverse / forward mode)
    or grad2 (second derivative in ``argnum``, reverse over reverse)."""
    import jax

    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; known: {', '.join(TRANSFORMS)}")
    if transform == "value":
        return fn
    if transform == "grad":
        return jax.grad(fn, argnums=argnum)
    if transform == "grad2":
        return jax.grad(jax.grad(fn, argnums=argnum), argnums=argnum)

    def forward(*args: Any) -> Any:
        # the other arguments are closed over, so their tangents are symbolic zeros: a rule
        # whose other partial is infinite is not charged 0 * inf
        def along(x: Any) -> Any:
            return fn(*args[:argnum], x, *args[argnum + 1 :])

        return jax.jvp(along, (args[argnum],), (jax.numpy.ones_like(args[argnum]),))[1]

    return forward


def _batched(fn: Callable[..., Any], transform: str, argnum: int, nargs: int) -> Callable[..., Any]:
    """``scalar_transform`` mapped over 1-D arrays, one per argument."""
    import jax

    return jax.vmap(scalar_transform(fn, transform, argnum, nargs))


def vectorised(fn: Callable[..., Any], transform: str, argnum: int, nargs: int, name: str = "") -> Callable[..., Any]:
    """The measured program: ``scalar_transform`` mapped over 1-D arrays (one per
    argument) and jit-compiled. The one builder that sweeps evaluate, ``study`` times and
    the asv benchmarks measure; a fresh closure every call, so its first call traces and
    compiles from scratch. ``name`` names it in jaxprs and profiles."""
    import jax

    batched = _batched(fn, transform, argnum, nargs)

    def program(*xs: Any) -> Any:
        return batched(*xs)

    program.__name__ = name or f"{getattr(fn, '__name__', 'variant')}_{transform}"
    return jax.jit(program)


def fused(jobs: Sequence[tuple[Callable[..., Any], str, int]], nargs: int, name: str = "fused") -> Callable[..., Any]:
    """Several :func:`vectorised` programs as one jit-compiled program: one compilation
    instead of ``len(jobs)``. ``jobs`` are (function, transform, argnum) triples of
    functions of ``nargs`` arguments; ``program(k, *xs)`` computes job ``k`` (a run-time
    index) at ``xs``.

    Why a run-time choice and not one program returning every job: XLA compiles an
    expression differently depending on what else is in the program (fusion, contraction
    into FMAs), so results change. lbeta's naive ``grad2`` in ``b``, compiled together
    with its value, differs from the same program compiled alone in 1363 of 1927 quick
    points. The branches of a conditional are compiled each on its own, and give the
    separate programs' results bit for bit."""
    import jax

    branches = [_batched(fn, transform, argnum, nargs) for fn, transform, argnum in jobs]

    def program(k: Any, *xs: Any) -> Any:
        return jax.lax.switch(k, branches, *xs)

    program.__name__ = name
    return jax.jit(program)


def is_unsupported(exc: BaseException) -> bool:
    """Whether JAX refused the transform itself (as opposed to the variant failing)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(re.search(p, text) for p in UNSUPPORTED_PATTERNS)


def _where(case: Case, v: Variant, transform: str, arg: str | None, f: Any) -> str:
    where = f"case {case.name!r}, variant {v.name!r}, transform {transform!r}"
    where += f" in {arg!r}" if transform != "value" and arg else ""
    return where + f", dtype {f.name}"


def _prepare(case: Case, dtype: Any, inputs: tuple[np.ndarray, ...], backend: str | None) -> tuple[Any, ...] | str:
    """The inputs on the backend's device in ``dtype``, or why they cannot be."""
    import jax

    f = fmt(dtype)
    if f.name == "float64" and not jax.config.jax_enable_x64:
        return "float64 needs jax_enable_x64 (rulelab enables it for float64 sweeps)"
    if len(inputs) != len(case.args):
        return f"{len(inputs)} input arrays for {len(case.args)} arguments"
    try:
        device = device_for(backend)
    except RuntimeError as exc:
        return f"backend {backend!r} is not available ({first_line(exc)})"
    return tuple(jax.device_put(np.asarray(x).astype(f.dtype), device) for x in inputs)


def _outcome(where: str, out: Any, f: Any, shape: tuple[int, ...], compile_s: float, run_s: float) -> Outcome:
    """An ``ok`` outcome from a program's output, or ``error`` if it is not one scalar
    per point."""
    if out is None:
        return Outcome(Status.ERROR, f"{where}: returned None (a missing return?); a variant must return one scalar of the input's floating dtype")
    import jax.numpy as jnp

    values = np.asarray(out)
    if not jnp.issubdtype(values.dtype, jnp.floating):  # (bfloat16 is floating, though numpy calls it "V")
        got = "float0 (the derivative of a non-float output)" if values.dtype == _float0() else str(values.dtype)
        return Outcome(Status.ERROR, f"{where}: returned {got}; a variant must return the input's floating dtype")
    if values.shape != shape:
        return Outcome(Status.ERROR, f"{where}: returned shape {values.shape[1:]} per point, expected a scalar")
    notes = ()
    if values.dtype != f.dtype:
        notes = (f"returned {values.dtype} for {f.name} inputs; cast to {f.name}",)
        values = values.astype(f.dtype)
    return Outcome(Status.OK, "", values, compile_s=compile_s, run_s=run_s, notes=notes)


@contextlib.contextmanager
def callback_logs_off() -> Iterator[None]:
    """JAX logs a failing host callback's whole traceback (``pure_callback``,
    ``io_callback``) before it raises the error; the error itself reaches the outcome's
    message, so inside this block the log is kept off the terminal."""
    log = logging.getLogger("jax._src.callback")
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


def _float0() -> Any:
    import jax

    return jax.dtypes.float0


def evaluate(
    case: Case,
    variant: Variant | str,
    transform: str,
    arg: str | None,
    dtype: Any,
    inputs: tuple[np.ndarray, ...],
    backend: str | None = None,
) -> Outcome:
    """Evaluate ``variant`` of ``case`` under ``transform`` (derivatives in argument
    ``arg``) at ``inputs`` (one 1-D array per argument, already of ``dtype``). Never
    raises for a failing variant: see :class:`Outcome`."""
    import jax

    v = case.variants[variant] if isinstance(variant, str) else variant
    f = fmt(dtype)
    where = _where(case, v, transform, arg, f)
    xs = _prepare(case, dtype, inputs, backend)
    if isinstance(xs, str):
        return Outcome(Status.ERROR, f"{where}: {xs}")
    argnum = 0 if arg is None else case.args.index(arg)
    try:
        compiled_fn = vectorised(v.fn, transform, argnum, len(case.args))
        t0 = time.perf_counter()
        compiled = compiled_fn.lower(*xs).compile()
        t1 = time.perf_counter()
        with callback_logs_off():
            out = jax.block_until_ready(compiled(*xs))
        t2 = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - any failure of user code is recorded
        status = Status.UNSUPPORTED if is_unsupported(exc) else Status.ERROR
        return Outcome(status, f"{where}: {first_line(exc)}")
    return _outcome(where, out, f, xs[0].shape, t1 - t0, t2 - t1)


Job = tuple[str, str, str | None]
"""What :func:`evaluate_many` evaluates: (variant, transform, argument or None)."""


def evaluate_many(
    case: Case,
    jobs: Sequence[Job],
    dtype: Any,
    inputs: tuple[np.ndarray, ...],
    backend: str | None = None,
) -> list[Outcome]:
    """:func:`evaluate` for each (variant, transform, arg) of ``jobs``, with one
    compilation (:func:`fused`) for all that trace; the same results bit for bit. A job
    that does not trace (a transform JAX refuses, a variant that raises) is evaluated
    alone, so it is recorded exactly as :func:`evaluate` records it; if the fused program
    fails to lower, compile or run (a variant that returns another shape or dtype than
    the others), every job is evaluated alone. The compile seconds are shared equally
    among the jobs."""
    import jax

    def alone(job: Job) -> Outcome:
        return evaluate(case, *job, dtype, inputs, backend)

    xs = _prepare(case, dtype, inputs, backend)
    if len(jobs) < 2 or isinstance(xs, str):
        return [alone(j) for j in jobs]
    nargs = len(case.args)
    specs = [(case.variants[v].fn, transform, 0 if arg is None else case.args.index(arg)) for v, transform, arg in jobs]
    name = f"{case.name}_fused"
    try:
        t0 = time.perf_counter()
        try:
            keep = list(range(len(jobs)))
            lowered = fused(specs, nargs, name).lower(np.int32(0), *xs)
        except Exception:  # noqa: BLE001 - find the jobs that trace, fuse only those
            keep = [i for i, s in enumerate(specs) if _traces(s, nargs, xs)]
            if len(keep) < 2:
                return [alone(j) for j in jobs]
            lowered = fused([specs[i] for i in keep], nargs, name).lower(np.int32(0), *xs)
        compiled = lowered.compile()
        compile_s = (time.perf_counter() - t0) / len(keep)
        outs, run_s = [], []
        for k in range(len(keep)):
            t1 = time.perf_counter()
            with callback_logs_off():
                outs.append(jax.block_until_ready(compiled(np.int32(k), *xs)))
            run_s.append(time.perf_counter() - t1)
    except Exception:  # noqa: BLE001 - the fused program failed: each job alone says why
        return [alone(j) for j in jobs]
    f = fmt(dtype)
    done = {
        i: _outcome(_where(case, case.variants[jobs[i][0]], jobs[i][1], jobs[i][2], f), out, f, xs[0].shape, compile_s, secs)
        for i, out, secs in zip(keep, outs, run_s)
    }
    return [done[i] if i in done else alone(job) for i, job in enumerate(jobs)]


def _traces(spec: tuple[Callable[..., Any], str, int], nargs: int, xs: tuple[Any, ...]) -> bool:
    """Whether one job's program traces (JAX accepts the transform, the variant runs)."""
    import jax

    try:
        jax.jit(_batched(spec[0], spec[1], spec[2], nargs)).trace(*xs)
    except Exception:  # noqa: BLE001 - evaluated alone, which records why
        return False
    return True
