"""Evaluation: transforms, unsupported vs error, dtype discipline, backend facts."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from rulelab.jaxrun.backend import backend_facts
from rulelab.jaxrun.evaluate import evaluate
from rulelab.model.case import REALS, Variant, make_case


@jax.custom_vjp
def sin_vjp(x):
    return jnp.sin(x)


sin_vjp.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (g * jnp.cos(x),))


def boom(x):
    raise RuntimeError("deliberate failure in user code")


def pair(x):
    return (x, x)


CASE = make_case("eval_sin", "sin x", ("x",), REALS, lambda mp, x: mp.sin(x),
                 [Variant("naive", jnp.sin), Variant("custom_vjp", sin_vjp), Variant("raises", boom), Variant("pair", pair)])
XS = (np.array([0.0, 0.5, 1.0, 2.0], np.float32),)


@pytest.mark.parametrize("transform, expect", [
    ("value", np.sin), ("grad", np.cos), ("jvp", np.cos), ("grad2", lambda x: -np.sin(x))])
def test_transforms_compute_the_derivatives(transform, expect):
    out = evaluate(CASE, "naive", transform, "x", "float32", XS)
    assert out.status == "ok" and out.values.dtype == np.float32
    np.testing.assert_allclose(out.values, expect(XS[0].astype(np.float64)), rtol=2e-7, atol=1e-7)


def test_jvp_of_custom_vjp_is_unsupported_with_jax_message():
    out = evaluate(CASE, "custom_vjp", "jvp", "x", "float32", XS)
    assert out.status == "unsupported"
    assert "can't apply forward-mode autodiff (jvp) to a custom_vjp function" in out.message
    assert "'eval_sin'" in out.message and "'custom_vjp'" in out.message
    # reverse mode of the same variant works, and so does reverse over reverse
    assert evaluate(CASE, "custom_vjp", "grad", "x", "float32", XS).status == "ok"
    assert evaluate(CASE, "custom_vjp", "grad2", "x", "float32", XS).status == "ok"


def test_raising_variant_is_an_error_naming_where():
    out = evaluate(CASE, "raises", "grad", "x", "bfloat16", XS)
    assert out.status == "error"
    for part in ("'eval_sin'", "'raises'", "'grad'", "bfloat16", "deliberate failure"):
        assert part in out.message


def test_wrong_structure_is_an_error():
    out = evaluate(CASE, "pair", "value", "x", "float32", XS)
    assert out.status == "error" and "expected a scalar" in out.message


def test_bfloat16_stays_bfloat16():
    out = evaluate(CASE, "naive", "grad", "x", "bfloat16", XS)
    assert out.values.dtype == ml_dtypes.bfloat16


def test_float64_without_x64_is_an_error_not_a_silent_downcast():
    if jax.config.jax_enable_x64:
        pytest.skip("x64 already on in this process")
    out = evaluate(CASE, "naive", "value", "x", "float64", XS)
    assert out.status == "error" and "jax_enable_x64" in out.message


def test_unknown_backend_is_an_error():
    out = evaluate(CASE, "naive", "value", "x", "float32", XS, backend="tpu")
    assert out.status == "error" and "backend 'tpu'" in out.message


def test_cpu_flushes_float32_subnormals():
    """XLA on CPU flushes float32 subnormals to zero (a published XLA CPU behaviour); the
    probe must see it even though the input is a run-time value."""
    facts = backend_facts("cpu")
    assert facts["backend"] == "cpu" and facts["flushes_subnormals"]["float32"] is True
    assert facts["jax"] == jax.__version__


X64_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    if sys.argv[1] == "on":
        jax.config.update("jax_enable_x64", True)
    import rulelab
    from rulelab.jaxrun.evaluate import evaluate
    from rulelab.model.inputs import make_sweep, SweepSpec
    out = {}
    for case in rulelab.cases():
        for dtype in ("float32", "bfloat16"):
            sw = make_sweep(case, dtype, SweepSpec(exhaustive16=False, per_binade=1, grid_stride=32), seed=0)
            for v in case.variants:
                for t in ("value", "grad2"):
                    o = evaluate(case, v, t, case.args[0], dtype, sw.points)
                    if o.status == "ok":
                        out[f"{case.name}/{v}/{t}/{dtype}"] = (o.values.tobytes().hex(), str(o.values.dtype), o.notes)
    import json; print(json.dumps(out))
""")


@pytest.mark.slow
def test_enabling_x64_changes_nothing_in_narrower_dtypes():
    """The same sweep evaluated with jax_enable_x64 off and on is bit-identical in float32
    and bfloat16, and no variant silently returns a wider dtype."""
    import json

    runs = {}
    for mode in ("off", "on"):
        res = subprocess.run([sys.executable, "-c", X64_SCRIPT, mode], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        runs[mode] = json.loads(res.stdout.strip().splitlines()[-1])
    assert runs["off"].keys() == runs["on"].keys() and len(runs["off"]) > 20
    differ = [k for k in runs["off"] if runs["off"][k][0] != runs["on"][k][0]]
    assert not differ, differ[:10]
    widened = [k for k, v in runs["on"].items() if v[2]]
    assert not widened, widened[:10]
