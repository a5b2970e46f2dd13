"""Steady-state time per call of every case's variants, one class per case.

``bench_time.<case>.time_call`` is parametrised by variant, transform, dtype, size and
backend. The key cases (``common.KEY_CASES``: softplus, newton_sqrt, stable_sqrt) run the
full product: value, grad, jvp and grad2; float32 and bfloat16; 16 and 2**16 points. The
others run the reduced one: value and grad, float32, 2**16 points. Derivatives are taken
in the first argument. The function is compiled and run once in ``setup``; the timed body
calls it and waits for the result.
"""

from __future__ import annotations

import jax

from bench import common


class _Time:
    """Steady-state seconds per call of the jit-compiled, vectorised transform."""

    case: str
    timeout = 120.0
    rounds = 1  # one process per combination: its setup compiles, and compiling dominates
    repeat = (1, 10, 5.0)
    warmup_time = 0.05  # setup already ran the function once

    def setup(self, variant: str, transform: str, dtype: str, size: int, backend: str) -> None:
        t = common.target(self.case, variant, transform, dtype, size, backend)
        self.fn, self.args = common.compiled_call(t)

    def time_call(self, variant: str, transform: str, dtype: str, size: int, backend: str) -> None:
        jax.block_until_ready(self.fn(*self.args))


def _params(case):
    p = common.product(case)
    return (
        [list(case.variants), list(p.transforms), list(p.dtypes), list(p.sizes), common.BACKENDS],
        ["variant", "transform", "dtype", "size", "backend"],
    )


common.per_case(globals(), _Time, common.catalog(), _params)
