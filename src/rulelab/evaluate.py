"""Run a variant under a transform: jit-compiled, vectorised, in one dtype, on one backend.

A transform a variant cannot do (forward mode through ``custom_vjp``, reverse mode
through ``while_loop``) is recorded as ``unsupported`` with JAX's message; any other
failure is ``error`` with a message naming case, variant, transform and dtype. Neither
stops the caller.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rulelab.case import TRANSFORMS, Case, Variant
from rulelab.floats import fmt

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
    """What one evaluation produced. ``values`` is None unless ``status == 'ok'``."""

    status: str  # ok | unsupported | error
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


def vectorised(fn: Callable[..., Any], transform: str, argnum: int, nargs: int, name: str = "") -> Callable[..., Any]:
    """The measured program: ``scalar_transform`` mapped over 1-D arrays (one per
    argument) and jit-compiled. The one builder that sweeps evaluate, ``study`` times and
    the asv benchmarks measure; a fresh closure every call, so its first call traces and
    compiles from scratch. ``name`` names it in jaxprs and profiles."""
    import jax

    scalar = scalar_transform(fn, transform, argnum, nargs)

    def batched(*xs: Any) -> Any:
        return jax.vmap(scalar)(*xs)

    batched.__name__ = name or f"{getattr(fn, '__name__', 'variant')}_{transform}"
    return jax.jit(batched)


def is_unsupported(exc: BaseException) -> bool:
    """Whether JAX refused the transform itself (as opposed to the variant failing)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(re.search(p, text) for p in UNSUPPORTED_PATTERNS)


def first_line(exc: BaseException, limit: int = 400) -> str:
    """The exception's type and first meaningful line, short enough for a table."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def device_for(backend: str | None) -> Any:
    """The first device of ``backend`` (None: the default backend)."""
    import jax

    return jax.devices(backend)[0] if backend else jax.devices()[0]


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
    argnum = 0 if arg is None else case.args.index(arg)
    where = f"case {case.name!r}, variant {v.name!r}, transform {transform!r}"
    where += f" in {arg!r}" if transform != "value" and arg else ""
    where += f", dtype {f.name}"
    if f.name == "float64" and not jax.config.jax_enable_x64:
        return Outcome("error", f"{where}: float64 needs jax_enable_x64 (rulelab enables it for float64 sweeps)")
    if len(inputs) != len(case.args):
        return Outcome("error", f"{where}: {len(inputs)} input arrays for {len(case.args)} arguments")
    try:
        device = device_for(backend)
    except RuntimeError as exc:
        return Outcome("error", f"{where}: backend {backend!r} is not available ({first_line(exc)})")
    xs = tuple(jax.device_put(np.asarray(x).astype(f.dtype), device) for x in inputs)
    notes: list[str] = []
    try:
        compiled_fn = vectorised(v.fn, transform, argnum, len(case.args))
        t0 = time.perf_counter()
        compiled = compiled_fn.lower(*xs).compile()
        t1 = time.perf_counter()
        out = jax.block_until_ready(compiled(*xs))
        t2 = time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - any failure of user code is recorded
        status = "unsupported" if is_unsupported(exc) else "error"
        return Outcome(status, f"{where}: {first_line(exc)}")
    values = np.asarray(out)
    if values.shape != xs[0].shape:
        return Outcome("error", f"{where}: returned shape {values.shape[1:]} per point, expected a scalar")
    if values.dtype != f.dtype:
        notes.append(f"returned {values.dtype} for {f.name} inputs; cast to {f.name}")
        values = values.astype(f.dtype)
    return Outcome("ok", "", values, compile_s=t1 - t0, run_s=t2 - t1, notes=tuple(notes))


def flushes_subnormals(dtype: Any, backend: str | None = None) -> bool:
    """Whether the backend flushes ``dtype`` subnormals to zero: half the smallest normal
    is computed at run time from an argument, so XLA cannot fold it away."""
    import jax

    f = fmt(dtype)
    x = jax.device_put(np.array([f.smallest_normal], dtype=f.dtype), device_for(backend))
    out = np.asarray(jax.jit(lambda v: v * 0.5)(x)).astype(np.float64)
    return bool(out[0] == 0.0)


def backend_facts(backend: str | None = None, dtypes: tuple[str, ...] = ("float32", "float16", "bfloat16")) -> dict[str, Any]:
    """What every result records about where it was computed: backend, device kind,
    versions, and per dtype whether subnormals are flushed to zero."""
    import jax
    import jaxlib

    device = device_for(backend)
    ftz = {}
    for d in dtypes:
        if d == "float64" and not jax.config.jax_enable_x64:
            continue
        ftz[d] = flushes_subnormals(d, backend)
    return {
        "backend": device.platform,
        "device_kind": device.device_kind,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "flushes_subnormals": ftz,
    }
