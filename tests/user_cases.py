"""Tiny cases of a user's own, for the sweep and command-line tests: loaded with
``--module tests/user_cases.py`` exactly as a user's module would be. Their errors are
known without mpmath: on [1, 1024] negation and addition are exact in every dtype, and
stepping one value toward zero is exactly 1 ULP away."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp

import rulelab

DOMAIN = rulelab.Interval(1.0, 1024.0)


def exact_neg(x):
    return -x


@jax.custom_jvp
def off_by_one(x):
    """-x moved one value toward zero; its derivative -1 moved the same way."""
    return jnp.nextafter(-x, jnp.zeros_like(x))


@off_by_one.defjvp
def _off_by_one_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return off_by_one(x), jnp.nextafter(-jnp.ones_like(x), jnp.zeros_like(x)) * t


def broken(x):
    raise RuntimeError("boom: this variant always fails")


def slow(x):
    """-x, but tracing takes a while (so a sweep can be stopped part-way)."""
    time.sleep(float(os.environ.get("RULELAB_TEST_SLOW", "0.3")))
    return -x


NEG_DERIVATIVES = {("x", 1): lambda mp, x: mp.mpf(-1), ("x", 2): lambda mp, x: mp.mpf(0)}

rulelab.register(
    rulelab.make_case(
        "tneg",
        "-x",
        ("x",),
        DOMAIN,
        lambda mp, x: -x,
        {"exact": exact_neg, "off": off_by_one, "broken": broken},
        derivatives=NEG_DERIVATIVES,
        source="rulelab tests",
    )
)

rulelab.register(
    rulelab.make_case(
        "tadd",
        "x + y",
        ("x", "y"),
        DOMAIN,
        lambda mp, x, y: x + y,
        {"exact": lambda x, y: x + y},
        derivatives={("x", 1): lambda mp, x, y: mp.mpf(1), ("y", 1): lambda mp, x, y: mp.mpf(1),
                     ("x", 2): lambda mp, x, y: mp.mpf(0), ("y", 2): lambda mp, x, y: mp.mpf(0)},  # fmt: skip
        source="rulelab tests",
    )
)

rulelab.register(
    rulelab.make_case(
        "tslow",
        "-x",
        ("x",),
        DOMAIN,
        lambda mp, x: -x,
        {"a": slow, "b": slow, "c": exact_neg},
        derivatives=NEG_DERIVATIVES,
        source="rulelab tests",
    )
)
