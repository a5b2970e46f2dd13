"""The seed catalog: published values, analytic facts and dtype behaviour of every case.

Expected numbers come from the JAX documentation, from mpmath, or from the
mathematics, never from the variants under test.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import mpmath
import numpy as np
import pytest
from helpers import SEED

import rulelab
from rulelab.jaxrun.evaluate import is_unsupported, scalar_transform

f32 = np.float32


def fn(case: str, variant: str):
    return rulelab.get_case(case).variants[variant].fn


def mp_f32(x) -> float:
    """An mpmath number rounded to float32 (via float64: fine at the tolerances used
    here, which are whole ULPs)."""
    return float(f32(float(x)))


def ulps_f32(got, want: float) -> float:
    """|got - want| in float32 ULPs at ``want``."""
    return abs(float(got) - want) / float(np.spacing(f32(abs(want))))


# --- the catalog as data ----------------------------------------------------------------


def test_seed_cases_and_variants_are_registered():
    names = {c.name for c in rulelab.cases()}
    assert set(SEED) <= names
    for name, variants in SEED.items():
        case = rulelab.get_case(name)
        assert set(case.variants) == variants, name
        assert case.source and case.notes and case.formula, name
        assert case.special_points, name


@pytest.mark.parametrize(
    ("name", "points"),
    [
        ("softplus", [-3.0, 0.5, 20.0]),
        ("stable_sqrt", [0.25, 3.0]),
        ("x_over_1p_sqrt", [0.01, 2.0, 1000.0]),
        ("newton_sqrt", [0.5, 7.0]),
        ("sin_times_y", [(0.7, -1.5), (2.0, 3.0)]),
        ("point_fun", [(1.0, 2.0), (-0.3, 0.5)]),
    ],
)
def test_analytic_derivatives_match_numerical_differentiation(name, points):
    case = rulelab.get_case(name)
    mp = mpmath.mp
    with mpmath.workdps(40):
        for p in points:
            p = p if isinstance(p, tuple) else (p,)
            args = [mp.mpf(v) for v in p]
            for i, a in enumerate(case.args):
                for order in (1, 2):
                    f = case.derivatives[(a, order)]

                    def along(t, i=i):
                        moved = list(args)
                        moved[i] = t
                        return case.reference(mp, *moved)

                    numeric = mp.diff(along, args[i], order)
                    assert abs(f(mp, *args) - numeric) < mp.mpf(10) ** -25, (name, p, a, order)


def test_x_over_1p_sqrt_second_derivative_formula():
    # d/dx (s + 2) / (2 (s + 1)^2) with s = sqrt x is -(s + 3) / (4 s (s + 1)^3): at x = 4
    # (s = 2) that is -5 / 216.
    d2 = rulelab.get_case("x_over_1p_sqrt").derivatives[("x", 2)]
    assert abs(float(d2(mpmath.mp, mpmath.mpf(4))) + 5 / 216) < 1e-15


def test_conventions():
    mp = mpmath.mp
    sq = rulelab.get_case("stable_sqrt")
    for order in (1, 2):
        (conv,) = sq.conventions_for("x", order)
        assert conv.where(0.0) and not conv.where(1e-300)
        assert conv.value_at(mp, mp.mpf(0)) == 0
    clip = rulelab.get_case("clip_sin")
    (d1,) = clip.conventions_for("x", 1)
    (d2,) = clip.conventions_for("x", 2)
    assert d1.value_at(mp, mp.mpf(0)) == mp.mpf(0.75)  # cos 0 = 1, clipped
    assert abs(d1.value_at(mp, mp.mpf(1.2)) - mp.cos(1.2)) < 1e-15  # cos 1.2 = 0.36
    assert d1.value_at(mp, mp.mpf(3.0)) == mp.mpf(-0.75)
    assert d2.value_at(mp, mp.mpf(0.3)) == 0  # |cos 0.3| > 0.75: clip inactive
    assert abs(d2.value_at(mp, mp.mpf(0.8)) + mp.sin(0.8)) < 1e-15  # |sin 0.8| < 0.75
    assert abs(d2.value_at(mp, mp.mpf(1.2)) + mp.sin(1.2)) < 1e-15  # not clipped again


# --- published values ----------------------------------------------------------------------


def test_softplus_grad_at_100_published():
    x = f32(100.0)
    assert np.isnan(jax.grad(fn("softplus", "naive"))(x))
    for v in ("custom_vjp", "custom_jvp", "custom_jvp_defjvps", "stable", "library"):
        g = jax.grad(fn("softplus", v))(x)
        assert g.dtype == jnp.float32 and float(g) == 1.0, v


def _neighbours(limit: float, dtype) -> tuple[float, float]:
    """(largest value of ``dtype`` below ``limit``, smallest one above it)."""
    if np.dtype(dtype).itemsize == 2:
        with np.errstate(invalid="ignore"):  # the NaN bit patterns
            every = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(dtype)
            every = every.astype(np.float64)
        every = np.sort(every[np.isfinite(every)])
        return float(every[every < limit].max()), float(every[every > limit].min())
    x = np.array(limit, dtype)
    below = x if float(x) < limit else np.nextafter(x, dtype(-np.inf))
    return float(below), float(np.nextafter(below, dtype(np.inf)))


def test_softplus_overflow_thresholds_are_where_exp_overflows():
    # The smallest x of each dtype whose e^x rounds to inf, from mpmath (e^x at or past
    # max + spacing/2 rounds to inf); the naive gradient is NaN from there on.
    naive_grad = jax.grad(fn("softplus", "naive"))
    special = {p[0] for p in rulelab.get_case("softplus").special_points}
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        info = ml_dtypes.finfo(dtype)
        spacing_at_max = mpmath.mpf(2) ** (info.maxexp - 1 - info.nmant)
        limit = float(mpmath.log(mpmath.mpf(float(info.max)) + spacing_at_max / 2))
        below, first = _neighbours(limit, dtype)
        assert first in special, (dtype, first)
        assert np.isnan(naive_grad(jnp.asarray(first, dtype=dtype)))
        assert np.isfinite(naive_grad(jnp.asarray(below, dtype=dtype)))


def test_softplus_cancellation_thresholds():
    # 1 + e^x rounds to 1 (ties to even) unless e^x > eps/2 = 2^-p, i.e. x > -p ln 2
    # with p the significand bits; the naive value is 0 at or below that.
    naive = fn("softplus", "naive")
    special = {p[0] for p in rulelab.get_case("softplus").special_points}
    for dtype in (np.float32, np.float16, ml_dtypes.bfloat16):
        limit = float(-(ml_dtypes.finfo(dtype).nmant + 1) * mpmath.log(2))
        below, first = _neighbours(limit, dtype)
        assert first in special, (dtype, first)
        assert float(naive(jnp.asarray(first, dtype=dtype))) > 0.0
        assert float(naive(jnp.asarray(below, dtype=dtype))) == 0.0


def test_softplus_tails():
    mp = mpmath.mp
    stable = fn("softplus", "stable")
    with mpmath.workdps(50):
        for x in (-50.0, -20.0, 30.0, 80.0):
            want = mp_f32(mp.log1p(mp.exp(mp.mpf(x))))
            assert ulps_f32(stable(f32(x)), want) <= 2, x
        # grad2 = e^-50 / (1 + e^-50)^2 at x = 50: tiny but normal in float32.
        want = mp_f32(mp.exp(-50) / (1 + mp.exp(-50)) ** 2)
        assert ulps_f32(jax.grad(jax.grad(stable))(f32(50.0)), want) <= 4
    # The naive value loses every digit below -16.64: 1 + e^x rounds to 1.
    assert float(fn("softplus", "naive")(f32(-20.0))) == 0.0
    # The published tangent 1 - 1/(1 + e^x) cancels for negative x: 0 instead of e^-30.
    assert float(jax.grad(fn("softplus", "custom_jvp"))(f32(-30.0))) == 0.0
    assert float(jax.grad(fn("softplus", "custom_vjp"))(f32(-30.0))) > 0.0


def test_newton_sqrt_published_grads():
    x = f32(2.0)
    # jnp.sqrt's own derivatives, 1/(2 sqrt 2) and -1/(8 sqrt 2), as a second reference
    sqrt_g, sqrt_g2 = float(jax.grad(jnp.sqrt)(x)), float(jax.grad(jax.grad(jnp.sqrt))(x))
    for v in ("custom_vjp", "naive"):
        f = fn("newton_sqrt", v)
        g, g2 = jax.jit(lambda a, f=f: (jax.grad(f)(a), jax.grad(jax.grad(f))(a)))(x)
        assert g.dtype == jnp.float32 and g2.dtype == jnp.float32
        assert abs(float(g) - 0.35355338) < 1e-7, v  # published
        assert abs(float(g2) - (-0.0883883)) < 1e-6, v  # published
        assert ulps_f32(g, sqrt_g) <= 2, v
        assert ulps_f32(g2, sqrt_g2) <= 4, v


@pytest.mark.parametrize("a", [1e-30, 1e-3, 2.0, 1e30, 3e38])
def test_newton_sqrt_grads_across_binades(a):
    mp = mpmath.mp
    x = f32(a)
    with mpmath.workdps(40):
        a_mp = mp.mpf(float(x))
        value, grad = mp_f32(mp.sqrt(a_mp)), mp_f32(1 / (2 * mp.sqrt(a_mp)))
    for v in ("naive", "custom_vjp"):
        f = fn("newton_sqrt", v)
        got_value, got_grad = jax.jit(jax.value_and_grad(f))(x)
        assert ulps_f32(got_value, value) <= 1, (v, a)
        assert ulps_f32(got_grad, grad) <= 3, (v, a)


@pytest.mark.slow
def test_newton_sqrt_with_steps():
    case = rulelab.get_case("newton_sqrt")
    assert case.default_steps >= 1
    x = f32(2.0)  # reduced to r = 0.5: the start 0.75 is 6% high
    want = math.sqrt(2.0)
    one, default = case.with_steps(1), case.with_steps(case.default_steps)
    assert set(one) == {"naive", "custom_vjp"}
    grad_want = mp_f32(1 / (2 * mpmath.sqrt(2)))
    for v in ("naive", "custom_vjp"):
        assert abs(float(one[v].fn(x)) / want - 1) > 1e-3, v  # one step: 1.7e-3 off
        # The implicit gradient is off only to second order in the forward error
        # (about 4.5e-6 here, some 50 ULP); the unrolled one to first order.
        assert ulps_f32(jax.grad(one[v].fn)(x), grad_want) > 8, v
        assert ulps_f32(default[v].fn(x), mp_f32(mpmath.sqrt(2))) <= 1, v
        assert ulps_f32(jax.grad(default[v].fn)(x), grad_want) <= 2, v
    assert abs(float(jax.grad(one["naive"].fn)(x)) / grad_want - 1) > 1e-2  # 1/(2 x0)


def test_stable_sqrt():
    jvp = lambda f, x: jax.jvp(f, (f32(x),), (f32(1.0),))  # noqa: E731
    custom = fn("stable_sqrt", "custom_jvp")
    for x, tangent in ((0.0, 0.0), (4.0, 0.25)):
        y, t = jvp(custom, x)
        assert float(y) == math.sqrt(x) and float(t) == tangent
        assert float(jax.grad(custom)(f32(x))) == tangent
    assert float(jax.grad(jax.grad(custom))(f32(0.0))) == 0.0  # convention, not NaN
    assert float(jax.grad(jax.grad(custom))(f32(4.0))) == -1 / 32
    published = fn("stable_sqrt", "custom_jvp_as_published")
    assert float(published(f32(0.0))) == 1.0  # the exposed bug: sqrt(0) = 1
    assert float(jvp(published, 0.0)[1]) == 0.0
    assert float(published(f32(4.0))) == 2.0
    assert math.isinf(float(jax.grad(fn("stable_sqrt", "naive"))(f32(0.0))))


def test_x_over_1p_sqrt_grad_at_zero():
    assert np.isnan(jax.grad(fn("x_over_1p_sqrt", "naive"))(f32(0.0)))
    for v in ("custom_jvp", "custom_jvp_defjvps"):
        f = fn("x_over_1p_sqrt", v)
        assert float(jax.grad(f)(f32(0.0))) == 1.0
        assert float(jax.jvp(f, (f32(0.0),), (f32(1.0),))[1]) == 1.0
        assert float(jax.grad(jax.grad(f))(f32(0.0))) == -math.inf  # one-sided, not NaN
        # at 4: f' = 4/18, f'' = -5/216
        assert ulps_f32(jax.grad(f)(f32(4.0)), float(f32(4 / 18))) <= 1
        assert ulps_f32(jax.grad(jax.grad(f))(f32(4.0)), float(f32(-5 / 216))) <= 4


def test_clip_sin_derivatives_are_clipped():
    xs = np.array([-3.0, -2.0, -0.5, 0.0, 0.3, 0.8, 1.2, 2.0, 3.0, 5.0], dtype=np.float32)
    x64 = xs.astype(np.float64)
    cos, sin = np.cos(x64), np.sin(x64)
    custom = fn("clip_sin", "custom_vjp")
    value, grad, grad2 = (
        np.asarray(jax.jit(jax.vmap(f))(xs), dtype=np.float64)
        for f in (custom, jax.grad(custom), jax.grad(jax.grad(custom)))
    )
    np.testing.assert_allclose(value, sin, atol=1e-6)
    np.testing.assert_allclose(grad, np.clip(cos, -0.75, 0.75), atol=1e-6)
    # d/dx clip(cos x): the custom backward clips the first derivative only
    np.testing.assert_allclose(grad2, np.where(np.abs(cos) > 0.75, 0.0, -sin), atol=1e-6)
    naive_grad = jax.jit(jax.vmap(jax.grad(fn("clip_sin", "naive"))))(xs)
    np.testing.assert_allclose(np.asarray(naive_grad, dtype=np.float64), cos, atol=1e-6)
    assert np.any(np.abs(cos) > 0.75) and np.any(np.abs(cos) < 0.75)


def test_sin_times_y_published_and_analytic():
    x, y = f32(2.0), f32(3.0)
    for v in SEED["sin_times_y"]:
        f = fn("sin_times_y", v)
        assert abs(float(f(x, y)) - 2.7278922) < 1e-6, v
        assert abs(float(jax.grad(f)(x, y)) - (-1.2484405)) < 1e-6, v
        assert abs(float(jax.grad(f, 1)(x, y)) - math.sin(2.0)) < 1e-6, v
        assert abs(float(jax.grad(jax.grad(f))(x, y)) - (-math.sin(2.0) * 3.0)) < 1e-5, v
        assert float(jax.grad(jax.grad(f, 1), 1)(x, y)) == 0.0, v
        if v != "custom_vjp":
            tangent = jax.jvp(f, (x, y), (f32(0.0), f32(1.0)))[1]
            assert abs(float(tangent) - math.sin(2.0)) < 1e-6, v


def test_point_fun_published_and_analytic():
    for v in SEED["point_fun"]:
        f = fn("point_fun", v)
        # the documentation's grad(fun)(Point(1., 2.)) = Point(x=2.5403023, y=0.)
        assert abs(float(jax.grad(f)(f32(1.0), f32(2.0))) - 2.5403023) < 1e-6, v
        for x, y in ((1.0, 2.0), (-0.7, 0.4), (3.0, -1.0)):
            xx, yy = f32(x), f32(y)
            assert abs(float(f(xx, yy)) - (x * x + math.sin(x))) < 1e-5, v
            assert abs(float(jax.grad(f)(xx, yy)) - (2 * x + math.cos(x))) < 1e-5, v
            assert abs(float(jax.grad(jax.grad(f))(xx, yy)) - (2 - math.sin(x))) < 1e-5, v
            assert float(jax.grad(f, 1)(xx, yy)) == 0.0, v
            assert float(jax.grad(jax.grad(f, 1), 1)(xx, yy)) == 0.0, v


def test_point_fun_custom_rules_cover_the_whole_pytree():
    from rulelab.catalog.point_fun import Point, f_jvp, f_vjp

    pt, dpt = Point(f32(1.0), f32(2.0)), Point(f32(0.5), f32(-1.5))
    want = {"a": 2 * 1.0 * 0.5, "b": (math.cos(1.0) * 0.5, -math.sin(2.0) * -1.5)}
    _, tangent = jax.jvp(f_jvp, (pt,), (dpt,))
    assert abs(float(tangent["a"]) - want["a"]) < 1e-6
    assert abs(float(tangent["b"][0]) - want["b"][0]) < 1e-6
    assert abs(float(tangent["b"][1]) - want["b"][1]) < 1e-6
    _, pullback = jax.vjp(f_vjp, pt)
    (cot,) = pullback({"a": f32(1.0), "b": (f32(2.0), f32(3.0))})
    assert abs(float(cot.x) - (2 * 1.0 + math.cos(1.0) * 2.0)) < 1e-6
    assert abs(float(cot.y) - (-math.sin(2.0) * 3.0)) < 1e-6


# --- dtypes ---------------------------------------------------------------------------------


def _out_dtypes(dtype):
    """(case, variant, transform, arg, output dtype) for every supported combination,
    traced (not run) on length-3 inputs of ``dtype``, and the refused combinations."""
    out, refused = [], []
    for name in SEED:
        case = rulelab.get_case(name)
        xs = tuple(jax.ShapeDtypeStruct((3,), dtype) for _ in case.args)
        for vname, v in case.variants.items():
            for transform in rulelab.TRANSFORMS:
                for argnum, arg in enumerate(case.args):
                    if transform == "value" and argnum:
                        continue
                    f = jax.vmap(scalar_transform(v.fn, transform, argnum, len(case.args)))
                    try:
                        shape = jax.eval_shape(f, *xs)
                    except Exception as exc:  # noqa: BLE001
                        if is_unsupported(exc):
                            refused.append((name, vname, transform))
                            continue
                        raise
                    out.append((name, vname, transform, arg, shape.dtype))
    return out, refused


@pytest.mark.parametrize(
    ("x64", "dtype"),
    [
        (False, jnp.float32),
        (True, jnp.float32),
        (True, jnp.bfloat16),
        (True, jnp.float64),
    ],
)
@pytest.mark.slow
def test_every_variant_keeps_the_input_dtype(x64, dtype):
    with jax.enable_x64(x64):
        results, refused = _out_dtypes(dtype)
    assert len(results) > 80
    wrong = [r for r in results if r[-1] != dtype]
    assert not wrong, wrong
    # Only forward mode through custom_vjp may be refused while tracing (JAX 0.10
    # refuses some of those only when lowering, which eval_shape does not do).
    assert {(v, t) for _, v, t in refused} <= {("custom_vjp", "jvp")}


@pytest.mark.slow
def test_bfloat16_runs_end_to_end():
    # Executed, not just traced: values and derivatives come back in bfloat16.
    x = jnp.asarray([0.5, 2.0, 7.0], dtype=jnp.bfloat16)
    with jax.enable_x64(True):
        for name in ("softplus", "newton_sqrt", "x_over_1p_sqrt"):
            for v in rulelab.get_case(name).variants.values():
                g = jax.jit(jax.vmap(jax.grad(jax.grad(v.fn))))(x)
                assert g.dtype == jnp.bfloat16, (name, v.name)
                assert np.all(np.isfinite(np.asarray(g, dtype=np.float32))), (name, v.name)
