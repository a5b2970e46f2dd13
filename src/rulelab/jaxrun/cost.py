"""What a variant costs: steady-state time, compile time, op counts and memory.

Each measurement is of the function the accuracy sweeps also run: the variant under a
transform, vectorised over a 1-D batch and jit-compiled (``evaluate.vectorised``), on one
backend, in one dtype, at one batch size. The asv suites in ``bench/`` and ``rulelab
study`` both measure through this module, so the two never disagree on what is measured.

Inputs here are deterministic and moderate (log-spaced magnitudes inside the case's
domain): cost does not depend on where in the domain a point lies, and the accuracy
sweeps have their own input module for the points that matter numerically.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulelab.core.errors import first_line
from rulelab.core.floats import fmt
from rulelab.jaxrun.backend import device_for
from rulelab.jaxrun.evaluate import is_unsupported, vectorised
from rulelab.model.case import TRANSFORMS, Case, CaseError, Interval, Variant, get_case

DEFAULT_SIZE = 1024
"""Batch size when none is given: big enough that the kernel, not dispatch, shows."""

MAGNITUDES = (2.0**-4, 2.0**4)
"""Moderate magnitudes the inputs are spread over, clipped to the domain."""

CALL_PRIMITIVES = frozenset(
    {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint", "custom_lin"}
)
"""Primitives that only call a sub-jaxpr; :func:`count_eqns` counts their body, not them."""


# -- what is measured ------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One thing to measure: ``variant`` of ``case`` under ``transform`` (derivatives in
    argument ``arg``), on ``size`` points of ``dtype``, on ``backend`` (None: default)."""

    case: Case
    variant: Variant
    transform: str
    arg: str
    dtype: str
    size: int
    backend: str | None = None

    @property
    def argnum(self) -> int:
        return self.case.args.index(self.arg)

    @property
    def label(self) -> str:
        where = f"[{self.arg}]" if self.transform != "value" and len(self.case.args) > 1 else ""
        return f"{self.case.name}/{self.variant.name} {self.transform}{where} {self.dtype}[{self.size}] on {self.backend or 'default'}"


