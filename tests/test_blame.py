"""Blame: the operation and source line that lose the digits, with known answers. Each
expected exact value comes from mpmath or the math itself; each blamed line is the line
of the source that does what the issue's analysis says."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import mpmath
import numpy as np
import pytest

import rulelab
from rulelab.jaxrun.evaluate import evaluate, scalar_transform
from rulelab.scoring import blame as B
from rulelab.scoring import exact

ROOT = Path(__file__).resolve().parents[1]


def f32(x: float) -> float:
    return float(np.float32(x))


def test_the_cancelling_subtraction_of_the_softplus_rule_is_blamed():
    case = rulelab.get_case("softplus")
    loc = B.localize(case, "custom_jvp", "grad", "x", "float32", (-20.0,))
    b = loc.blamed
    assert loc.computed == 0.0 and loc.exact == f32(1 / (1 + mpmath.exp(20)))  # softplus' = sigmoid
    assert b.primitive == "sub" and b.label == "cancellation" and b.local_ulp > 1e8
    assert b.source.file.endswith("catalog/softplus.py") and "1.0 - 1.0 / (1.0 + jnp.exp(x))" in b.source.text and not b.source.jax
    assert loc.summary().startswith("blame: sub at ") and loc.summary().endswith("cancellation")


def test_the_overflowing_exp_of_naive_softplus_is_blamed_before_the_nan_it_causes():
    case = rulelab.get_case("softplus")
    loc = B.localize(case, "naive", "grad", "x", "float32", (100.0,))
    b = loc.blamed
    assert math.isnan(loc.computed) and loc.exact == 1.0  # sigmoid(100) rounds to 1 in float32
    assert b.primitive == "exp" and b.label == "overflow" and "jnp.exp(x)" in b.source.text
    later = [s for s in loc.steps if s.live and s.index > b.index and "nan" in s.flags]
    assert later, "the NaN follows the overflow"


def test_jaxs_own_logistic_derivative_is_blamed_and_marked_as_jaxs():
    loc = B.localize(rulelab.get_case("sigmoid"), "library", "grad", "x", "float32", (20.0,))
    b = loc.blamed
    s = 1 / (1 + mpmath.exp(-20))
    assert loc.exact == f32(s * (1 - s)) and loc.computed == 0.0
    assert b.primitive == "sub" and b.source.jax and b.label == "cancellation"
    # JAX inlines the derivative of its jit-compiled sigmoid with its machinery's frames
    # only: the variant's own function names it, not pjit.py
    assert b.source.function == "sigmoid" and b.source.file.endswith("nn/functions.py") and "def sigmoid" in b.source.text


def test_the_cancellation_in_jaxs_sinc_derivative_is_found():
    loc = B.localize(rulelab.get_case("sinc"), "library", "grad", "x", "float32", (1e-3,))
    b = loc.blamed
    x, pi = mpmath.mpf(float(np.float32(1e-3))), mpmath.mpf(float(np.float32(np.pi)))  # the program's pi is float32's
    exact_grad = (mpmath.cos(pi * x) - mpmath.sin(pi * x) / (pi * x)) / x  # d/dx sin(pi x) / (pi x)
    assert loc.exact == f32(exact_grad)
    assert b.primitive in ("sub", "add_any") and b.label == "cancellation" and b.source.jax


def test_a_user_modules_overflowing_cosh_is_blamed_at_the_users_line():
    from rulelab.model.modules import load_modules

    load_modules([str(ROOT / "examples" / "logcosh.py")])
    loc = B.localize(rulelab.get_case("logcosh"), "naive", "value", None, "float32", (100.0,))
    b = loc.blamed
    assert math.isinf(loc.computed) and loc.exact == f32(100 - mpmath.log(2) + mpmath.log1p(mpmath.exp(-200)))
    assert b.primitive == "cosh" and b.label == "overflow" and b.source.file.endswith("examples/logcosh.py")
    assert "jnp.cosh(x)" in b.source.text


def test_a_correct_variant_loses_no_more_than_one_ulp_anywhere():
    loc = B.localize(rulelab.get_case("softplus"), "stable", "grad", "x", "float32", (-20.0,))
    assert loc.blamed is None and loc.computed == loc.exact == f32(1 / (1 + mpmath.exp(20)))
    assert all(s.local_ulp <= 1 for s in loc.steps if s.live)
    assert loc.summary() == "blame: no equation loses more than 1 ULP here"


def test_a_users_cancelling_rule_is_blamed_at_the_users_own_line(tmp_path, registered):
    module = tmp_path / "my_rule.py"
    module.write_text(
        "import jax, jax.numpy as jnp\n\n@jax.custom_jvp\ndef sp(x):\n    return jnp.logaddexp(x, 0.0)\n\n\n@sp.defjvp\n"
        "def _sp_jvp(p, t):\n    (x,), (dx,) = p, t\n    slope = 1.0 - 1.0 / (1.0 + jnp.exp(x))\n    return sp(x), slope * dx\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import my_rule
    finally:
        sys.path.remove(str(tmp_path))
    case = registered(rulelab.make_case(name="my_softplus", formula="log(1 + e^x)", args=("x",), domain=rulelab.REALS,
                                        reference=lambda mp, x: mp.log1p(mp.exp(x)), variants=[rulelab.Variant("mine", my_rule.sp)]))
    b = B.localize(case, "mine", "grad", "x", "float32", (-30.0,)).blamed
    assert b.primitive == "sub" and b.label == "cancellation"
    assert Path(b.source.file) == module and b.source.line == 11 and b.source.text == "slope = 1.0 - 1.0 / (1.0 + jnp.exp(x))"


def test_an_operation_on_exact_inputs_that_underflow_is_not_charged():
    # float16 CG on this 2x2 system: the exact run converges (its residuals fall to ~1e-1236,
    # 0 in float16) where the float one does not, so the next alpha = rr / pap is 0/0 on the
    # exact inputs rounded: no local error exists there, and the result is exact anyway
    loc = B.localize(rulelab.get_case("linear_solve"), "custom_linear_solve", "grad", "a", "float16", (-1.8505859375, 1.9990234375))
    assert loc.computed == loc.exact
    undefined = [s for s in loc.steps if "exact inputs underflow" in s.flags]
    assert undefined and all(s.primitive == "div" and math.isnan(s.local_ulp) for s in undefined)
    assert loc.blamed is None or math.isfinite(loc.blamed.local_ulp)


def test_the_float_run_reproduces_the_sweeps_value():
    case = rulelab.get_case("logaddexp")
    xs = (np.array([3.5], np.float32), np.array([-7.25], np.float32))
    swept = evaluate(case, "naive", "grad", "y", "float32", xs)
    loc = B.localize(case, "naive", "grad", "y", "float32", (3.5, -7.25))
    assert swept.values[0] == np.float32(loc.computed)


@pytest.mark.slow
def test_every_primitive_the_catalog_evaluates_has_an_exact_counterpart():
    """A primitive that appears in a catalog program that evaluates, with a floating
    result, must be arithmetic, structural, exact by construction, or a call (or be named
    as not localized yet, so that the blame says so)."""
    import jax

    handled = (exact.ARITHMETIC | exact.STRUCTURAL | exact.AS_COMPUTED | exact.NOT_LOCALIZED | set(B.CALLS)
               | {"cond", "while", "scan", "custom_linear_solve"})
    missing: dict[str, str] = {}

    def walk(jaxpr, where):
        for e in jaxpr.eqns:
            if any(jax.numpy.issubdtype(v.aval.dtype, jax.numpy.floating) for v in e.outvars) and e.primitive.name not in handled:
                missing.setdefault(e.primitive.name, where)
            for v in e.params.values():
                for x in v if isinstance(v, (tuple, list)) else [v]:
                    inner = getattr(x, "jaxpr", None) if hasattr(x, "consts") else x if hasattr(x, "eqns") else None
                    if inner is not None:
                        walk(inner, where)

    for case in [c for c in rulelab.cases() if c.reference.__module__.startswith("rulelab.catalog")]:
        pts = tuple(np.array([0.5], np.float32) for _ in case.args)
        for variant in case.variants.values():
            for transform in ("value", "grad", "jvp", "grad2"):
                for i, arg in enumerate(case.args[: 1 if transform == "value" else None]):
                    if evaluate(case, variant.name, transform, None if transform == "value" else arg, "float32", pts).status != "ok":
                        continue
                    closed = jax.make_jaxpr(scalar_transform(variant.fn, transform, i, len(case.args)))(*[np.float32(0.5)] * len(case.args))
                    walk(closed.jaxpr, f"{case.name} {variant.name} {transform}")
    assert not missing, f"primitives without an exact counterpart: {missing}"


@pytest.mark.slow
def test_a_sweep_writes_the_blame_table_and_the_case_page_shows_the_line(tmp_path):
    from rulelab import store
    from rulelab.model.plan import parse_plan
    from rulelab.report import build_report
    from rulelab.runs import sampled
    from rulelab.runs.executors import Options

    plan = parse_plan('cases = ["softplus"]\nvariants = ["custom_jvp", "stable"]\ntransforms = ["grad"]\ndtypes = ["float32"]\n'
                      "[sweep]\nper_binade = 2\n", "p.toml", name="p")
    run = sampled.start(plan, tmp_path / "results", [], Options(workers=1, progress=False, compile_cache=False))
    blame = store.load_blame(run)
    assert set(blame["variant"]) == {"custom_jvp"}  # stable softplus is within 4 ULP everywhere: nothing to localize
    worst = blame[blame["rank"] == 0].iloc[0]
    assert worst["primitive"] == "sub" and worst["label"] == "cancellation" and "1.0 - 1.0 / (1.0 + jnp.exp(x))" in worst["line_text"]
    index = build_report([run], tmp_path / "results" / "asv", tmp_path / "reports", workers=1)
    from rulelab.report.pages import case_file

    page = (index.parent / case_file("softplus")).read_text()
    assert "where the digits are lost" in page and "1.0 - 1.0 / (1.0 + jnp.exp(x))" in page and "cancellation" in page
    import rulelab.catalog.softplus as sp

    line = next(i for i, text in enumerate(Path(sp.__file__).read_text().splitlines(), 1) if "1.0 - 1.0 / (1.0 + jnp.exp(x))" in text)
    assert f"lost at softplus.py:{line} (_softplus_jvp_rule) (sub, cancellation, in float32)" in index.read_text()


def test_the_blame_command_ends_with_its_verdict(env):
    res = subprocess.run([sys.executable, "-m", "rulelab", "blame", "softplus", "custom_jvp", "grad", "--at", "-20"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("blame: sub at ") and "catalog/softplus.py:" in last and last.endswith("ULP local error, cancellation")
    bad = subprocess.run([sys.executable, "-m", "rulelab", "blame", "softplus", "custom_jvp", "grad", "--at", "1,2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "softplus takes 1 arguments" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_an_exhaustive_sweep_ends_with_its_blame_table_too(tmp_path):
    from rulelab import store
    from rulelab.model.exhaustive_spec import Spec, chunks_of_binades
    from rulelab.runs import exhaustive
    from rulelab.runs.executors import Options

    # every float32 in [64, 128): naive softplus' gradient is NaN past 88.72, where exp overflows
    spec = Spec("softplus", ("naive",), ("grad",), chunk_bits=18, chunks=chunks_of_binades(133, 133, 18))
    run = exhaustive.start(spec, tmp_path / "results", Options(workers=1, progress=False, compile_cache=False))
    blame = store.load_blame(run)
    assert list(blame["rank"]) == [0, 1, 2]  # the result's three worst inputs
    assert set(blame["primitive"]) == {"exp"} and set(blame["label"]) == {"overflow"}
    assert (blame["in0"] > math.log(float(np.finfo(np.float32).max))).all()
    assert "blame" in store.read_meta(run).phases
