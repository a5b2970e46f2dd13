"""JAX's accurate mode and the pitfalls reported since the first catalog: every claim in
the notes of tanh, expm1, elu and entr, and of sigmoid's library_highest variant.

Expected values come from mpmath here (150 bits), independently of the case modules,
rounded once to the dtype; distances are :func:`rulelab.core.floats.ulp_distance`.
The thresholds are those the notes state, measured with JAX 0.10.2 on CPU.
"""

from __future__ import annotations

import math

import jax
import mpmath
import numpy as np
import pytest
from helpers import round_mpf

import rulelab
from rulelab.catalog import _highest
from rulelab.core.floats import fmt, ulp_distance
from rulelab.jaxrun.backend import x64

ULP_TOL = 4
DTYPES = ("float32", "float16", "bfloat16")
needs_highest = pytest.mark.skipif(_highest.highest("tanh") is None, reason="this JAX's lax has no accuracy=")


def at(case: str, variant: str, transform: str, dtype: str, x: float) -> float:
    """The variant's value (transform "value"), grad or grad2 at x in dtype, as float64."""
    fn = rulelab.get_case(case).variants[variant].fn
    for _ in range({"value": 0, "grad": 1, "grad2": 2}[transform]):
        fn = jax.grad(fn)
    return float(np.asarray(jax.jit(fn)(np.asarray(x, dtype=np.float64).astype(fmt(dtype).dtype))).astype(np.float64))


def exact(f, dtype: str, x: float) -> float:
    """mpmath's f at the dtype-rounded x, rounded once to the dtype."""
    with mpmath.workprec(150):
        xr = mpmath.mpf(float(np.float64(x).astype(fmt(dtype).dtype)))
        return round_mpf(f(xr), dtype)


def ulps(got: float, want: float, dtype: str) -> int:
    f = fmt(dtype).dtype
    return int(ulp_distance(np.array([got]).astype(f), np.array([want]).astype(f), dtype)[0])


def sech2(x):
    return mpmath.sech(x) ** 2


# --- tanh ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "x"), [("float32", 7.9988117), ("float16", 4.5078125), ("bfloat16", 3.46875), ("float32", -7.9988117)])
def test_the_library_tanh_derivative_is_zero_where_tanh_rounds_to_one(dtype, x):
    true = exact(sech2, dtype, x)
    assert true > fmt(dtype).smallest_normal  # the true derivative is a normal number there
    assert at("tanh", "library", "grad", dtype, x) == 0.0
    assert ulps(at("tanh", "custom_jvp", "grad", dtype, x), true, dtype) <= ULP_TOL


@needs_highest
@pytest.mark.parametrize(("x", "published"), [(10.0, 8.244615e-09), (20.0, 1.6993417e-17)])
def test_tanh_at_highest_accuracy_has_the_derivative_the_default_rule_loses(x, published):
    true = exact(sech2, "float32", x)
    assert at("tanh", "library", "grad", "float32", x) == 0.0
    got = at("tanh", "library_highest", "grad", "float32", x)
    assert ulps(got, true, "float32") <= ULP_TOL and got == pytest.approx(published, rel=1e-6)


@needs_highest
@pytest.mark.parametrize(("dtype", "x"), [("float32", 43.668274), ("bfloat16", 43.75)])
def test_tanh_at_highest_accuracy_flushes_its_derivative_while_it_is_still_normal(dtype, x):
    true = exact(sech2, dtype, x)
    assert true >= fmt(dtype).smallest_normal
    assert at("tanh", "library_highest", "grad", dtype, x) == 0.0
    assert ulps(at("tanh", "custom_jvp", "grad", dtype, x), true, dtype) <= ULP_TOL
    grad2 = exact(lambda v: -2 * mpmath.tanh(v) * sech2(v), dtype, x)
    assert ulps(at("tanh", "custom_jvp", "grad2", dtype, x), grad2, dtype) <= 2 * ULP_TOL


@pytest.mark.parametrize(("dtype", "x"), [("float32", 44.36142), ("float16", 5.546875), ("bfloat16", 44.5)])
def test_naive_tanh_is_nan_once_e_to_the_2x_overflows(dtype, x):
    assert math.isnan(at("tanh", "naive", "value", dtype, x)) and math.isnan(at("tanh", "naive", "grad", dtype, x))
    assert at("tanh", "custom_jvp", "value", dtype, x) == exact(mpmath.tanh, dtype, x)