def target(
    case: Case | str,
    variant: Variant | str,
    transform: str = "value",
    *,
    arg: str | None = None,
    dtype: Any = "float32",
    size: int = DEFAULT_SIZE,
    backend: str | None = None,
    steps: int | None = None,
) -> Target:
    """Build a :class:`Target` from names. ``steps`` rebuilds an iterative case's variant
    with that many iterations (``Case.with_steps``); ``arg`` defaults to the first one."""
    c = get_case(case) if isinstance(case, str) else case
    if isinstance(variant, Variant):
        v = variant
    else:
        pool = c.with_steps(steps) if steps is not None else c.variants
        if variant not in pool:
            raise CaseError(f"case {c.name!r} has no variant {variant!r}" + (" with steps" if steps is not None else "") + f"; it has {', '.join(pool)}")
        v = pool[variant]
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; known: {', '.join(TRANSFORMS)}")
    a = c.args[0] if arg is None else arg
    if a not in c.args:
        raise CaseError(f"case {c.name!r} has no argument {a!r}; it has {', '.join(c.args)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return Target(c, v, transform, a, fmt(dtype).name, int(size), backend)


# -- inputs ----------------------------------------------------------------------------


def _segments(domain: Interval) -> list[tuple[float, float]]:
    """Signed ``(start, stop)`` ranges of moderate magnitude inside ``domain``: one on
    each side of zero the domain reaches. A domain that lies wholly beyond the moderate
    magnitudes gets a range of the same width in ratio at its near end."""
    small, large = MAGNITUDES
    out = []
    for sign, near, far in ((-1.0, -domain.hi, -domain.lo), (1.0, domain.lo, domain.hi)):
        if far <= 0:
            continue
        lo = max(near, 0.0)
        hi = min(far, large)
        lo = max(lo, min(small, hi / 16))
        if lo >= hi:  # domain beyond the moderate window: a ratio-16 range at its near end
            lo, hi = max(near, small), min(far, max(near, small) * 16)
        out.append((sign * lo, sign * hi))
    if not out:  # the domain is the single point 0 (or touches it only)
        out.append((0.0, 0.0))
    return out


def sample(domain: Interval, size: int, dtype: Any, *, permute: int = 0) -> np.ndarray:
    """``size`` deterministic points of ``dtype`` inside ``domain``, log-spaced over
    moderate magnitudes (both signs where the domain has both). ``permute`` > 0 shuffles
    them with that fixed seed, so a second argument does not move in step with the first."""
    f = fmt(dtype)
    segs = _segments(domain)
    counts = [size // len(segs) + (1 if i < size % len(segs) else 0) for i in range(len(segs))]
    parts = []
    for (a, b), n in zip(segs, counts):
        if a == b:
            parts.append(np.full(n, a))
        else:
            parts.append(np.sign(a or b) * np.geomspace(abs(a), abs(b), n))
    x = np.concatenate(parts).astype(f.dtype)
    inside = np.asarray(domain.contains(x.astype(np.float64)), dtype=bool)
    if not inside.all():  # rounding moved an end point onto an open end: use a middle one
        x[~inside] = x[inside][len(x[inside]) // 2] if inside.any() else x[~inside]
    if permute:
        x = x[np.random.default_rng(permute).permutation(size)]
    return x


def inputs(case: Case, size: int, dtype: Any) -> tuple[np.ndarray, ...]:
    """One array per case argument, from :func:`sample`."""
    return tuple(sample(d, size, dtype, permute=i) for i, d in enumerate(case.domain))


def device_inputs(t: Target) -> tuple[Any, ...]:
    """The target's inputs placed on its backend's first device (RuntimeError if absent)."""
    import jax

    device = device_for(t.backend)
    return tuple(jax.device_put(x, device) for x in inputs(t.case, t.size, t.dtype))


def abstract_inputs(t: Target) -> tuple[Any, ...]:
    """Shapes and dtypes of the inputs, committed to the target's device: enough to trace,
    lower and compile without moving data."""
    import jax
    from jax.sharding import SingleDeviceSharding

    sharding = SingleDeviceSharding(device_for(t.backend))
    return tuple(jax.ShapeDtypeStruct((t.size,), fmt(t.dtype).dtype, sharding=sharding) for _ in t.case.args)


# -- the function measured -------------------------------------------------------------


def jitted(t: Target) -> Callable[..., Any]:
    """The target's measured program, built by :func:`rulelab.jaxrun.evaluate.vectorised` as
    sweeps build it: fresh every call, so its first call or lowering traces and
    compiles from scratch (no cache hit)."""
    return vectorised(t.variant.fn, t.transform, t.argnum, len(t.case.args), name=f"{t.case.name}_{t.variant.name}_{t.transform}")


def compiled(t: Target) -> Any:
    """The target traced, lowered and compiled for its device (a ``jax.stages.Compiled``)."""
    return jitted(t).lower(*abstract_inputs(t)).compile()


@dataclass(frozen=True)
class Build:
    """One fresh compilation of a target: its jaxpr, its executable and the milliseconds
    from the start of the trace to the executable (trace + lower + XLA compile)."""

    jaxpr: Any
    executable: Any
    compile_ms: float


def build(t: Target) -> Build:
    """Trace, lower and compile the target from scratch, timing it. A real compilation
    only while JAX's persistent compilation cache is off (the default)."""
    fn = jitted(t)
    args = abstract_inputs(t)
    start = time.perf_counter()
    traced_fn = fn.trace(*args)
    executable = traced_fn.lower().compile()
    ms = (time.perf_counter() - start) * 1e3
    return Build(traced_fn.jaxpr, executable, ms)


def compile_ms(t: Target) -> float:
    """Milliseconds from a fresh trace to an executable (see :func:`build`)."""
    return build(t).compile_ms


# -- steady-state time -----------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Seconds per call: ``best`` and ``median`` over ``repeat`` samples of ``number``
    calls each (every call waits for its result)."""

    best: float
    median: float
    number: int
    repeat: int


def time_call(fn: Callable[..., Any], *args: Any, repeat: int = 5, min_time: float = 0.02) -> Timing:
    """Steady-state time of ``fn(*args)``, blocking on each result: one warm-up call, then
    ``number`` doubled until a sample lasts ``min_time`` seconds (as ``timeit.autorange``),
    then ``repeat`` samples."""
    import jax

    def sample_s(number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(fn(*args))
        return time.perf_counter() - start

    jax.block_until_ready(fn(*args))
    number = 1
    first = sample_s(number)
    while first < min_time and number < 1 << 24:
        number *= 2
        first = sample_s(number)
    samples = [first / number] + [sample_s(number) / number for _ in range(max(repeat, 1) - 1)]
    return Timing(min(samples), statistics.median(samples), number, len(samples))


def time_per_call(t: Target, *, repeat: int = 5, min_time: float = 0.02, executable: Any = None) -> Timing:
    """Steady-state time of the compiled target on its own inputs (see :func:`time_call`).
    ``executable`` is the target's :func:`compiled` program when the caller already has
    it (from :func:`build`): the same program, not compiled a second time."""
    return time_call(executable or compiled(t), *device_inputs(t), repeat=repeat, min_time=min_time)


# -- op counts -------------------------------------------------------------------------


def _sub_jaxprs(value: Any) -> Iterable[Any]:
    from jax.extend import core

    if isinstance(value, core.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, core.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def count_eqns(jaxpr: Any, *, recursive: bool = True) -> int:
    """Equations in ``jaxpr`` (a Jaxpr or ClosedJaxpr). With ``recursive`` (the default)
    the bodies of sub-jaxprs count too: a control-flow equation (``while``, ``cond``,
    ``scan``) counts one plus its bodies, while a pure call (``pjit``, ``custom_jvp_call``,
    ``custom_vjp_call``, ``remat`` — :data:`CALL_PRIMITIVES`) counts only as its body, so
    wrapping a helper in ``jax.jit`` does not change the count. Closures a primitive keeps
    as Python functions (a custom rule not taken) are not counted."""
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0
    for eqn in inner.eqns:
        subs = [s for v in eqn.params.values() for s in _sub_jaxprs(v)] if recursive else []
        if not (subs and eqn.primitive.name in CALL_PRIMITIVES):
            total += 1
        total += sum(count_eqns(s) for s in subs)
    return total


_HLO_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*\S")


def count_hlo_ops(hlo_text: str) -> int:
    """Instructions in HLO text: every ``name = ...`` line of every computation, fused
    computations included (parameters and constants too), so a longer fused chain
    counts as longer even when it runs as one kernel."""
    return sum(1 for line in hlo_text.splitlines() if _HLO_INSTRUCTION.match(line))


def hlo_op_count(c: Any) -> int:
    """:func:`count_hlo_ops` of a compiled function's optimized HLO (or of a Target)."""
    c = compiled(c) if isinstance(c, Target) else c
    return count_hlo_ops(c.as_text())


# -- memory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """Bytes XLA reserves for one call of a compiled function: scratch (``temp``),
    arguments and outputs, from ``Compiled.memory_analysis()``."""

    temp_bytes: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    code_bytes: int


def memory(c: Any) -> Memory | None:
    """The compiled function's (or Target's) :class:`Memory`; None where the backend
    reports none."""
    c = compiled(c) if isinstance(c, Target) else c
    try:
        stats = c.memory_analysis()
    except (NotImplementedError, RuntimeError, AttributeError):
        return None
    if stats is None:
        return None
    return Memory(
        temp_bytes=int(stats.temp_size_in_bytes),
        argument_bytes=int(stats.argument_size_in_bytes),
        output_bytes=int(stats.output_size_in_bytes),
        alias_bytes=int(stats.alias_size_in_bytes),
        code_bytes=int(stats.generated_code_size_in_bytes),
    )


def residual_bytes(t: Target) -> int:
    """Bytes reverse mode keeps between the forward and the backward pass of the
    vectorised variant (derivative in the target's argument): the arrays its ``jax.vjp``
    pullback holds. Found by abstract evaluation, so nothing runs. XLA may fuse an
    elementwise chain so that these never reach memory at once (``temp_bytes`` stays
    small), but they are what an unfused or larger program would have to store. Raises
    JAX's error where reverse mode is refused."""
    import jax

    fn, argnum = t.variant.fn, t.argnum

    def pullback(*xs: Any) -> Any:
        def of_arg(x: Any) -> Any:
            return jax.vmap(fn)(*xs[:argnum], x, *xs[argnum + 1 :])

        return jax.vjp(of_arg, xs[argnum])[1]

    leaves = jax.tree_util.tree_leaves(jax.eval_shape(pullback, *abstract_inputs(t)))
    return sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in leaves)


# -- support ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Support:
    """Whether a transform can be asked of a variant: ``status`` is ``ok``,
    ``unsupported`` (JAX refuses the transform; ``message`` is its reason) or ``error``
    (the variant itself failed to trace)."""

    status: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def support(case: Case | str, variant: Variant | str, transform: str, arg: str | None = None, dtype: Any = "float32") -> Support:
    """Trace and lower the vectorised transform once (nothing compiles or runs) and say
    whether JAX accepts it, as :func:`evaluate.is_unsupported` classifies the failure.
    Lowering is needed: JAX refuses some transforms only there (forward mode through a
    ``custom_vjp`` whose tangent traced to a constant)."""
    import jax

    t = target(case, variant, transform, arg=arg, dtype=dtype, size=2)
    try:
        args = tuple(jax.ShapeDtypeStruct((t.size,), fmt(t.dtype).dtype) for _ in t.case.args)
        jitted(t).lower(*args)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is classified
        return Support("unsupported" if is_unsupported(exc) else "error", first_line(exc))
    return Support("ok")


# -- everything at once ----------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    """All of a target's costs (``timing`` None when not asked for)."""

    target: Target
    compile_ms: float
    jaxpr_eqns: int
    hlo_ops: int
    memory: Memory | None
    timing: Timing | None


def measure(t: Target, *, timing: bool = True, repeat: int = 5, min_time: float = 0.02) -> Cost:
    """Compile time, op counts, memory and (optionally) steady-state time of ``t``, all
    of one compiled program."""
    b = build(t)
    run = time_per_call(t, repeat=repeat, min_time=min_time, executable=b.executable) if timing else None
    return Cost(t, b.compile_ms, count_eqns(b.jaxpr), hlo_op_count(b.executable), memory(b.executable), run)
