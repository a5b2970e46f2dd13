"""Why a variant is wrong at a point: the operation and the source line that lose the digits.

The pitfall: the equation where a result *looks* wrong is rarely where it went wrong, and
an error measured against the exact program confuses an operation that loses digits
with one that faithfully passes on digits lost before it. So each equation is charged
only its **local error** (Herbie's): the operation applied in the working dtype to its
*exact* inputs rounded to that dtype, against its exact result rounded, in ULPs. The
program is traced as the sweep measures it, without an outer ``jit`` (which would drop
each equation's source line), and run twice side by side: in the dtype with the
backend's own kernels, one primitive at a time, and exactly with mpmath
(:mod:`rulelab.scoring.exact`), the exact run taking the float run's branches. The
precision is confirmed as references are: the exact run is repeated at twice the
precision until every equation's exact result rounds the same.

The blamed equation is, where the result is not finite, the first one whose result is
not finite from finite inputs (an overflow, a NaN from finite values, a domain error);
otherwise the one with the largest local error, first in program order on ties. Only
equations the result depends on count (the branch a ``select_n`` did not take is not
blamed).
"""

from __future__ import annotations

import linecache
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np

from rulelab.core.errors import first_line
from rulelab.core.floats import fmt, mpf_parts, round_exact, ulp_distance
from rulelab.jaxrun import backend as backends
from rulelab.jaxrun.evaluate import callback_logs_off, scalar_transform
from rulelab.model.case import Case
from rulelab.scoring import exact
from rulelab.store.vocabulary import KEYS, POINT_INPUTS, ULP_UPPER, Bucket, Status

PRECISIONS = (256, 512, 1024, 2048)
"""Precisions of the exact run, tried in turn until two agree on every equation."""
MAX_STEPS = 1_000
"""Equations evaluated (loop iterations unrolled) before a point is given up as not
localized: an ODE solver's thousands of steps would cost minutes per point."""
POINTS = 3
"""How many of a failing result's worst inputs a sweep localizes (``rulelab blame``
localizes any input)."""
CANCELLATION_BITS = 8
"""An add or sub whose exact result is this many binades below its largest input cancels."""
CALLS = ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")
"""Primitives that call a jaxpr: evaluated by running it."""
_JAX_MACHINERY = ("source_info_util.py", "partial_eval.py", "core.py", "linear_util.py", "traceback_util.py", "profiler.py",
                  "ad.py", "pjit.py", "api.py", "api_util.py", "custom_derivatives.py", "batching.py", "dispatch.py")
"""Files of JAX's tracing, differentiation and jit machinery, skipped when naming the
JAX code that wrote an equation. (Differentiating a jit-compiled JAX function, such as
``jax.nn.sigmoid``, inlines its derivative with only these frames.)"""


class NotLocalized(Exception):
    """The point cannot be localized (a primitive without an exact implementation, a loop
    that does not end); the message says which."""


@dataclass(frozen=True)
class Source:
    """Where an equation comes from: a file, line and function, the line's text, and
    whether JAX wrote it (a rule of JAX's own, such as a library function's derivative)."""

    file: str
    line: int
    function: str
    text: str
    jax: bool

    def __str__(self) -> str:
        where = f"{self.file}:{self.line} ({self.function})"
        return f"{where}, JAX's" if self.jax else where


@dataclass
class Step:
    """One equation as evaluated: what it is, where it comes from, its float and exact
    results (the largest local error over its elements), and what went wrong there."""

    index: int
    primitive: str
    source: Source
    name_stack: str
    computed: float
    exact: float
    local_ulp: float
    flags: tuple[str, ...] = ()
    label: str = ""
    ins: tuple[int, ...] = ()
    outs: tuple[int, ...] = ()
    live: bool = False