# --- expm1 and elu ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["expm1", "elu"])
@pytest.mark.parametrize(("dtype", "x"), [("float32", -17.32868), ("float16", -8.3203125), ("bfloat16", -6.25), ("float32", -20.0)])
def test_the_library_expm1_derivative_is_zero_where_expm1_rounds_to_minus_one(case, dtype, x):
    true = exact(mpmath.exp, dtype, x)
    assert true > fmt(dtype).smallest_normal
    assert at(case, "library", "grad", dtype, x) == 0.0
    assert ulps(at(case, "custom_jvp", "grad", dtype, x), true, dtype) <= ULP_TOL
    if _highest.highest("expm1") is not None:
        assert ulps(at(case, "library_highest", "grad", dtype, x), true, dtype) <= ULP_TOL


def test_expm1_at_highest_accuracy_gives_the_published_gradient_at_minus_20():
    if _highest.highest("expm1") is None:
        pytest.skip("this JAX's lax has no accuracy=")
    assert at("expm1", "library_highest", "grad", "float32", -20.0) == pytest.approx(2.0611537e-09, rel=1e-7)


def test_naive_expm1_cancels_near_zero():
    assert ulps(at("expm1", "naive", "value", "float32", 1e-4), exact(mpmath.expm1, "float32", 1e-4), "float32") > 1024
    assert ulps(at("expm1", "custom_jvp", "value", "float32", 1e-4), exact(mpmath.expm1, "float32", 1e-4), "float32") <= ULP_TOL


@pytest.mark.parametrize(("dtype", "x"), [("float32", 88.72284), ("float16", 11.09375), ("bfloat16", 89.0)])
def test_naive_elu_gradient_is_nan_where_the_unselected_exp_overflows(dtype, x):
    assert at("elu", "naive", "value", dtype, x) == float(np.float64(x).astype(fmt(dtype).dtype))
    assert math.isnan(at("elu", "naive", "grad", dtype, x))
    assert at("elu", "custom_jvp", "grad", dtype, x) == 1.0 and at("elu", "library", "grad", dtype, x) == 1.0


def test_elus_second_derivative_at_zero_is_the_left_branchs():
    for variant in rulelab.get_case("elu").variants:
        if variant != "naive":
            assert at("elu", variant, "grad2", "float32", 0.0) == 1.0, variant


# --- entr ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_entr_at_zero(dtype):
    for transform in ("value", "grad", "grad2"):
        assert math.isnan(at("entr", "naive", transform, dtype, 0.0)), transform  # 0 * log 0
    for variant in ("library", "custom_jvp"):
        assert at("entr", variant, "value", dtype, 0.0) == 0.0
        assert at("entr", variant, "grad", dtype, 0.0) == math.inf  # -log(x) - 1 as x -> 0+
        assert at("entr", variant, "grad2", dtype, 0.0) == -math.inf  # -1 / x as x -> 0+
        assert at("entr", variant, "grad2", dtype, -0.0) == math.inf  # -1 / -0


def test_every_entr_variant_loses_its_relative_accuracy_where_the_derivative_crosses_zero():
    x = float(np.float32(1 / math.e))
    true = exact(lambda v: -mpmath.log(v) - 1, "float32", x)
    assert true != 0
    for variant in ("library", "custom_jvp"):
        assert ulps(at("entr", variant, "grad", "float32", x), true, "float32") > 1024, variant


# --- sigmoid ---------------------------------------------------------------------------------


@needs_highest
def test_sigmoid_at_highest_accuracy_keeps_the_derivative_the_default_rule_loses():
    true = exact(lambda v: mpmath.exp(-v) / (1 + mpmath.exp(-v)) ** 2, "float32", 20.0)
    assert at("sigmoid", "library", "grad", "float32", 20.0) == 0.0
    got = at("sigmoid", "library_highest", "grad", "float32", 20.0)
    assert ulps(got, true, "float32") <= ULP_TOL and got == pytest.approx(2.0611537e-09, rel=1e-7)


@needs_highest
def test_sigmoid_in_float64_at_40_as_reported():
    with x64(True):
        true = exact(lambda v: mpmath.exp(-v) / (1 + mpmath.exp(-v)) ** 2, "float64", 40.0)
        assert at("sigmoid", "library", "grad", "float64", 40.0) == 0.0
        got = at("sigmoid", "library_highest", "grad", "float64", 40.0)
    assert ulps(got, true, "float64") <= ULP_TOL and got == pytest.approx(4.2483543e-18, rel=1e-7)


