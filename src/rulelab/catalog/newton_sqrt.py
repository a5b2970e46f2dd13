"""sqrt(a) as the fixed point of Newton's map x -> (x + a/x) / 2: differentiating
through the iterations versus implicit differentiation of the fixed point.

An iterative case: ``Case.with_steps(n)`` rebuilds the naive variant with ``n``
unrolled iterations and the custom_vjp variant with at most ``n`` iterations (in the
forward solve and in every backward solve), so benchmarks can sweep cost against ``n``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rulelab.catalog import _fast
from rulelab.model.case import POSITIVE, Variant, make_case, register

DEFAULT_STEPS = 6
"""From the start below (at most 6.1% above sqrt r) the iterates stop changing after
at most 3 applications of the map in float16/bfloat16 and 5 in float32/float64
(measured over every float32 r in [0.5, 2) and 2e6 random float64 ones; no input
cycles between neighbours): 6 leaves one spare for both variants."""


def newton_step(a: Any, x: Any) -> Any:
    """One Newton iteration for x^2 = a."""
    return 0.5 * (x + a / x)


_UINT = {16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def pow2(k: Any, dtype: Any) -> Any:
    """2^k exactly in ``dtype`` (from the bits, not through pow), for integer ``k``
    in the dtype's normal exponent range."""
    info = jnp.finfo(dtype)
    biased = (k + (info.maxexp - 1)).astype(_UINT[info.bits])
    return lax.bitcast_convert_type(biased << info.nmant, dtype)


def reduce_argument(a: Any) -> tuple[Any, Any]:
    """(r, 2^k) with a = r 4^k exactly and r in [0.5, 2), so sqrt(a) = sqrt(r) 2^k.

    Iterating on r keeps every intermediate and every derivative near 1. Iterating on
    a itself would not: the derivative of a/x in x is -a x^-2, which underflows to 0
    once x nears sqrt(max float), and the gradient comes out twice too large there
    (float32 above about 1e37). r is a times two exact powers of two, so it carries
    the derivative in a with no rounding; k carries none."""
    a = jnp.asarray(a)
    _, e = jnp.frexp(lax.stop_gradient(a))
    k = jnp.right_shift(e, 1)  # floor(e / 2), also for negative e
    down = pow2(-k, a.dtype)  # a * 2^-k * 2^-k never under- or overflows
    return (a * down) * down, pow2(k, a.dtype)


def sqrt_guess(r: Any) -> Any:
    """(1 + r) / 2: within 6.1% above sqrt(r) for r in [0.5, 2) and never below it
    (AM-GM), so Newton descends monotonically. The start carries no derivative."""
    return lax.stop_gradient(0.5 + 0.5 * r)