@dataclass
class Localization:
    """Every equation of one point's program, the blamed one (None when no equation
    loses more than one ULP), the result computed and exact, the precision that settled
    it, and why the point could not be localized, if it could not."""

    steps: list[Step]
    blamed: Step | None
    computed: float
    exact: float
    precision: int
    not_localized: str = ""

    def summary(self) -> str:
        """One line: the blamed primitive, its source, its local error and the cause."""
        if self.not_localized:
            return f"blame: not localized ({self.not_localized})"
        b = self.blamed
        if b is None:
            return "blame: no equation loses more than 1 ULP here"
        ulp = "inf" if math.isinf(b.local_ulp) else f"{b.local_ulp:.3g}"
        return f"blame: {b.primitive} at {b.source}: {ulp} ULP local error, {b.label}"


# --- the two runs ------------------------------------------------------------------------------


@dataclass
class _Run:
    prec: int
    memo: dict[Any, Any]
    entry: Source
    steps: list[Step] = field(default_factory=list)
    pending: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    next_id: int = 0

    def bind(self, eqn: Any, values: Sequence[Any]) -> list[np.ndarray]:
        """``_bind``, remembered across the runs at each precision (the float program
        does not change with the exact run's precision)."""
        arrays = [np.asarray(v) for v in values]
        key = (id(eqn), tuple((a.dtype.str, a.shape, a.tobytes()) for a in arrays))
        if key not in self.memo:
            self.memo[key] = _bind(eqn, arrays)
        return self.memo[key]

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


def _is_float(aval: Any) -> bool:
    import jax.numpy as jnp

    return jnp.issubdtype(aval.dtype, jnp.floating)


def _source(run: _Run, eqn: Any, site: Source | None) -> Source:
    """Where ``eqn`` comes from (:func:`_frame_of`); inside a called ``jit`` function, the call's site."""
    if site is not None:
        return site
    key = ("source", id(eqn))  # (found once per point: the runs at each precision share the memo)
    if key not in run.memo:
        run.memo[key] = _frame_of(eqn, run.entry)
    return run.memo[key]


def _frame_of(eqn: Any, entry: Source) -> Source:
    """Where ``eqn`` comes from: its innermost user frame (rulelab's own transform
    wrappers skipped); with none, JAX wrote it: the innermost frame of JAX's library past
    its machinery, else ``entry`` (the variant's function), marked as JAX's."""
    from jax._src import source_info_util as siu

    tb = eqn.source_info.traceback
    frames = [fr for fr in (tb.frames if tb is not None else ()) if "/rulelab/jaxrun/" not in fr.file_name]
    for fr in frames:
        if siu.is_user_filename(fr.file_name):
            return _frame_source(fr, jax_wrote=False)
    for fr in frames:
        if "/jax/" in fr.file_name and not fr.file_name.endswith(_JAX_MACHINERY):
            return _frame_source(fr, jax_wrote=True)
    return entry


def _entry_source(fn: Any) -> Source:
    """The definition of a variant's function, marked as JAX's (what names the
    equations JAX wrote with no other frame)."""
    import inspect

    fn = inspect.unwrap(fn)
    try:
        file, (lines, start) = inspect.getsourcefile(fn) or "<unknown>", inspect.getsourcelines(fn)
        first = next((i for i, t in enumerate(lines) if t.lstrip().startswith("def ")), 0)
        return Source(file, start + first, getattr(fn, "__name__", "?"), lines[first].strip(), True)
    except (TypeError, OSError):
        return Source("<jax>", 0, getattr(fn, "__name__", "?"), "", True)


def _frame_source(fr: Any, jax_wrote: bool) -> Source:
    line = getattr(fr, "start_line", None) or getattr(fr, "line_num", 0)  # (source_info's frames and the traceback's name it apart)
    return Source(fr.file_name, line, fr.function_name, linecache.getline(fr.file_name, line).strip(), jax_wrote)


def _bind(eqn: Any, values: Sequence[Any]) -> list[np.ndarray]:
    """The primitive applied eagerly (the backend's own kernel) to ``values``; a
    primitive that only moves elements is applied with numpy (:data:`_MOVES`)."""
    arrays = [np.asarray(v) for v in values]
    moved = _moved(eqn, arrays)
    if moved is not None:
        return [moved]
    with callback_logs_off():
        out = eqn.primitive.bind(*arrays, **eqn.params)
    outs = out if eqn.primitive.multiple_results else [out]
    return [np.asarray(o) for o in outs]