def test_the_new_cases_cite_their_reports():
    for name in ("tanh", "expm1", "elu", "entr", "i0", "i0e", "sigmoid"):
        case = rulelab.get_case(name)
        assert case.source and case.notes, name
    for name in ("expm1", "elu", "entr", "i0", "i0e", "eigh_max"):
        assert "jax-ml/jax#" in rulelab.get_case(name).source, name
    from rulelab.report.pages import jax_reports  # the case page links each report

    links = dict(jax_reports(rulelab.get_case("elu").source))
    assert {"39795", "39796", "40820"} <= set(links) and links["39796"] == "https://github.com/jax-ml/jax/issues/39796"


# --- i0 and i0e --------------------------------------------------------------------------------


def i1(x):
    return mpmath.besseli(1, x)


def test_the_library_i0_derivative_is_wrong_at_and_near_zero():
    assert at("i0", "library", "grad", "float32", 0.0) == pytest.approx(1.0, rel=1e-6)  # I1(0) = 0
    assert at("i0", "library", "grad", "float32", 1e-8) == 0.0 and exact(i1, "float32", 1e-8) > 4e-9
    assert ulps(at("i0", "library", "grad", "float32", 1e-4), exact(i1, "float32", 1e-4), "float32") > 1024
    assert at("i0", "library", "grad2", "float32", 0.0) == pytest.approx(1.5, rel=1e-6)  # I0''(0) = 1/2
    for x in (0.0, 1e-8, 1e-4):
        assert ulps(at("i0", "custom_jvp", "grad", "float32", x), exact(i1, "float32", x), "float32") <= ULP_TOL
    assert at("i0", "custom_jvp", "grad2", "float32", 0.0) == 0.5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("x", [0.01, 0.05, 0.1])
def test_the_library_i0_derivative_is_off_in_16_bits_below_the_stated_bound(dtype, x):
    assert ulps(at("i0", "library", "grad", dtype, x), exact(i1, dtype, x), dtype) > ULP_TOL


@pytest.mark.parametrize(("dtype", "x"), [("float32", 88.725235), ("float16", 17.34375), ("bfloat16", 89.0)])
def test_naive_i0e_is_nan_once_i0_overflows(dtype, x):
    assert math.isnan(at("i0e", "naive", "value", dtype, x))
    true = exact(lambda v: mpmath.exp(-v) * mpmath.besseli(0, v), dtype, x)
    assert ulps(at("i0e", "library", "value", dtype, x), true, dtype) <= ULP_TOL


def test_the_library_i0e_derivative_at_the_kink_and_for_large_x():
    assert at("i0e", "library", "grad", "float32", 0.0) == 0.0 and at("i0e", "library", "grad2", "float32", 0.0) == 0.5
    with mpmath.workprec(150):  # the one-sided second derivatives at 0 are both 3/2
        h = mpmath.mpf(2) ** -60
        for side in (h, -h):
            d2 = mpmath.exp(-abs(side)) * (2 * mpmath.besseli(0, side) - 2 * mpmath.sign(side) * i1(side) - i1(side) / side)
            assert abs(d2 - 1.5) < 1e-12
    x = 32180922.0
    true = exact(lambda v: mpmath.exp(-v) * (i1(v) - mpmath.besseli(0, v)), "float32", x)
    got = at("i0e", "library", "grad", "float32", x)
    assert true < 0 < got  # i1e(x) - i0e(x) cancels to the wrong sign


def test_the_library_erfcx_is_zero_on_a_float64_band_near_26_6():
    erfcx = lambda v: mpmath.exp(v * v) * mpmath.erfc(v)  # noqa: E731
    with x64(True):
        for x in (26.543258454250985, 26.6, 26.641747557046326):
            assert at("erfcx", "library", "value", "float64", x) == 0.0 and exact(erfcx, "float64", x) > 0.02
        assert at("erfcx", "library", "grad", "float64", 26.6) == pytest.approx(-2 / math.sqrt(math.pi), rel=1e-12)
        assert at("erfcx", "library", "value", "float64", 26.5) > 0 and at("erfcx", "library", "value", "float64", 26.7) > 0
    assert exact(lambda v: 2 * v * erfcx(v) - 2 / mpmath.sqrt(mpmath.pi), "float64", 26.6) == pytest.approx(-7.957e-04, rel=1e-3)