@functools.lru_cache(maxsize=None)
def fixed_point_solver(max_iter: int) -> Callable[..., Any]:
    """``fixed_point(f, a, x_guess)``: iterate x -> f(a, x) until an iterate repeats or
    ``max_iter`` applications of f, with a custom_vjp whose backward solves the
    implicit-function adjoint u = x_bar + (df/dx)^T u as a fixed point of the same
    solver, so that it too is differentiable (grad2)."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def fixed_point(f: Callable[[Any, Any], Any], a: Any, x_guess: Any) -> Any:
        def unfinished(carry: tuple[Any, Any, Any]) -> Any:
            i, prev, x = carry
            return (i < max_iter) & (x != prev)

        def step(carry: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
            i, _, x = carry
            return i + 1, x, f(a, x)

        start = (jnp.asarray(1, dtype=jnp.int32), x_guess, f(a, x_guess))
        return lax.while_loop(unfinished, step, start)[2]

    def fwd(f: Callable[[Any, Any], Any], a: Any, x_guess: Any) -> tuple[Any, Any]:
        x_star = fixed_point(f, a, x_guess)
        return x_star, (a, x_star)

    def bwd(f: Callable[[Any, Any], Any], res: tuple[Any, Any], x_bar: Any) -> tuple[Any, Any]:
        a, x_star = res
        _, vjp_a = jax.vjp(lambda a_: f(a_, x_star), a)
        u = fixed_point(functools.partial(_adjoint_step, f), (a, x_star, x_bar), x_bar)
        (a_bar,) = vjp_a(u)
        return a_bar, jnp.zeros_like(x_star)

    fixed_point.defvjp(fwd, bwd)
    return fixed_point


def _adjoint_step(f: Callable[[Any, Any], Any], packed: tuple[Any, Any, Any], u: Any) -> Any:
    """u -> x_bar + (df/dx at x_star)^T u, the map whose fixed point is the adjoint."""
    a, x_star, x_bar = packed
    _, vjp_x = jax.vjp(lambda x: f(a, x), x_star)
    return x_bar + vjp_x(u)[0]


def naive_sqrt(steps: int) -> Callable[[Any], Any]:
    """``steps`` Newton iterations unrolled in a fori_loop with static bounds (a scan),
    so reverse mode differentiates through every iteration."""

    def fn(a: Any) -> Any:
        r, scale = reduce_argument(a)
        return scale * lax.fori_loop(0, steps, lambda _, x: newton_step(r, x), sqrt_guess(r))

    return fn


def custom_sqrt(steps: int) -> Callable[[Any], Any]:
    """At most ``steps`` iterations in a while_loop, differentiated implicitly."""
    fixed_point = fixed_point_solver(steps)

    def fn(a: Any) -> Any:
        r, scale = reduce_argument(a)
        return scale * fixed_point(newton_step, r, sqrt_guess(r))

    return fn


def variants_for(steps: int) -> dict[str, Callable[[Any], Any]]:
    """The step-dependent variants with ``steps`` iterations."""
    return {"naive": naive_sqrt(steps), "custom_vjp": custom_sqrt(steps)}


_DEFAULT = variants_for(DEFAULT_STEPS)

CASE = register(
    make_case(
        "newton_sqrt",
        "sqrt(a) as the fixed point of x -> (x + a/x) / 2",
        ("a",),
        POSITIVE,
        lambda mp, a: mp.sqrt(a),
        [
            Variant(
                "naive",
                _DEFAULT["naive"],
                "reverse mode through a fixed number of unrolled Newton iterations (fori_loop)",
            ),
            Variant(
                "custom_vjp",
                _DEFAULT["custom_vjp"],
                "fixed_point with a while_loop forward and an implicit-function backward "
                "solved as a fixed point (grad and grad2; no forward mode)",
            ),
            Variant("library", jnp.sqrt, "jnp.sqrt"),
        ],
        source="JAX docs: Custom derivative rules for JAX-transformable Python functions — "
        "implicit function differentiation of iterative implementations",
        derivatives={
            ("a", 1): lambda mp, a: 1 / (2 * mp.sqrt(a)),
            ("a", 2): lambda mp, a: -1 / (4 * a * mp.sqrt(a)),
        },
        fast_reference={("a", 0): _fast.sqrt, ("a", 1): _fast.sqrt_d1, ("a", 2): _fast.sqrt_d2},
        special_points=(
            # Edges of the reduced range: the start is exact at r = 1 and 6.1% high at
            # r = 0.5 and as r approaches 2.
            0.5,
            1.0,
            2.0,
            4.0,
            # 2^125: from here on the naive forward-mode tangent goes subnormal in
            # float32 and bfloat16 (measured with XLA on CPU, which flushes it to 0).
            4.253529586511731e37,
        ),
        notes="A while_loop cannot be reverse-differentiated, and differentiating through "
        "unrolled iterations costs memory and time per iteration; the implicit rule needs "
        "the converged point only. Too few iterations leave both inaccurate. Forward mode "
        "of the naive variant carries the tangent of r = a 4^-k, about 1/a, which goes "
        "subnormal for a at or above 2^125 in float32/bfloat16 (flushed to 0 where the "
        "backend flushes subnormals).",
        steps=variants_for,
        default_steps=DEFAULT_STEPS,
    )
)