_MOVES = {
    "reshape": lambda x, p: np.reshape(x, p["new_sizes"]),
    "squeeze": lambda x, p: np.squeeze(x, tuple(p["dimensions"])),
    "slice": lambda x, p: x[tuple(slice(a, b, c) for a, b, c in zip(p["start_indices"], p["limit_indices"], p["strides"] or [1] * x.ndim))],
    "broadcast_in_dim": lambda x, p: np.broadcast_to(np.expand_dims(x, tuple(i for i in range(len(p["shape"])) if i not in p["broadcast_dimensions"])), p["shape"]),
    "copy": lambda x, p: x,
    "copy_p": lambda x, p: x,
}
"""Primitives that only move elements, as numpy: the same bits on every backend, without
the compilation per primitive and shape (and the dispatch per call) of an eager kernel."""


def _moved(eqn: Any, arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """The result of a primitive that moves elements (:data:`_MOVES`, concatenate), or None."""
    name = eqn.primitive.name
    out_dtype = eqn.outvars[0].aval.dtype if len(eqn.outvars) == 1 else None
    if name in _MOVES and len(arrays) == 1:
        return np.asarray(_MOVES[name](arrays[0], eqn.params), dtype=out_dtype).copy()
    if name == "concatenate":
        return np.concatenate(arrays, axis=eqn.params["dimension"]).astype(out_dtype, copy=False)
    return None


def _rounded(values: np.ndarray, dtype: Any) -> np.ndarray:
    """Exact values (object array of mpf or None) correctly rounded to ``dtype``."""
    flat = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(flat.size)
    for i, v in enumerate(flat):
        parts = None if v is None else mpf_parts(v if isinstance(v, mpmath.mpf) else mpmath.mpf(v))
        out[i] = math.nan if v is None else float(v) if parts is None else round_exact(*parts, dtype)
    return out.astype(fmt(dtype).dtype).reshape(np.shape(values))


def _ulps(a: np.ndarray, b: np.ndarray, dtype: Any) -> float:
    """The largest ULP distance between ``a`` and ``b`` (inf where one is not finite and
    the other is, or where their non-finite values differ)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    worst = 0.0
    for x, y in zip(a, b):
        if math.isnan(x) or math.isnan(y):
            d = 0.0 if (math.isnan(x) and math.isnan(y)) else math.inf
        elif math.isinf(x) or math.isinf(y):
            d = 0.0 if x == y else math.inf
        else:
            d = float(ulp_distance(np.array([x]), np.array([y]), dtype)[0])
        worst = max(worst, d)
    return worst


def _flags(ins_f: Sequence[np.ndarray], out_f: np.ndarray, out_x: np.ndarray, dtype: Any) -> tuple[str, ...]:
    finite_in = all(np.all(np.isfinite(np.asarray(v, dtype=np.float64))) for v in ins_f)
    nan_in = any(np.any(np.isnan(np.asarray(v, dtype=np.float64))) for v in ins_f)
    f = np.asarray(out_f, dtype=np.float64)
    out = []
    if finite_in and np.any(np.isinf(f)):
        out.append("overflow")
    if not nan_in and np.any(np.isnan(f)):
        out.append("nan")
    if any(v is None for v in np.asarray(out_x, dtype=object).reshape(-1)) and finite_in:
        out.append("domain")
    tiny = fmt(dtype).smallest_normal
    small = [abs(v) for v in np.asarray(out_x, dtype=object).reshape(-1) if v is not None and 0 < abs(v) < tiny]
    if small and np.any(np.abs(f) < tiny):  # the exact result itself is below the normal range
        out.append("underflow")
    return tuple(out)


def _label(step: Step, ins_f: Sequence[np.ndarray], ins_x: Sequence[np.ndarray], out_x: np.ndarray) -> str:
    """The cause of a step's error, in words."""
    name = step.primitive
    fins = [np.asarray(v, dtype=np.float64).reshape(-1) for v in ins_f]
    if name == "div" and any(np.all(v == 0) for v in fins[:1]) and np.all(fins[1] == 0):
        return "0/0"
    if name in ("add", "sub", "add_any") and "nan" in step.flags and all(np.any(np.isinf(v)) for v in fins):
        return "inf - inf"
    if name == "mul" and "nan" in step.flags:
        return "inf * 0"
    if "domain" in step.flags:
        return "domain"
    if "overflow" in step.flags:
        return "overflow"
    if "underflow" in step.flags:
        return "underflow/flush"
    if "nan" in step.flags:
        return "NaN"
    if name in ("add", "sub", "add_any") and step.local_ulp > 1:
        big = max((abs(v) for a in ins_x for v in np.asarray(a, dtype=object).reshape(-1) if v is not None), default=0)
        out = [abs(v) for v in np.asarray(out_x, dtype=object).reshape(-1) if v is not None]
        if big and out and max(out) <= big * mpmath.ldexp(1, -CANCELLATION_BITS):
            return "cancellation"
    if name in exact.TRANSCENDENTAL and step.local_ulp > 1:
        return "inaccurate library function"
    return "rounding" if step.local_ulp > 1 else ""


def _literal(v: Any) -> tuple[np.ndarray, np.ndarray]:
    val = np.asarray(v.val)
    return val, exact.lift(val) if np.issubdtype(val.dtype, np.floating) or val.dtype.kind == "V" else val


def _run_jaxpr(run: _Run, jaxpr: Any, consts: Sequence[Any], args: Sequence[tuple[np.ndarray, Any, int]], site: Source | None) -> list[tuple[np.ndarray, Any, int]]:
    """Evaluate ``jaxpr`` on (float, exact, id) arguments; returns the outputs likewise."""
    from jax.extend.core import Literal

    env: dict[Any, tuple[np.ndarray, Any, int]] = {}

    def read(v: Any) -> tuple[np.ndarray, Any, int]:
        if isinstance(v, Literal):
            f, x = _literal(v)
            return f, x, 0
        return env[v]

    for v, c in zip(jaxpr.constvars, consts):
        c = np.asarray(c)
        env[v] = (c, exact.lift(c) if _is_float(v.aval) else c, 0)
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        outs = _eqn(run, eqn, ins, site)
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _as_exact(x: Any) -> Any:
    """An operand as exact values: a discrete operand (an integer exponent, a count) lifted."""
    return x if isinstance(x, np.ndarray) and x.dtype == object else exact.lift(np.asarray(x))


def _closed(j: Any) -> tuple[Any, Sequence[Any]]:
    return (j.jaxpr, j.consts) if hasattr(j, "consts") else (j, ())


def _eqn(run: _Run, eqn: Any, ins: list[tuple[np.ndarray, Any, int]], site: Source | None) -> list[tuple[np.ndarray, Any, int]]:
    name = eqn.primitive.name
    p = eqn.params
    if name in CALLS:
        inner = p.get("jaxpr") or p.get("call_jaxpr") or p.get("fun_jaxpr")
        jaxpr, consts = _closed(inner)
        call_site = site if site is not None else (_source(run, eqn, None) if name in ("jit", "pjit") else None)
        return _run_jaxpr(run, jaxpr, consts, ins[: len(jaxpr.invars)] if name.startswith("custom_vjp") else ins, call_site)
    if name == "cond":
        branch = int(np.asarray(ins[0][0]))
        jaxpr, consts = _closed(p["branches"][branch])
        return _run_jaxpr(run, jaxpr, consts, ins[1:], site)
    if name == "while":
        cj, cc = _closed(p["cond_jaxpr"])
        bj, bc = _closed(p["body_jaxpr"])
        nc, nb = p["cond_nconsts"], p["body_nconsts"]
        c_consts, b_consts, carry = ins[:nc], ins[nc : nc + nb], ins[nc + nb :]
        while True:
            (pred,) = _run_jaxpr(run, cj, cc, [*c_consts, *carry], site)
            if not bool(np.asarray(pred[0])):
                return carry
            carry = _run_jaxpr(run, bj, bc, [*b_consts, *carry], site)
    if name == "scan":
        return _scan(run, eqn, ins, site)
    if name == "custom_linear_solve":  # the solve jaxpr on its constants and the right-hand side, as JAX's own impl runs it
        lengths, jaxprs = p["const_lengths"], p["jaxprs"]
        start = lengths.matvec + lengths.vecmat
        solve_consts = ins[start : start + lengths.solve]
        b = ins[sum(lengths) :]
        jaxpr, consts = _closed(jaxprs.solve)
        return _run_jaxpr(run, jaxpr, consts, [*solve_consts, *b], site)
    if len(run.steps) >= MAX_STEPS:
        raise NotLocalized(f"the program runs more than {MAX_STEPS:,} equations")
    outs_f = run.bind(eqn, [f for f, _, _ in ins])
    ids = tuple(run.new_id() for _ in outs_f)
    in_ids = tuple(i for _, _, i in ins)
    floats = [_is_float(v.aval) for v in eqn.outvars]
    if not any(floats):
        outs_x: list[Any] = list(outs_f)
    elif name in exact.AS_COMPUTED:
        outs_x = [exact.lift(f) for f in outs_f]
    elif name in exact.STRUCTURAL:
        outs_x = _structural(eqn, ins, outs_f)
    elif name in exact.ARITHMETIC:
        with mpmath.workprec(run.prec):
            outs_x = [exact.arithmetic(name, [_as_exact(x) for _, x, _ in ins], p)]
    else:
        raise NotLocalized(f"primitive {name}")
    step_ins = in_ids
    if name == "select_n":  # only the predicate and the cases it chose feed the result
        chosen = sorted({int(c) for c in np.asarray(ins[0][0]).reshape(-1)})
        step_ins = (in_ids[0], *(in_ids[1 + c] for c in chosen))
    source = _source(run, eqn, site)
    if floats[0] and name in exact.ARITHMETIC:
        _record(run, eqn, name, source, ins, outs_f[0], outs_x[0], step_ins, ids)
    else:
        run.steps.append(Step(len(run.steps), name, source, str(eqn.source_info.name_stack), math.nan, math.nan, 0.0, ins=step_ins, outs=ids))
    return [(f, x, i) for f, x, i in zip(outs_f, outs_x, ids)]


def _record(run: _Run, eqn: Any, name: str, source: Source, ins: list[tuple[np.ndarray, Any, int]], out_f: np.ndarray, out_x: Any,
            in_ids: tuple[int, ...], ids: tuple[int, ...]) -> None:
    """One arithmetic step with its exact result rounded (what two precisions must agree
    on); its local error and flags are charged later, and only if the result depends on it."""
    rounded_out = _rounded(out_x, eqn.outvars[0].aval.dtype)
    first = float(np.asarray(out_f, dtype=np.float64).reshape(-1)[0]) if np.size(out_f) else math.nan
    first_x = float(np.asarray(rounded_out, dtype=np.float64).reshape(-1)[0]) if np.size(rounded_out) else math.nan
    step = Step(len(run.steps), name, source, str(eqn.source_info.name_stack), first, first_x, 0.0, ins=in_ids, outs=ids)
    run.steps.append(step)
    run.pending[step.index] = (eqn, ins, out_f, out_x, rounded_out)


def _charge(run: _Run, step: Step) -> None:
    """A step's local error (the op in the dtype on its exact inputs rounded, against its
    exact result rounded), its flags and the cause."""
    eqn, ins, out_f, out_x, rounded_out = run.pending[step.index]
    dtype = eqn.outvars[0].aval.dtype
    rounded_ins = [_rounded(x, v.aval.dtype) if _is_float(v.aval) else f for (f, x, _), v in zip(ins, eqn.invars)]
    same = all(np.array_equal(np.asarray(r), np.asarray(f), equal_nan=True) for r, (f, _, _) in zip(rounded_ins, ins))
    local = out_f if same else run.bind(eqn, rounded_ins)[0]  # (same inputs: the op's own result)
    step.flags = _flags([f for f, _, _ in ins], out_f, out_x, dtype)
    if _undefined_locally(local, rounded_out, ins, rounded_ins):
        step.local_ulp, step.flags = math.nan, (*step.flags, "exact inputs underflow")
        return
    step.local_ulp = _ulps(local, rounded_out, dtype)
    step.label = _label(step, [f for f, _, _ in ins], [x for _, x, _ in ins], out_x)


def _undefined_locally(local: np.ndarray, rounded_out: np.ndarray, ins: list[tuple[np.ndarray, Any, int]], rounded_ins: list[Any]) -> bool:
    """Whether a step's local error is undefined: its exact inputs underflow to 0 in the
    dtype (the float program is far from the exact one before this step, as when an exact
    iteration converged where the float one did not), so the op on them is not finite
    where its exact result is. Such a step is not charged: the digits were lost before it."""
    if np.all(np.isfinite(np.asarray(local, dtype=np.float64))) or not np.all(np.isfinite(np.asarray(rounded_out, dtype=np.float64))):
        return False
    for (_, x, _), r in zip(ins, rounded_ins):
        exact_values = np.asarray(x, dtype=object).reshape(-1)
        zeros = np.asarray(r, dtype=np.float64).reshape(-1) == 0
        if any(z and v is not None and v != 0 for z, v in zip(zeros, exact_values)):
            return True
    return False


def _structural(eqn: Any, ins: list[tuple[np.ndarray, Any, int]], outs_f: list[np.ndarray]) -> list[Any]:
    """The exact outputs of a primitive that moves elements: the primitive applied to
    the positions of its floating inputs' elements, read back from the exact values."""
    pool: list[Any] = []
    positions = []
    for (f, x, _), v in zip(ins, eqn.invars):
        if _is_float(v.aval):
            start = len(pool)
            pool.extend(np.asarray(x, dtype=object).reshape(-1))
            positions.append(np.arange(start, start + np.size(f), dtype=np.int32).reshape(np.shape(f)))
        else:
            positions.append(f)
    result = []  # (pad's padding value is an operand: its position is in the pool like any other)
    for o, f, v in zip(_bind(eqn, positions), outs_f, eqn.outvars):
        if not _is_float(v.aval):
            result.append(f)
            continue
        idx = np.asarray(o)
        arr = np.empty(idx.shape, dtype=object)
        for k, i in np.ndenumerate(idx):
            arr[k] = pool[int(i)]
        result.append(arr)
    return result


def _scan(run: _Run, eqn: Any, ins: list[tuple[np.ndarray, Any, int]], site: Source | None) -> list[tuple[np.ndarray, Any, int]]:
    p = eqn.params
    jaxpr, consts = _closed(p["jaxpr"])
    nc, ncarry, length = p["num_consts"], p["num_carry"], p["length"]
    c, carry, xs = ins[:nc], ins[nc : nc + ncarry], ins[nc + ncarry :]
    ys: list[list[tuple[np.ndarray, Any, int]]] = []
    order = range(length - 1, -1, -1) if p.get("reverse") else range(length)
    for t in order:
        x_t = [(np.asarray(f)[t], np.asarray(x, dtype=object)[t] if isinstance(x, np.ndarray) and x.dtype == object else np.asarray(x)[t], i)
               for f, x, i in xs]
        outs = _run_jaxpr(run, jaxpr, consts, [*c, *carry, *x_t], site)
        carry, y = outs[:ncarry], outs[ncarry:]
        ys.append(y)
    if p.get("reverse"):
        ys.reverse()
    stacked = []
    for k, v in enumerate(eqn.outvars[ncarry:]):
        fs = np.stack([y[k][0] for y in ys]) if ys else np.zeros(v.aval.shape, v.aval.dtype)
        xs_k = np.empty((len(ys), *np.shape(ys[0][k][0])), dtype=object) if ys else np.zeros(v.aval.shape)
        for t, y in enumerate(ys):
            val = np.asarray(y[k][1], dtype=object)
            xs_k[t] = val if val.ndim else val.item()
        stacked.append((fs, xs_k if _is_float(v.aval) else fs, run.new_id()))
        run.steps.append(Step(len(run.steps), "scan", _source(run, eqn, site), "", math.nan, math.nan, 0.0, ins=tuple(y[k][2] for y in ys), outs=(stacked[-1][2],)))
    return [*carry, *stacked]


# --- one point -----------------------------------------------------------------------------------


def _live(steps: list[Step], outputs: Sequence[int]) -> None:
    """Mark the steps the outputs depend on (a select_n's untaken cases excluded)."""
    need = set(outputs)
    for s in reversed(steps):
        if need.intersection(s.outs):
            s.live = True
            need.update(s.ins)


def _blamed(steps: list[Step], computed: float) -> Step | None:
    live = [s for s in steps if s.live and not math.isnan(s.local_ulp)]
    if not math.isfinite(computed):
        for s in live:
            if set(s.flags) & {"overflow", "nan", "domain"}:
                return s
    worst = max(live, key=lambda s: s.local_ulp, default=None)  # (max keeps the first of equals)
    return worst if worst is not None and worst.local_ulp > 1 else None


def _trace(case: Case, variant: str, transform: str, arg: str | None, dtype: str) -> Any:
    """The program the sweep measures, traced on scalars of ``dtype`` without an outer jit
    (so each equation keeps its source)."""
    import jax

    f = fmt(dtype)
    argnum = 0 if arg is None else case.args.index(arg)
    fn = scalar_transform(case.variants[variant].fn, transform, argnum, len(case.args))
    return jax.make_jaxpr(fn)(*[np.zeros((), f.dtype) for _ in case.args])


def _least_steps(jaxpr: Any) -> int:
    """The fewest equations a run of ``jaxpr`` evaluates (a scan's iterations counted,
    a ``while`` once, a ``cond``'s shortest branch): a program over :data:`MAX_STEPS`
    is known not to be localized before it is run."""
    n = 0
    for eqn in jaxpr.eqns:
        p = eqn.params
        inner = p.get("jaxpr") or p.get("call_jaxpr") or p.get("fun_jaxpr")
        if eqn.primitive.name == "scan":
            n += p["length"] * _least_steps(_closed(inner)[0])
        elif eqn.primitive.name in CALLS:
            n += _least_steps(_closed(inner)[0])
        elif eqn.primitive.name == "cond":
            n += min(_least_steps(_closed(b)[0]) for b in p["branches"])
        elif eqn.primitive.name == "while":
            n += _least_steps(_closed(p["cond_jaxpr"])[0])
        elif eqn.primitive.name == "custom_linear_solve":
            n += _least_steps(_closed(p["jaxprs"].solve)[0])
        else:
            n += 1
    return n


def _run_once(closed: Any, xs: list[np.ndarray], dtype: str, prec: int, memo: dict[Any, list[np.ndarray]], entry: Source) -> tuple[_Run, float, float]:
    run = _Run(prec, memo, entry)
    args = [(x, exact.lift(x), run.new_id()) for x in xs]
    (out,) = _run_jaxpr(run, closed.jaxpr, closed.consts, args, None)
    _live(run.steps, [out[2]])
    computed = float(np.asarray(out[0], dtype=np.float64))
    exact_out = float(_rounded(np.asarray(out[1], dtype=object), fmt(dtype).dtype)) if _is_float_value(out[0]) else computed
    return run, computed, exact_out


def _is_float_value(v: Any) -> bool:
    import jax.numpy as jnp

    return jnp.issubdtype(np.asarray(v).dtype, jnp.floating)


def localize(case: Case, variant: str, transform: str, arg: str | None, dtype: str, point: Sequence[float],
             backend: str | None = None) -> Localization:
    """Localize the error of ``variant`` of ``case`` under ``transform`` (in ``arg``) at
    ``point`` in ``dtype``: every equation with its float and exact results and local
    error, and the blamed one. A point that cannot be localized says why."""
    return localize_many(case, variant, transform, arg, dtype, [point], backend)[0]


def localize_many(case: Case, variant: str, transform: str, arg: str | None, dtype: str, points: Sequence[Sequence[float]],
                  backend: str | None = None) -> list[Localization]:
    """:func:`localize` at each of ``points``, the program traced once."""
    import jax

    with backends.x64(dtype == "float64"), jax.default_device(backends.device_for(backend)):
        try:
            closed = _trace(case, variant, transform, arg, dtype)
        except Exception as exc:  # noqa: BLE001 - the variant does not trace here: nothing to localize
            return [Localization([], None, math.nan, math.nan, 0, not_localized=f"the program does not trace: {first_line(exc)}")] * len(points)
        if (least := _least_steps(closed.jaxpr)) > MAX_STEPS:
            return [Localization([], None, math.nan, math.nan, 0, not_localized=f"the program runs at least {least:,} equations (over {MAX_STEPS:,})")] * len(points)
        entry = _entry_source(case.variants[variant].fn)
        return [_localize(closed, [np.asarray(v, dtype=np.float64).astype(fmt(dtype).dtype) for v in p], dtype, entry) for p in points]


def _localize(closed: Any, xs: list[np.ndarray], dtype: str, entry: Source) -> Localization:
    previous, memo = None, {}
    for prec in PRECISIONS:
        try:
            run, computed, exact_out = _run_once(closed, xs, dtype, prec, memo, entry)
        except NotLocalized as exc:
            return Localization([], None, math.nan, math.nan, prec, not_localized=str(exc))
        now = [s.exact for s in run.steps]
        if previous is not None and _same(previous, now):
            break
        previous = now
    for step in run.steps:
        if step.live and step.index in run.pending:
            _charge(run, step)
    return Localization(run.steps, _blamed(run.steps, computed), computed, exact_out, run.prec)


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))


