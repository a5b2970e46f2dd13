"""One compiled program per case x dtype (``evaluate_many``) gives the same
results, bit for bit, as one program per transform (``evaluate``), and isolates the
transforms that fail."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SEED

import rulelab
from rulelab.jaxrun.evaluate import evaluate, evaluate_many
from rulelab.model.case import REALS, Variant, make_case
from rulelab.model.inputs import SweepSpec, make_sweep


def transforms_of(case):
    return [("value", None)] + [(t, a) for t in ("grad", "jvp", "grad2") for a in case.args]


def jobs_of(case, variants=None):
    return [(v, t, a) for v in variants or case.variants for t, a in transforms_of(case)]


def same(a, b):
    assert (a.status, a.message, a.notes) == (b.status, b.message, b.notes)
    if a.status == "ok":
        assert a.values.dtype == b.values.dtype
        assert a.values.tobytes() == b.values.tobytes()


@pytest.mark.parametrize("name, dtype", [(n, d) for n in sorted(SEED) for d in ("float32", "float16", "bfloat16")] + [("lbeta", "float32")])
@pytest.mark.slow
def test_fused_program_equals_separate_programs_bit_for_bit(name, dtype):
    """Every variant of the seed cases in every transform and argument, on a sweep that
    visits every binade, its specials and subnormals; and lbeta, whose grad2 changes in
    most points when XLA compiles it in one program with the value."""
    case = rulelab.get_case(name)
    with np.errstate(over="ignore"):
        sw = make_sweep(case, dtype, SweepSpec(exhaustive16=False, per_binade=2, grid_per_binade=1, grid_stride=16), seed=0)
    jobs = jobs_of(case)
    for job, got in zip(jobs, evaluate_many(case, jobs, dtype, sw.points), strict=True):
        same(got, evaluate(case, *job, dtype, sw.points))


@jax.custom_vjp
def sin_vjp(x):
    return jnp.sin(x)


sin_vjp.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))


@jax.custom_jvp
def sin_bad_jvp(x):
    return jnp.sin(x)


@sin_bad_jvp.defjvp
def _bad(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.sin(x), (t, t)  # a pair where one tangent belongs: JAX refuses it


CASE = make_case("fused_sin", "sin x", ("x",), REALS, lambda mp, x: mp.sin(x),
                 [Variant("custom_vjp", sin_vjp), Variant("bad_jvp", sin_bad_jvp)])
XS = (np.array([0.0, 0.5, 1.0, 2.0], np.float32),)


def test_a_transform_jax_refuses_is_isolated_and_the_rest_still_computed():
    out = dict(zip(["value", "grad", "jvp", "grad2"], evaluate_many(CASE, jobs_of(CASE, ["custom_vjp"]), "float32", XS)))
    assert out["jvp"].status == "unsupported"
    assert "custom_vjp" in out["jvp"].message and "'fused_sin'" in out["jvp"].message
    np.testing.assert_allclose(out["value"].values, np.sin(XS[0]), rtol=1e-6)
    np.testing.assert_allclose(out["grad"].values, np.cos(XS[0]), rtol=1e-6)
    np.testing.assert_allclose(out["grad2"].values, -np.sin(XS[0]), rtol=1e-6, atol=1e-7)


def test_a_broken_rule_fails_only_the_transforms_that_use_it():
    jobs = jobs_of(CASE)
    out = {(v, t): o for (v, t, _), o in zip(jobs, evaluate_many(CASE, jobs, "float32", XS))}
    assert out[("custom_vjp", "jvp")].status == "unsupported"
    assert out[("custom_vjp", "grad2")].status == "ok"
    out = {t: o for (v, t), o in out.items() if v == "bad_jvp"}
    np.testing.assert_allclose(out["value"].values, np.sin(XS[0]), rtol=1e-6)
    for t in ("grad", "jvp", "grad2"):
        assert out[t].status == "error", t
        assert f"transform {t!r}" in out[t].message and "'bad_jvp'" in out[t].message
