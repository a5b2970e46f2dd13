"""Worst accuracy of every case's variants, one class per case.

``bench_accuracy.<case>.track_max_ulp`` is the largest distance in ULPs between a
variant's result and the correctly rounded mpmath reference over a small fixed sweep
(``rulelab.accuracy_probe.max_ulp``), parametrised by variant, transform, argument
differentiated, dtype and backend. A change of rule that costs accuracy shows here
beside the change in time it bought. Derivatives are taken in every argument; ``value``
rows use the first.
"""

from __future__ import annotations

from bench import common
from rulelab.case import TRANSFORMS


class _Accuracy:
    """Max dULP against the mpmath reference over a small fixed sweep."""

    case: str
    timeout = 300.0

    def setup(self, variant: str, transform: str, arg: str, dtype: str, backend: str) -> None:
        try:
            from rulelab.accuracy_probe import max_ulp
        except ImportError as exc:
            raise NotImplementedError(f"this rulelab has no accuracy probe ({exc})") from None
        if transform == "value" and arg != self.params[2][0]:
            raise NotImplementedError("value does not depend on which argument is differentiated")
        common.target(self.case, variant, transform, dtype, common.SMALL, backend, arg=arg)  # or skip
        self.ulp = float(max_ulp(self.case, variant, transform, arg, dtype, backend=backend))

    def track_max_ulp(self, variant: str, transform: str, arg: str, dtype: str, backend: str) -> float:
        return self.ulp

    track_max_ulp.unit = "ULP"


def _params(case):
    return (
        [list(case.variants), list(TRANSFORMS), list(case.args), common.ACCURACY_DTYPES, common.BACKENDS],
        ["variant", "transform", "arg", "dtype", "backend"],
    )


common.per_case(globals(), _Accuracy, common.catalog(), _params)