# --- a sweep's blame table -----------------------------------------------------------------------


def failing(summary: Any) -> Any:
    """The summary rows a sweep localizes: measured, and over 4 ULP or with wrong non-finite values."""
    ok = summary["status"] == Status.OK.value
    return summary[ok & ((summary["max_ulp"] > ULP_UPPER[2]) | (summary[Bucket.WRONG_NONFINITE.column] > 0))]


Job = tuple[str, str, str, str, str, str | None, list[int], list[tuple[float, ...]], list[float]]
"""One result to localize: case, variant, transform, arg, dtype, backend, and its worst
inputs' ranks, points and the values the sweep computed there."""


def blame_jobs(summary: Any, worst: Any, backend: str | None, points: int = POINTS) -> list[Job]:
    """The localization jobs of a sweep's tables: each failing result's ``points`` worst inputs."""
    keys = [k for k in KEYS if k != "backend"]  # (the backend is the one the blame runs on)
    todo = failing(summary)[keys]
    rows = worst[worst["rank"] < points].merge(todo, on=keys)
    jobs = []
    for k, g in rows.groupby(keys, sort=False):
        n = len(str(g["args"].iloc[0]).split(","))
        pts = [tuple(float(getattr(r, f"in{i}")) for i in range(n)) for r in g.itertuples()]
        jobs.append((*k, backend, [int(r) for r in g["rank"]], pts, [float(c) for c in g["computed"]]))
    return jobs


