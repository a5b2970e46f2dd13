"""Iterative solvers differentiated through their iterations versus implicitly.

Three cases: the cube root by bisection, a scalar of the solution of a small SPD
system by conjugate gradients, and Kepler's equation by Newton's method. Each
takes its iteration count as a parameter (``steps``), so benchmarks can sweep run
time and memory against it: differentiating through the iterations stores every
iterate (or, for a while_loop, is refused), while the implicit rules
(lax.custom_root, lax.custom_linear_solve, a custom_jvp from the implicit function
theorem) cost one extra solve or one formula, whatever the count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rulelab.catalog import _fast
from rulelab.model.case import REALS, Interval, Variant, make_case, register

Array = Any

# --- cube root by bisection --------------------------------------------------------------

CBRT_STEPS = 64  # enough bisection steps for float64 (53 bits after the exponent split)


def _bisect_cbrt(t: Array, n: int) -> Array:
    """cbrt(t) by n bisection steps on the significand: |t| = w 2^(3q), w in [1/2, 4),
    cbrt(w) in [1/2, 2). Everything t enters is a comparison, so autodiff sees a
    function of constants."""
    mant, ex = jnp.frexp(jnp.abs(t))
    rem = ex % 3
    q = (ex - rem) // 3
    w = jnp.ldexp(mant, rem)

    def body(_: Any, bounds: tuple) -> tuple:
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = mid * mid * mid < w
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = lax.fori_loop(0, n, body, (jnp.full_like(t, 0.5), jnp.full_like(t, 2.0)))
    root = jnp.ldexp(0.5 * (lo + hi), q)
    return jnp.where(t == 0, t, jnp.sign(t) * root)


def make_naive_cbrt(n: int) -> Callable[[Array], Array]:
    """Bisection unrolled into a fori_loop and differentiated as is: the gradient is 0."""

    def naive_cbrt(t: Array) -> Array:
        return _bisect_cbrt(t, n)

    return naive_cbrt


def make_root_cbrt(n: int) -> Callable[[Array], Array]:
    """The same bisection as the solve of lax.custom_root: dx/dt = 1 / (3 x^2) implicitly."""

    def root_cbrt(t: Array) -> Array:
        return lax.custom_root(
            lambda x: x * x * x - t,
            t,
            lambda f, x0: _bisect_cbrt(t, n),
            lambda g, y: y / g(jnp.ones_like(y)),
        )

    return root_cbrt


def _m_cbrt(mp: Any, t: Any) -> Any:
    return mp.sign(t) * mp.cbrt(abs(t))


def _m_dcbrt(mp: Any, t: Any) -> Any:
    if t == 0:
        return mp.inf  # the one-sided limits agree: cbrt'(0) = +inf
    return 1 / (3 * mp.cbrt(abs(t)) ** 2)


def _m_d2cbrt(mp: Any, t: Any) -> Any:
    return -2 * mp.sign(t) / (9 * mp.cbrt(abs(t)) ** 5)  # t == 0: ZeroDivisionError (undefined)


register(
    make_case(
        name="cbrt_bisection",
        formula="x with x^3 = t, by bisection",
        args=("t",),
        domain=REALS,
        reference=_m_cbrt,
        derivatives={("t", 1): _m_dcbrt, ("t", 2): _m_d2cbrt},
        fast_reference={("t", 0): _fast.cbrt, ("t", 1): _fast.cbrt_d1, ("t", 2): _fast.cbrt_d2},
        variants=[
            Variant("naive", make_naive_cbrt(CBRT_STEPS), "bisection in a fori_loop, plain autodiff (gradient 0)"),
            Variant("custom_root", make_root_cbrt(CBRT_STEPS), "lax.custom_root around the bisection (implicit 1/(3x^2))"),
            Variant("library", jnp.cbrt, "jax.numpy.cbrt"),
        ],
        source="lax.custom_root (JAX documentation: implicit differentiation of solvers); jax.numpy.cbrt",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value is right to 1 ulp but every gradient is exactly 0, "
            "silently, in every dtype and at every t: the output depends on t only through "
            "comparisons (XLA even removes the loop from the compiled gradient). custom_root "
            "differentiates implicitly: dx/dt = 1/(3 x^2), within 4 ulp (grad2 within 8). Steps: "
            "bisection iterations on [1/2, 2) after an exponent split; 26 suffice for float32, 55 "
            "for float64."
        ),
        special_points=(0.0, 1.0, 8.0, -27.0, 1e-30, 1e30, 2.0),
        steps=lambda n: {"naive": make_naive_cbrt(n), "custom_root": make_root_cbrt(n)},
        default_steps=CBRT_STEPS,
    )
)


# --- conjugate gradients on a small SPD system ---------------------------------------------

CG_SIZE = 4
CG_STEPS = 8  # CG_SIZE iterations converge in exact arithmetic; the rest run on a tiny residual


def _laplacian_matvec(v: Array) -> Array:
    """The path-graph Laplacian (2 -1 / -1 2 -1 / ... with 1 at both ends) times v."""
    left = jnp.concatenate([v[:1], v[:-1]])
    right = jnp.concatenate([v[1:], v[-1:]])
    return 2 * v - left - right


def _spd_matvec(a: Array, b: Array) -> Callable[[Array], Array]:
    """v -> A v with A = (1 + a^2) I + b^2 L: SPD for all real a, b."""
    return lambda v: (1 + a * a) * v + (b * b) * _laplacian_matvec(v)


def _rhs(a: Array) -> Array:
    return jnp.zeros(CG_SIZE, dtype=jnp.result_type(a)).at[0].set(1)


def _cg(matvec: Callable[[Array], Array], rhs: Array, n: int) -> Array:
    """n conjugate-gradient steps from 0 on the right-hand side scaled to max 1 (r'r
    squares it, and would underflow for a tiny tangent right-hand side), guarded
    against the 0/0 of an exactly converged residual with a single where (the value is
    fine; its derivative is not)."""
    scale = jnp.max(jnp.abs(rhs))
    scale = jnp.where(scale == 0, 1, scale)
    return scale * _cg_unit(matvec, rhs / scale, n)


def _cg_unit(matvec: Callable[[Array], Array], rhs: Array, n: int) -> Array:

    def body(_: Any, state: tuple) -> tuple:
        x, r, p, rr = state
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        alpha = jnp.where(pap > 0, rr / pap, 0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = jnp.vdot(r, r)
        beta = jnp.where(rr > 0, rr_new / rr, 0)
        return x, r, r + beta * p, rr_new

    zero = jnp.zeros_like(rhs)
    x, *_ = lax.fori_loop(0, n, body, (zero, rhs, rhs, jnp.vdot(rhs, rhs)))
    return x


def make_naive_solve(n: int) -> Callable[[Array, Array], Array]:
    """CG unrolled in a fori_loop and differentiated through its iterations."""

    def naive_solve(a: Array, b: Array) -> Array:
        return _cg(_spd_matvec(a, b), _rhs(a), n)[0]

    return naive_solve


def make_custom_solve(n: int) -> Callable[[Array, Array], Array]:
    """The same CG as the solve of lax.custom_linear_solve: the derivative is one more
    (transposed) solve, never a derivative of the iterations."""

    def custom_solve(a: Array, b: Array) -> Array:
        matvec = _spd_matvec(a, b)
        x = lax.custom_linear_solve(matvec, _rhs(a), lambda mv, r: _cg(mv, r, n), symmetric=True)
        return x[0]

    return custom_solve


def make_library_solve(n: int) -> Callable[[Array, Array], Array]:
    """jax.scipy.sparse.linalg.cg with maxiter = n and zero tolerance."""

    def library_solve(a: Array, b: Array) -> Array:
        x, _ = jax.scipy.sparse.linalg.cg(_spd_matvec(a, b), _rhs(a), maxiter=n, tol=0.0)
        return x[0]

    return library_solve


def _m_system(mp: Any, a: Any, b: Any) -> tuple:
    lap = mp.matrix(CG_SIZE, CG_SIZE)
    for i in range(CG_SIZE):
        lap[i, i] = 1 if i in (0, CG_SIZE - 1) else 2
        if i + 1 < CG_SIZE:
            lap[i, i + 1] = lap[i + 1, i] = -1
    eye = mp.eye(CG_SIZE)
    mat = (1 + a * a) * eye + (b * b) * lap
    rhs = mp.matrix([1] + [0] * (CG_SIZE - 1))
    return mat, lap, eye, mp.lu_solve(mat, rhs)


def _m_solve(mp: Any, a: Any, b: Any) -> Any:
    return _m_system(mp, a, b)[3][0]


def _m_quad(u: Any, mat: Any, v: Any) -> Any:
    return (u.T * mat * v)[0]


def _m_solve_d(which: str, order: int) -> Callable[..., Any]:
    """s = e1' A^-1 e1, A' = dA/dp: s' = -x' A' x, s'' = 2 (A'x)' A^-1 (A'x) - x' A'' x."""

    def deriv(mp: Any, a: Any, b: Any) -> Any:
        mat, lap, eye, x = _m_system(mp, a, b)
        d1, d2 = (2 * a * eye, 2 * eye) if which == "a" else (2 * b * lap, 2 * lap)
        if order == 1:
            return -_m_quad(x, d1, x)
        ax = d1 * x
        return 2 * (ax.T * mp.lu_solve(mat, ax))[0] - _m_quad(x, d2, x)

    return deriv


