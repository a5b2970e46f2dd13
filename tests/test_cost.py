"""Tests for rulelab.jaxrun.cost: inputs, op counts, memory, compile and run time, support.

No assertion compares two timings: the machine is shared and noisy. Counts and byte
sizes are deterministic, so they are compared exactly or by growth.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import traced
from jax import lax

import rulelab
from rulelab.jaxrun import cost
from rulelab.model.case import (
    NONNEGATIVE,
    POSITIVE,
    REALS,
    CaseError,
    Interval,
    make_case,
)

STEPS = (2, 8, 32)


def newton_unrolled(n: int):
    """sqrt(a) by n Newton steps written as a Python loop (reverse mode stores each step)."""

    def f(a):
        x = a
        for _ in range(n):
            x = 0.5 * (x + a / x)
        return x

    return f


def newton_implicit(n: int):
    """sqrt(a) by a while_loop, differentiated implicitly: d sqrt(a) = 1 / (2 sqrt(a))."""

    @jax.custom_vjp
    def f(a):
        return lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, 0.5 * (c[1] + a / c[1])), (0, a))[1]

    def fwd(a):
        y = f(a)
        return y, y

    def bwd(y, g):
        return (g / (2 * y),)

    f.defvjp(fwd, bwd)
    return f


@jax.custom_jvp
def softplus_jvp(x):
    return jnp.logaddexp(x, 0.0)


softplus_jvp.defjvps(lambda t, ans, x: t * jax.nn.sigmoid(x))


@jax.custom_vjp
def softplus_vjp(x):
    return jnp.logaddexp(x, 0.0)


softplus_vjp.defvjp(lambda x: (softplus_vjp(x), x), lambda x, g: (g * jax.nn.sigmoid(x),))


def failing(x):
    raise ValueError("this variant is broken")


@pytest.fixture
def toy():
    """A small softplus-like case, registered for the test and removed after."""
    case = make_case(
        "cost_toy",
        "log(1 + exp(x))",
        ("x",),
        REALS,
        lambda mp, x: mp.log1p(mp.exp(x)),
        {"naive": lambda x: jnp.log1p(jnp.exp(x)), "custom_jvp": softplus_jvp, "custom_vjp": softplus_vjp, "broken": failing},
    )
    rulelab.register(case)
    yield case
    rulelab.unregister(case.name)


@pytest.fixture
def solver():
    """An iterative case: sqrt by Newton's method, unrolled and implicit."""
    case = make_case(
        "cost_newton",
        "sqrt(a)",
        ("a",),
        POSITIVE,
        lambda mp, a: mp.sqrt(a),
        {"naive": newton_unrolled(8), "implicit": newton_implicit(8)},
        steps=lambda n: {"naive": newton_unrolled(n), "implicit": newton_implicit(n)},
        default_steps=8,
    )
    rulelab.register(case)
    yield case
    rulelab.unregister(case.name)


# -- targets and inputs ----------------------------------------------------------------


def test_target_resolves_names_and_defaults(toy):
    t = cost.target("cost_toy", "custom_jvp", "grad", dtype=np.float32, size=16)
    assert t.case is toy and t.variant is toy.variants["custom_jvp"]
    assert (t.arg, t.argnum, t.dtype, t.size, t.backend) == ("x", 0, "float32", 16, None)
    assert "cost_toy/custom_jvp grad float32[16]" in t.label


def test_target_rejects_unknown_names(toy):
    with pytest.raises(CaseError, match="no variant 'nope'"):
        cost.target(toy, "nope")
    with pytest.raises(CaseError, match="no argument 'y'"):
        cost.target(toy, "naive", "grad", arg="y")
    with pytest.raises(ValueError, match="unknown transform"):
        cost.target(toy, "naive", "hessian")
    with pytest.raises(CaseError, match="not iterative"):
        cost.target(toy, "naive", steps=4)