def blame_job(job: Job, facts: Any) -> list[dict[str, Any]]:
    """The blame rows of one job (run where the sweep ran: ``facts`` name the platform)."""
    from rulelab.model.case import get_case

    case_name, variant, transform, arg, dtype, backend, ranks, points, computed = job
    case = get_case(case_name)
    locs = localize_many(case, variant, transform, arg or None, dtype, points, backend)
    out = []
    for rank, point, swept, loc in zip(ranks, points, computed, locs):
        b = loc.blamed
        note = loc.not_localized and f"not localized: {loc.not_localized}"
        if not note and not (swept == loc.computed or (math.isnan(swept) and math.isnan(loc.computed))):
            note = f"the equation-by-equation run gives {loc.computed!r} where the sweep's compiled program gave {swept!r}"
        row = {**dict(zip(KEYS, (case_name, variant, transform, arg, dtype, facts["backend"]))), "rank": rank, **{f"in{i}": (point[i] if i < len(point) else math.nan) for i in range(len(POINT_INPUTS))},
               "primitive": b.primitive if b else "", "source": str(b.source) if b else "", "line_text": b.source.text if b else "",
               "jax_wrote": bool(b and b.source.jax), "name_stack": b.name_stack if b else "",
               "local_ulp": b.local_ulp if b else (math.nan if loc.not_localized else 0.0), "label": b.label if b else "",
               "computed": loc.computed, "exact_rounded": loc.exact, "note": note or ""}
        out.append(row)
    return out