register(
    make_case(
        name="linear_solve",
        formula="e1' A(a, b)^-1 e1, A = (1 + a^2) I + b^2 L (L: 4x4 path Laplacian), by CG",
        args=("a", "b"),
        domain=Interval(-4.0, 4.0),
        reference=_m_solve,
        derivatives={
            ("a", 1): _m_solve_d("a", 1),
            ("a", 2): _m_solve_d("a", 2),
            ("b", 1): _m_solve_d("b", 1),
            ("b", 2): _m_solve_d("b", 2),
        },
        variants=[
            Variant("naive", make_naive_solve(CG_STEPS), "CG in a fori_loop, plain autodiff through the iterations"),
            Variant("custom_linear_solve", make_custom_solve(CG_STEPS), "lax.custom_linear_solve around the same CG"),
            Variant("library", make_library_solve(CG_STEPS), "jax.scipy.sparse.linalg.cg (custom_linear_solve inside)"),
        ],
        source="lax.custom_linear_solve; jax.scipy.sparse.linalg.cg",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive backprop stores every CG iterate (compiled gradient "
            "temp memory 0.35 MB at 16 steps, 5.1 MB at 256, for 256 points; custom 0.02 MB at "
            "both) and differentiates the guard where(p'Ap > 0, r'r / p'Ap, 0): once a residual is "
            "exactly 0 the untaken branch is 0/0 and the gradient is NaN although the value is right. "
            "At the default 8 steps (4 unknowns) that is ~98% of an a, b grid in float32 (all of "
            "b = 0, where A is a multiple of I), all of it in float16 and ~96% in bfloat16. "
            "jax.scipy.sparse.linalg.cg with tol = 0 returns NaN values in float16 at some points "
            "(e.g. (1, 0.019); which points varies with the CPU's float16 arithmetic): p'Ap reaches 0 before r'r does. custom_linear_solve "
            "differentiates by one more CG solve; the CG here scales the right-hand side to max 1 so "
            "that r'r of a tiny tangent cannot underflow."
        ),
        special_points=((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.5, 2.0), (4.0, 4.0), (-3.0, 0.25), (1.0, 0.019), (2.0, 2.164)),
        steps=lambda n: {
            "naive": make_naive_solve(n),
            "custom_linear_solve": make_custom_solve(n),
            "library": make_library_solve(n),
        },
        default_steps=CG_STEPS,
    )
)