def test_target_with_steps_rebuilds_the_variant(solver):
    t4 = cost.target(solver, "naive", steps=4)
    t16 = cost.target(solver, "naive", steps=16)
    assert t4.variant.fn is not t16.variant.fn
    assert cost.count_eqns(traced(t16)) > cost.count_eqns(traced(t4))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize(
    "domain",
    [REALS, POSITIVE, NONNEGATIVE, Interval(-1.0, 1.0, False, False), Interval(100.0, math.inf), Interval(-math.inf, -1e3), Interval(0.0, 1e-6)],
)
def test_sample_is_deterministic_and_inside_the_domain(domain, dtype):
    x = cost.sample(domain, 257, dtype)
    assert x.dtype == rulelab.core.floats.fmt(dtype).dtype and x.shape == (257,)
    assert np.isfinite(x.astype(np.float64)).all()
    assert np.asarray(domain.contains(x.astype(np.float64))).all()
    np.testing.assert_array_equal(x, cost.sample(domain, 257, dtype))


def test_sample_spreads_over_both_signs_and_moderate_magnitudes():
    x = cost.sample(REALS, 1000, "float32").astype(np.float64)
    assert (x < 0).sum() == 500 and (x > 0).sum() == 500
    assert np.abs(x).min() == pytest.approx(2.0**-4) and np.abs(x).max() == pytest.approx(2.0**4)
    # log-spaced: as many points in [1/16, 1) as in [1, 16]
    assert abs(int(((np.abs(x) < 1)).sum()) - int((np.abs(x) >= 1).sum())) <= 4


def test_inputs_differ_per_argument():
    case = make_case("two_args", "hypot", ("x", "y"), REALS, lambda mp, x, y: mp.hypot(x, y), {"naive": lambda x, y: jnp.hypot(x, y)})
    x, y = cost.inputs(case, 64, "float32")
    assert sorted(x) == sorted(y) and not np.array_equal(x, y)


# -- op counts -------------------------------------------------------------------------


def test_count_eqns_of_a_known_function_is_exact():
    assert cost.count_eqns(jax.make_jaxpr(lambda x: jnp.sin(x) * 2)(1.0)) == 2


def test_count_eqns_sees_through_calls_but_counts_control_flow():
    helper = jax.jit(lambda x: jnp.sin(x) * 2)
    wrapped = jax.make_jaxpr(lambda x: helper(x))(1.0)
    assert cost.count_eqns(wrapped) == 2  # the pjit is transparent
    assert cost.count_eqns(wrapped, recursive=False) == 1  # only the call itself
    looped = jax.make_jaxpr(lambda x: lax.while_loop(lambda c: c < 10.0, lambda c: jnp.sin(c) * 2, x))(1.0)
    # one while equation + 2 in its body + 1 (lt) in its condition
    assert cost.count_eqns(looped) == 4


def test_jaxpr_eqn_count_of_a_target(toy):
    # log1p(exp(x)): exactly two equations, vectorised or not
    assert cost.count_eqns(traced(cost.target(toy, "naive"))) == 2
    assert cost.count_eqns(traced(cost.target(toy, "naive", "grad2"))) > cost.count_eqns(traced(cost.target(toy, "naive", "grad")))


def test_count_hlo_ops_counts_instructions_only():
    text = """HloModule m, entry_computation_layout={(f32[4]{0})->f32[4]{0}}

%fused (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %s = f32[4]{0} sine(%p)
}

ENTRY %main (x: f32[4]) -> f32[4] {
  %x = f32[4]{0} parameter(0)
  ROOT %f = f32[4]{0} fusion(%x), kind=kLoop, calls=%fused
}
"""
    assert cost.count_hlo_ops(text) == 4


def test_hlo_op_count_grows_with_unrolled_loop_length(solver):
    counts = [cost.hlo_op_count(cost.target(solver, "naive", steps=n, size=64)) for n in STEPS]
    assert counts[0] < counts[1] < counts[2]
    # the while loop's body is compiled once, whatever the trip count
    flat = {cost.hlo_op_count(cost.target(solver, "implicit", steps=n, size=64)) for n in STEPS}
    assert len(flat) == 1


