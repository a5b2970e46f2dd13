"""The case model: malformed cases fail at registration with a message naming the problem."""

import jax.numpy as jnp
import pytest

import rulelab
from rulelab.model.case import POSITIVE, REALS, CaseError, Interval, Variant, make_case


def good(name="case_ok", **kw):
    base = dict(name=name, formula="sin x", args=("x",), domain=REALS, reference=lambda mp, x: mp.sin(x),
                variants=[Variant("naive", jnp.sin)])
    base.update(kw)
    return make_case(**base)


def test_register_and_lookup():
    c = good("case_lookup")
    rulelab.register(c)
    try:
        assert rulelab.get_case("case_lookup") is c
        assert c in rulelab.cases()
        assert c.variants["naive"].fn is jnp.sin
    finally:
        rulelab.unregister("case_lookup")


def test_duplicate_name_is_refused():
    rulelab.register(good("case_dup"))
    try:
        with pytest.raises(CaseError, match="case 'case_dup'.*already registered"):
            rulelab.register(good("case_dup"))
    finally:
        rulelab.unregister("case_dup")


@pytest.mark.parametrize("kw, message", [
    (dict(variants=[Variant("naive", lambda x, y: x)]), "variant 'naive' takes 2 .* the case has 1"),
    (dict(reference=3.0), "reference is not callable"),
    (dict(domain=("positive",)), r"domain must be an Interval or one Interval per argument, got \('positive',\); use rulelab.REALS"),
    (dict(args=("x", "y"), domain=(REALS,)), "2 argument.* but 1 domain"),
    (dict(reference=lambda mp: 0), r"reference must take \(mp, x\)"),
    (dict(derivatives={("z", 1): lambda mp, x: 1}), "derivative key"),
    (dict(variants=[]), "has no variants"),
])
def test_malformed_cases_name_the_problem(kw, message):
    with pytest.raises(CaseError, match=message) as info:
        good("case_bad", **kw)
    assert "case_bad" in str(info.value)


def test_unknown_case_lists_known():
    with pytest.raises(CaseError, match="unknown case 'nope'; known cases: .*softplus"):
        rulelab.get_case("nope")


def test_interval_ends():
    assert not REALS.contains(float("inf")) and REALS.contains(1e308)
    assert not POSITIVE.contains(0.0) and POSITIVE.contains(5e-324)
    assert Interval(float("-inf"), 0.0, lo_closed=True).contains(float("-inf"))
    with pytest.raises(CaseError):
        Interval(1.0, 0.0)