# --- Kepler's equation ---------------------------------------------------------------------

KEPLER_STEPS = 64  # Newton steps; the worst case (e -> 1, M -> 0) in float64 needs ~45

# E - sin E = E^3/6 - E^5/120 + ... = E^3 sum_j (-1)^j / (2j + 3)!  E^(2j)
_E_MINUS_SIN = [(-1) ** j / math.factorial(2 * j + 3) for j in range(10)]


def _e_minus_sin(x: Array) -> Array:
    """E - sin E without cancellation: its Maclaurin series for |E| < 1."""
    small = jnp.abs(x) < 1
    xs = jnp.where(small, x, 0)
    u = xs * xs
    p = jnp.zeros_like(u) + _E_MINUS_SIN[-1]
    for c in reversed(_E_MINUS_SIN[:-1]):
        p = p * u + c
    return jnp.where(small, xs * u * p, x - jnp.sin(x))


def _kepler_d(e_anom: Array, ecc: Array) -> Array:
    """1 - e cos E = (1 - e) + 2 e sin(E/2)^2, which does not cancel as e -> 1, E -> 0."""
    s = jnp.sin(0.5 * e_anom)
    return (1 - ecc) + 2 * ecc * (s * s)


def _residual(mean: Array, ecc: Array, e_anom: Array) -> Array:
    """E - e sin E - M as (1 - e) E + e (E - sin E) - M, accurate as e -> 1, E -> 0."""
    return (1 - ecc) * e_anom + ecc * _e_minus_sin(e_anom) - mean