# -- memory ----------------------------------------------------------------------------

W = jnp.full((32, 32), 0.01) + 0.5 * jnp.eye(32)


def _chain(n: int):
    def f(x):
        for _ in range(n):
            x = jnp.tanh(W @ x)
        return jnp.sum(x)

    return f


def _loop(n: int):
    def f(x):
        return lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, jnp.tanh(W @ c[1])), (0, x))[1]

    return f


def test_temp_bytes_grow_with_unrolled_reverse_mode_not_with_a_while_loop():
    x = jax.ShapeDtypeStruct((32, 128), jnp.float32)
    unrolled = [cost.memory(jax.jit(jax.grad(_chain(n))).lower(x).compile()) for n in (2, 4, 8)]
    looped = [cost.memory(jax.jit(_loop(n)).lower(x).compile()) for n in (2, 4, 8)]
    if any(m is None for m in unrolled + looped):
        pytest.skip("this backend reports no memory analysis")
    temps = [m.temp_bytes for m in unrolled]
    assert temps[0] < temps[1] < temps[2]
    assert len({m.temp_bytes for m in looped}) == 1
    assert all(m.argument_bytes == 32 * 128 * 4 for m in unrolled)


def test_memory_of_a_target_reports_argument_and_output_bytes(toy):
    m = cost.memory(cost.target(toy, "naive", size=1000))
    assert m is not None
    assert m.argument_bytes == 4000 and m.output_bytes == 4000 and m.temp_bytes >= 0


def test_memory_is_none_where_the_backend_reports_none():
    class NoStats:
        def memory_analysis(self):
            return None

    class Refuses:
        def memory_analysis(self):
            raise NotImplementedError

    assert cost.memory(NoStats()) is None and cost.memory(Refuses()) is None


def test_residual_bytes_grow_with_unrolled_steps_and_stay_flat_when_implicit(solver):
    naive = [cost.residual_bytes(cost.target(solver, "naive", steps=n, size=100)) for n in STEPS]
    implicit = [cost.residual_bytes(cost.target(solver, "implicit", steps=n, size=100)) for n in STEPS]
    assert naive[0] < naive[1] < naive[2]
    assert naive[2] >= 32 * 100 * 4  # at least one float32 array per step
    assert implicit == [100 * 4] * 3  # the solution only


# -- compile time ----------------------------------------------------------------------


def test_compile_ms_is_positive_and_a_fresh_trace_recompiles(toy):
    compiles = []

    def listener(name, duration, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        t = cost.target(toy, "custom_jvp", "grad", size=32)
        ms = [cost.compile_ms(t) for _ in range(3)]
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert len(compiles) == 3  # one real XLA compilation per call, no cache hit
    assert all(math.isfinite(m) and m > 0 for m in ms)


def test_compiled_runs_and_matches_the_variant(toy):
    t = cost.target(toy, "custom_vjp", "grad", size=8)
    x = cost.device_inputs(t)
    out = np.asarray(cost.compiled(t)(*x))
    np.testing.assert_allclose(out, jax.nn.sigmoid(np.asarray(x[0])), rtol=1e-6)


# -- steady-state time -----------------------------------------------------------------


def test_time_call_returns_positive_finite_seconds():
    x = jnp.ones(256)
    timing = cost.time_call(jax.jit(jnp.sin), x, repeat=3, min_time=0.001)
    assert timing.repeat == 3 and timing.number >= 1
    assert 0 < timing.best <= timing.median and math.isfinite(timing.median)


def test_time_per_call_and_measure(toy):
    t = cost.target(toy, "naive", "grad", size=64)
    timing = cost.time_per_call(t, repeat=2, min_time=0.001)
    assert 0 < timing.best < 1.0
    c = cost.measure(t, repeat=2, min_time=0.001)
    assert c.target is t and c.compile_ms > 0 and c.jaxpr_eqns > 0 and c.hlo_ops > 0
    assert c.timing is not None and c.timing.best > 0
    assert cost.measure(t, timing=False).timing is None


def test_absent_backend_is_a_runtime_error(toy):
    present = {d.platform for d in jax.devices()}
    absent = next(b for b in ("tpu", "gpu", "cpu") if b not in present) if present != {"cpu", "gpu", "tpu"} else None
    if absent is None:
        pytest.skip("every backend is present")
    with pytest.raises(RuntimeError):
        cost.device_inputs(cost.target(toy, "naive", backend=absent))


# -- support ---------------------------------------------------------------------------


def test_support_says_unsupported_for_custom_vjp_under_jvp(toy):
    s = cost.support(toy, "custom_vjp", "jvp")
    assert s.status == "unsupported" and not s.ok
    assert "custom_vjp" in s.message and "forward-mode" in s.message


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -0.5, 0.5),))