def test_a_lax_function_without_accuracy_gives_no_variant_and_says_so():
    # lax.add takes no accuracy=: a case built on it would get no library_highest variant
    assert _highest.highest("add") is None and _highest.variants("add", lambda f: f, "") == []
    assert "library_highest is absent" in _highest.note("add")
    if _highest.highest("tanh") is not None:
        assert _highest.note("tanh") == "" and [v.name for v in _highest.variants("tanh", lambda f: f, "")] == ["library_highest"]


# --- eigh_max ----------------------------------------------------------------------------------


def eig_grads(variant: str, dtype: str, p: tuple) -> list[float]:
    fn = rulelab.get_case("eigh_max").variants[variant].fn
    args = [np.float64(v).astype(fmt(dtype).dtype) for v in p]
    return [float(g) for g in jax.grad(fn, argnums=(0, 1, 2))(*args)]


def test_eigh_near_a_degenerate_pair_gives_one_eigenvalues_gradient():
    a, b, c = 1.0, 1e-20, 1.0
    with mpmath.workprec(150):  # d = 0, so r = |b|: (1/2, sign b, 1/2)
        d, r = mpmath.mpf(0), abs(mpmath.mpf(float(np.float32(b))))
        true = [float((1 + d / r) / 2), float(mpmath.mpf(float(np.float32(b))) / r), float((1 - d / r) / 2)]
    assert true == [0.5, 1.0, 0.5]
    for variant in ("naive", "library"):
        assert eig_grads(variant, "float32", (a, b, c)) == [0.0, 0.0, 1.0], variant
        assert eig_grads(variant, "float32", (1.0, 0.0, 1.0)) == [0.0, 0.0, 1.0], variant  # the convention is the mean
    assert eig_grads("custom_jvp", "float32", (a, b, c)) == true
    assert eig_grads("custom_jvp", "float32", (1.0, 0.0, 1.0)) == [0.5, 0.0, 0.5]


def test_eigh_max_custom_value_where_m_plus_r_cancels():
    a, b, c = 0.0, 1e-10, -2.0
    with mpmath.workprec(200):
        x = [mpmath.mpf(float(np.float32(v))) for v in (a, b, c)]
        lam = (x[0] + x[2]) / 2 + mpmath.hypot((x[0] - x[2]) / 2, x[1])
    got = at_args("eigh_max", "custom_jvp", "float32", (a, b, c))
    assert ulps(got, round_mpf(lam, "float32"), "float32") <= ULP_TOL


def at_args(case: str, variant: str, dtype: str, p: tuple) -> float:
    fn = rulelab.get_case(case).variants[variant].fn
    return float(np.asarray(fn(*[np.float64(v).astype(fmt(dtype).dtype) for v in p])).astype(np.float64))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_eigh_refuses_16_bit_matrices_on_cpu(dtype):
    from rulelab.jaxrun.evaluate import evaluate

    pts = tuple(np.array([v], fmt(dtype).dtype) for v in (2.0, 1.0, 0.0))
    out = evaluate(rulelab.get_case("eigh_max"), "library", "value", None, dtype, pts)
    assert out.status == "error" and "Unsupported dtype" in out.message
    assert evaluate(rulelab.get_case("eigh_max"), "custom_jvp", "value", None, dtype, pts).status == "ok"


def test_the_remaining_claims_of_the_notes():
    # elu: the naive value loses small negative x to e^x - 1, as naive expm1 does
    x = -1e-4
    assert ulps(at("elu", "naive", "value", "float32", x), exact(mpmath.expm1, "float32", x), "float32") > 1024
    # entr: the naive variant loses near 1/e too
    e = float(np.float32(1 / math.e))
    assert ulps(at("entr", "naive", "grad", "float32", e), exact(lambda v: -mpmath.log(v) - 1, "float32", e), "float32") > 1024
    # i0: the custom rule is jax.scipy.special.i1 itself, 5 ulp from I1 at 7.93 (float32)
    import jax.scipy.special as jsp

    got = at("i0", "custom_jvp", "grad", "float32", 7.93)
    assert got == float(jsp.i1(np.float32(7.93)))
    assert ulps(got, exact(i1, "float32", 7.93), "float32") == 5