def _newton_step(mean: Array, ecc: Array, e_anom: Array) -> Array:
    return e_anom - _residual(mean, ecc, e_anom) / _kepler_d(e_anom, ecc)


def _start(mean: Array, ecc: Array) -> Array:
    """min(M + e, pi) for M >= 0 (max(M - e, -pi) below) lies beyond the root on the
    side where f is convex (concave): Newton then moves monotonically onto the root.
    No abs/sign of M, so plain autodiff through the iterations stays meaningful at 0."""
    return jnp.where(mean >= 0, jnp.minimum(mean + ecc, math.pi), jnp.maximum(mean - ecc, -math.pi))


def _kepler_unrolled(mean: Array, ecc: Array, n: int) -> Array:
    return lax.fori_loop(0, n, lambda _, x: _newton_step(mean, ecc, x), _start(mean, ecc))


def _kepler_while(mean: Array, ecc: Array, n: int) -> Array:
    """Newton until the step stops changing E (at most n steps)."""

    def cond(state: tuple) -> Array:
        i, x, prev = state
        return (i < n) & (x != prev)

    def body(state: tuple) -> tuple:
        i, x, _ = state
        return i + 1, _newton_step(mean, ecc, x), x

    x0 = _start(mean, ecc)
    _, e_anom, _ = lax.while_loop(cond, body, (1, _newton_step(mean, ecc, x0), x0))
    return e_anom


def make_naive_kepler(n: int) -> Callable[[Array, Array], Array]:
    """Newton in a while_loop: forward mode works, reverse mode is refused."""
    return lambda mean, ecc: _kepler_while(mean, ecc, n)


def make_unrolled_kepler(n: int) -> Callable[[Array, Array], Array]:
    """Newton unrolled in a fori_loop: reverse mode stores all n iterates."""
    return lambda mean, ecc: _kepler_unrolled(mean, ecc, n)


def make_custom_kepler(n: int) -> Callable[[Array, Array], Array]:
    """The while_loop solve with an implicit custom_jvp: dE = (dM + sin E de) / (1 - e cos E)."""

    @jax.custom_jvp
    def kepler(mean: Array, ecc: Array) -> Array:
        return _kepler_while(mean, ecc, n)

    @kepler.defjvp
    def _kepler_jvp(primals: tuple, tangents: tuple) -> tuple:
        (mean, ecc), (t_mean, t_ecc) = primals, tangents
        e_anom = kepler(mean, ecc)
        return e_anom, (t_mean + jnp.sin(e_anom) * t_ecc) / _kepler_d(e_anom, ecc)

    return kepler


def make_root_kepler(n: int) -> Callable[[Array, Array], Array]:
    """The while_loop solve wrapped in lax.custom_root (tangent solve: divide by f'(E),
    which autodiff takes from the accurate residual)."""

    def kepler(mean: Array, ecc: Array) -> Array:
        return lax.custom_root(
            lambda x: _residual(mean, ecc, x),
            mean,
            lambda f, x0: _kepler_while(mean, ecc, n),
            lambda g, y: y / g(jnp.ones_like(y)),
        )

    return kepler