def test_support_catches_a_refusal_that_only_lowering_raises():
    # jvp of sin(clip_gradient(x)) traces (the custom_vjp's tangent is a constant) and
    # fails only when lowered
    case = make_case("cost_clip", "sin", ("x",), REALS, lambda mp, x: mp.sin(x), {"custom_vjp": lambda x: jnp.sin(clip_gradient(x))})
    s = cost.support(case, "custom_vjp", "jvp")
    assert s.status == "unsupported" and "forward-mode" in s.message
    assert cost.support(case, "custom_vjp", "grad").ok


def test_support_ok_and_error(toy):
    assert cost.support(toy, "custom_vjp", "grad").ok
    assert cost.support("cost_toy", "custom_jvp", "jvp").ok
    assert cost.support(toy, "naive", "grad2", dtype="bfloat16").ok
    broken = cost.support(toy, "broken", "value")
    assert broken.status == "error" and "this variant is broken" in broken.message


def test_support_says_unsupported_for_reverse_mode_through_while_loop():
    case = make_case("cost_while", "sqrt", ("a",), POSITIVE, lambda mp, a: mp.sqrt(a), {"while": lambda a: lax.while_loop(lambda c: c[0] < 4, lambda c: (c[0] + 1, 0.5 * (c[1] + a / c[1])), (0, a))[1]})
    assert cost.support(case, "while", "jvp").ok
    s = cost.support(case, "while", "grad")
    assert s.status == "unsupported" and "while_loop" in s.message


def test_build_gives_the_jaxpr_executable_and_time_of_one_compilation(toy):
    t = cost.target(toy, "naive", "grad", size=16)
    b = cost.build(t)
    assert cost.count_eqns(b.jaxpr) == cost.count_eqns(traced(t))
    assert b.compile_ms > 0 and cost.hlo_op_count(b.executable) > 0
    x = cost.device_inputs(t)
    np.testing.assert_allclose(np.asarray(b.executable(*x)), jax.nn.sigmoid(np.asarray(x[0])), rtol=1e-5)


def test_sweeps_study_and_benchmarks_measure_one_program():
    """cost.jitted (study timings, asv) and evaluate (sweeps) build the same program: the
    same jaxpr, and bit-identical results on the same inputs."""
    import jax

    from rulelab.jaxrun import cost
    from rulelab.jaxrun.evaluate import evaluate, vectorised

    t = cost.target("softplus", "custom_jvp", "grad2", dtype="float32", size=64)
    xs = cost.device_inputs(t)
    via_cost = np.asarray(cost.jitted(t)(*xs))
    via_sweep = evaluate(t.case, t.variant, "grad2", t.case.args[t.argnum], "float32", tuple(np.asarray(x) for x in xs))
    assert via_sweep.status == "ok" and np.array_equal(via_cost, via_sweep.values, equal_nan=True)
    built = vectorised(t.variant.fn, "grad2", t.argnum, len(t.case.args), name="softplus_custom_jvp_grad2")
    assert str(jax.make_jaxpr(cost.jitted(t))(*xs)) == str(jax.make_jaxpr(built)(*xs))
