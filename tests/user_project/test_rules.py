"""A user's tests of their rules with rulelab.testing (run by tests/test_testing.py)."""

from rules import softplus_stable, softplus_textbook

from rulelab.testing import assert_accurate


def softplus_reference(mp, x):
    return mp.log1p(mp.exp(x))


def test_the_stable_rule_is_accurate():
    assert_accurate(softplus_stable, reference=softplus_reference)


def test_the_textbook_rule_is_accurate():
    assert_accurate(softplus_textbook, reference=softplus_reference)