def _m_kepler(mp: Any, mean: Any, ecc: Any) -> Any:
    """Root of E - e sin E = M by mp.findroot (Illinois, on the bracket [M - 1, M + 1]),
    polished by Newton steps at raised precision (E - sin E cancels for small E)."""
    with mp.extraprec(300):
        f = lambda x: x - ecc * mp.sin(x) - mean  # noqa: E731
        root = mp.findroot(f, (mean - 1, mean + 1), solver="illinois")
        for _ in range(3):
            root = root - f(root) / (1 - ecc * mp.cos(root))
    return +root


def _m_kepler_parts(mp: Any, mean: Any, ecc: Any) -> tuple:
    with mp.extraprec(300):
        e_anom = _m_kepler(mp, mean, ecc)
        d = (1 - ecc) + 2 * ecc * mp.sin(e_anom / 2) ** 2
        return e_anom, d, mp.sin(e_anom), mp.cos(e_anom)


def _m_kepler_dm(mp: Any, mean: Any, ecc: Any) -> Any:
    _, d, _, _ = _m_kepler_parts(mp, mean, ecc)
    return 1 / d


def _m_kepler_dmm(mp: Any, mean: Any, ecc: Any) -> Any:
    _, d, s, _ = _m_kepler_parts(mp, mean, ecc)
    return -ecc * s / d**3


def _m_kepler_de(mp: Any, mean: Any, ecc: Any) -> Any:
    _, d, s, _ = _m_kepler_parts(mp, mean, ecc)
    return s / d


def _m_kepler_dee(mp: Any, mean: Any, ecc: Any) -> Any:
    _, d, s, c = _m_kepler_parts(mp, mean, ecc)
    return s * (2 * c * d - ecc * s * s) / d**3


register(
    make_case(
        name="kepler",
        formula="E with E - e sin E = M",
        args=("M", "e"),
        domain=(Interval(-math.pi, math.pi), Interval(0.0, 1.0, hi_closed=False)),
        reference=_m_kepler,
        derivatives={
            ("M", 1): _m_kepler_dm,
            ("M", 2): _m_kepler_dmm,
            ("e", 1): _m_kepler_de,
            ("e", 2): _m_kepler_dee,
        },
        variants=[
            Variant("naive", make_naive_kepler(KEPLER_STEPS), "Newton in a while_loop (no reverse mode)"),
            Variant("unrolled", make_unrolled_kepler(KEPLER_STEPS), "Newton in a fori_loop, plain autodiff through it"),
            Variant("custom_jvp", make_custom_kepler(KEPLER_STEPS), "custom_jvp: implicit dE = (dM + sin E de)/(1 - e cos E)"),
            Variant("custom_root", make_root_kepler(KEPLER_STEPS), "lax.custom_root around the while_loop Newton"),
        ],
        source="lax.custom_root / custom_jvp for implicit functions; jax-ml/jax: while_loop is not reverse-differentiable",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value and forward mode work; grad and grad2 raise "
            "(while_loop has no reverse mode), in every dtype. unrolled: reverse mode works but stores "
            "all Newton iterates (compiled gradient temp memory 0.30 MB at 16 steps, 4.8 MB at 256, "
            "for 256 points; custom_jvp 7 kB at both). dE/de = sin E / (1 - e cos E) is "
            "ill-conditioned near E = pi (sin E ~ 0 while E is rounded), so every variant loses "
            "relative accuracy there. The Newton residual is (1 - e) E + e (E - sin E) - M with a series for "
            "E - sin E, and 1 - e cos E = (1 - e) + 2 e sin^2(E/2), so e -> 1, M -> 0 keeps full "
            "relative accuracy. No JAX library function solves Kepler's equation. Steps: the maximum "
            "number of Newton iterations."
        ),
        special_points=((0.0, 0.5), (1.0, 0.5), (3.0, 0.9), (1e-6, 0.999), (math.pi, 0.99), (-2.0, 0.3), (0.5, 0.0)),
        steps=lambda n: {
            "naive": make_naive_kepler(n),
            "unrolled": make_unrolled_kepler(n),
            "custom_jvp": make_custom_kepler(n),
            "custom_root": make_root_kepler(n),
        },
        default_steps=KEPLER_STEPS,
    )
)
