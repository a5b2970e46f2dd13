"""Worst accuracy of every case's variants, one class per case.

``bench_accuracy.<case>.track_max_ulp`` is the largest distance in ULPs between a
variant's result and the correctly rounded mpmath reference over a small fixed sweep
(``rulelab.accuracy_probe.max_ulp``), parametrised by variant, transform, argument
differentiated, dtype and backend. Where a result is non-finite and the reference is not,
the probe says inf: that combination is skipped (``n/a``), as a non-finite result is its
own class and not a distance (and asv cannot publish an infinite value).
A change of rule that costs accuracy shows here beside the change in time it bought.

Key cases (``common.KEY_CASES``) run every transform in every argument, in float32 and
bfloat16; the others the reduced product: value and grad in the first argument, float32.
References come from rulelab's disk cache; the first run on a machine computes them. A
case whose probe sweep has more than ``MAX_POINTS`` points (a dense grid over three
arguments) is skipped: it would take minutes per combination.
"""

from __future__ import annotations

import math

from bench import common
from rulelab import cost

MAX_POINTS = 20_000

try:  # imported here, so asv's fork server loads it once for every combination
    from rulelab.accuracy_probe import max_ulp, probe_size
except ImportError as exc:  # an older rulelab: every combination is skipped
    max_ulp = probe_size = None
    _MISSING = f"this rulelab has no accuracy probe ({exc})"


class _Accuracy:
    """Max dULP against the mpmath reference over a small fixed sweep."""

    case: str
    timeout = 600.0

    def setup(self, variant: str, transform: str, arg: str, dtype: str, backend: str) -> None:
        if max_ulp is None:
            raise NotImplementedError(_MISSING)
        if transform == "value" and arg != self.params[2][0]:
            raise NotImplementedError("a value does not depend on the argument differentiated")
        common.require_backend(backend)
        points = probe_size(self.case, dtype)
        if points > MAX_POINTS:
            raise NotImplementedError(f"the probe sweep has {points} points, more than {MAX_POINTS}")
        s = cost.support(self.case, variant, transform, arg, dtype)
        if s.status == "unsupported":
            raise NotImplementedError(s.message)
        self.ulp = float(max_ulp(self.case, variant, transform, arg, dtype, backend=backend))
        if math.isnan(self.ulp):
            raise RuntimeError(f"{self.case}/{variant} {transform} in {arg} ({dtype}, {backend}): the probe failed")
        if math.isinf(self.ulp):
            # Its own class, never a large number (DESIGN.md); asv's step detection
            # also cannot take an infinite value (publish exhausts memory).
            raise NotImplementedError("non-finite results where the reference is finite: no dULP")

    def track_max_ulp(self, variant: str, transform: str, arg: str, dtype: str, backend: str) -> float:
        return self.ulp

    track_max_ulp.unit = "ULP"


def _params(case):
    p = common.product(case)
    return (
        [list(case.variants), list(p.transforms), common.derivative_args(case), list(p.dtypes), common.BACKENDS],
        ["variant", "transform", "arg", "dtype", "backend"],
    )


common.per_case(globals(), _Accuracy, common.catalog(), _params)
