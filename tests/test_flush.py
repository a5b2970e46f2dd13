"""Flushing is the backend's, not the rule's: on a backend that flushes a dtype's
subnormals (XLA on CPU flushes float32 and bfloat16), a point is also scored against the
reference at the inputs as the backend reads them, its subnormal result flushed; the
headline is the closer of the two, and dtypes that do not flush are unchanged."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import rulelab
from rulelab import store
from rulelab.core.floats import round_double_double
from rulelab.jaxrun.backend import flushes_subnormals
from rulelab.jaxrun.evaluate import evaluate
from rulelab.model.case import get_case
from rulelab.model.inputs import Sweep
from rulelab.model.plan import parse_plan
from rulelab.reference.compute import references
from rulelab.runs import sampled as sweep
from rulelab.scoring.metrics import flush_reference, point_errors, summarize
from rulelab.store.vocabulary import Bucket

pytestmark = pytest.mark.skipif(not flushes_subnormals("float32"), reason="this backend does not flush float32 subnormals")


def scored(case, variant, transform, arg, dtype, points):
    """The point errors of a variant at ``points`` (float64 tuples), IEEE and flush-aware."""
    sweep_ = Sweep(case.name, dtype, tuple(np.array(c).astype(np.dtype(dtype) if dtype != "bfloat16" else jnp.bfloat16) for c in zip(*points)))
    out = evaluate(case, variant, transform, arg, dtype, sweep_.points)
    assert out.status == "ok", out.message
    order = 0 if transform == "value" else 1
    hi, lo = references(case, order, arg or case.args[0], sweep_.as_float64())
    f_hi, f_lo = references(case, order, arg or case.args[0], sweep_.flushed())
    flush = flush_reference(f_hi, f_lo, dtype, round_double_double(hi, lo, dtype))
    return point_errors(out.values, hi, lo, dtype, flush=flush), point_errors(out.values, hi, lo, dtype)


def test_norm2_grad_at_subnormal_inputs_is_the_backends_flushing():
    """At (9.2e-41, 1.4e-45) the CPU reads (0, 0); d/dx hypot is 1 there by the case's
    convention, as the variant returns; the IEEE reference (x / hypot = 1 too, nearly)
    and the flush-aware one must agree that the rule is right."""
    case = get_case("norm2")
    point = (float(np.float32(9.2e-41)), float(np.float32(1.4e-45)))
    flush_aware, ieee = scored(case, "custom_jvp", "grad", "x", "float32", [point])
    assert flush_aware.flushed[0] and flush_aware.dulp[0] == 0 and Bucket(flush_aware.bucket[0]) is Bucket.EXACT
    assert ieee.dulp[0] > 1024 or Bucket(ieee.bucket[0]).nonfinite


def _double_near_zero(x):
    """1 + x, but twice that where |x| is below float32's smallest normal: wrong there
    for its own reason, whatever the backend reads."""
    return jnp.where(jnp.abs(x) < 1.1754944e-38, 2 * (1 + x), 1 + x)


def test_a_rule_wrong_at_subnormal_inputs_for_its_own_reason_still_scores_badly():
    case = rulelab.make_case("tflush_double", "1 + x", ("x",), rulelab.REALS, lambda mp, x: 1 + x,
                             {"naive": lambda x: 1 + x, "doubled": _double_near_zero})
    rulelab.register(case, replace=True)
    try:
        tiny = [(float(np.float32(v)),) for v in (1e-40, -3e-42, 1.4e-45)]
        flush_aware, _ = scored(case, "doubled", "value", None, "float32", tiny)
        row = summarize(flush_aware)
        assert row["max_ulp"] > 1024 and row["ulp_gt_1024"] == 3 and row["flushed"] == 0
        exact, _ = scored(case, "naive", "value", None, "float32", tiny)
        assert summarize(exact)["max_ulp"] == 0
    finally:
        rulelab.unregister("tflush_double")


def test_a_sweep_scores_float32_flush_aware_and_leaves_float16_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RULELAB_CACHE", str(tmp_path / "cache"))
    text = ('cases = ["norm2"]\nvariants = ["custom_jvp"]\ntransforms = ["grad"]\ndtypes = ["float32", "float16"]\n'
            "[sweep]\nexhaustive16 = false\ngrid_per_binade = 1\ngrid_stride = 24\n")
    plan = parse_plan(text, "flush.toml", name="flush")
    run = sweep.start(plan, tmp_path / "results", [], sweep.Options(workers=1, progress=False, compile_cache=False))
    meta = store.read_meta(run)
    assert meta.backend["flushes_subnormals"] == {"float32": True, "float16": False}
    s = store.load_table(run, "summary").set_index(["dtype", "arg"])
    for arg in ("x", "y"):
        f32, f16 = s.loc[("float32", arg)], s.loc[("float16", arg)]
        assert f32["flushed"] > 0 and f32["max_ulp"] <= f32["max_ulp_ieee"]
        assert f16["flushed"] == 0 and f16["max_ulp"] == f16["max_ulp_ieee"]
    b = store.load_table(run, "binned")
    assert b.loc[b["dtype"] == "float16", "flushed"].sum() == 0 and b.loc[b["dtype"] == "float32", "flushed"].sum() > 0
    w = store.load_table(run, "worst")
    assert not w.loc[w["dtype"] == "float16", "flushed"].any()
