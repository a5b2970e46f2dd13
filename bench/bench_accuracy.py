"""Worst accuracy of every case's variants, one class per case.

``bench_accuracy.<case>.track_max_ulp`` is the largest distance in ULPs between a
variant's result and the correctly rounded mpmath reference over a small fixed sweep
(``rulelab.scoring.accuracy_probe.probe``), parametrised by variant, transform, argument
differentiated, dtype and backend. Where a result is non-finite and the reference is not,
the probe says inf: that combination is skipped (``n/a``), as a non-finite result is its
own class and not a distance (and asv cannot publish an infinite value).
A change of rule that costs accuracy shows here beside the change in time it bought.

All of a case's combinations in one dtype are evaluated by one compiled program, once
per commit and environment, in the module's ``setup_cache``.

Key cases (``common.KEY_CASES``) run every transform in every argument, in float32 and
bfloat16; the others the reduced product: value and grad in the first argument, float32.
References come from rulelab's disk cache; the first run on a machine computes them. A
case whose probe sweep has more than ``MAX_POINTS`` points (a dense grid over three
arguments) is skipped: it would take minutes per combination.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from bench import common

MAX_POINTS = 20_000

try:  # imported here, so asv's fork server loads it once for every combination
    try:
        from rulelab.scoring.accuracy_probe import probe, probe_size
    except ImportError:  # a rulelab from before its layer folders
        from rulelab.accuracy_probe import probe, probe_size
except ImportError:  # an older rulelab: one program per combination, or none at all
    try:
        from rulelab.accuracy_probe import max_ulp, probe_size
    except ImportError as exc:
        probe = probe_size = None
        _MISSING = f"this rulelab has no accuracy probe ({exc})"
    else:

        def probe(case: str, jobs: list[tuple[str, str, str]], dtype: str, backend: str) -> list[Any]:
            from types import SimpleNamespace

            from rulelab import cost

            out = []
            for v, t, a in jobs:
                s = cost.support(case, v, t, a, dtype)
                ulp = math.nan if s.status == "unsupported" else max_ulp(case, v, t, a, dtype, backend=backend)
                out.append(SimpleNamespace(max_ulp=ulp, status=s.status, message=s.message))
            return out


def measure_case(cls: type) -> dict[tuple[Any, ...], Any]:
    """Every combination of one case's class: max dULP, or the skip reason (a string),
    or the error (raised by that combination's setup). One compiled program per dtype
    and backend evaluates all of the case's variants, transforms and arguments."""
    variants, transforms, args, dtypes, backends = cls.params
    found: dict[tuple[Any, ...], Any] = {}
    for dtype, backend in itertools.product(dtypes, backends):
        keys = [(v, t, a) for v, t, a in itertools.product(variants, transforms, args)]
        try:
            if probe is None:
                raise NotImplementedError(_MISSING)
            common.require_backend(backend)
            points = probe_size(cls.case, dtype)
            if points > MAX_POINTS:
                raise NotImplementedError(f"the probe sweep has {points} points, more than {MAX_POINTS}")
        except NotImplementedError as exc:
            found.update({(cls.case, *k, dtype, backend): str(exc) for k in keys})
            continue
        jobs = [k for k in keys if k[1] != "value" or k[2] == args[0]]
        for k in keys:
            if k not in jobs:
                found[(cls.case, *k, dtype, backend)] = "a value does not depend on the argument differentiated"
        for (v, t, a), r in zip(jobs, probe(cls.case, jobs, dtype, backend)):
            where = f"{cls.case}/{v} {t} in {a} ({dtype}, {backend})"
            if r.status == "unsupported":
                entry: Any = r.message
            elif r.status != "ok" or math.isnan(r.max_ulp):
                entry = RuntimeError(f"{where}: the probe failed: {r.message}")
            elif math.isinf(r.max_ulp):
                # Its own class, never a large number (DESIGN.md); asv's step detection
                # also cannot take an infinite value (publish exhausts memory).
                entry = "non-finite results where the reference is finite: no dULP"
            else:
                entry = r.max_ulp
            found[(cls.case, v, t, a, dtype, backend)] = entry
    return found


class _Accuracy:
    """Max dULP against the mpmath reference over a small fixed sweep.

    Every combination of every case is measured once per commit and environment in the
    module's ``setup_cache`` (shared by all classes generated from this template); each
    combination's ``setup`` reads its number from there."""

    case: str
    params: list[list[Any]]
    family: list[type] = []
    timeout = 1800.0

    def setup_cache(self) -> dict:
        found: dict[tuple[Any, ...], Any] = {}
        for cls in self.family:
            found.update(measure_case(cls))
        return found

    def setup(self, cache: dict, variant: str, transform: str, arg: str, dtype: str, backend: str) -> None:
        self.ulp = common.cached(cache, (self.case, variant, transform, arg, dtype, backend))

    def track_max_ulp(self, cache: dict, variant: str, transform: str, arg: str, dtype: str, backend: str) -> float:
        return self.ulp

    track_max_ulp.unit = "ULP"


def _params(case):
    p = common.product(case)
    return (
        [list(case.variants), list(p.transforms), common.derivative_args(case), list(p.dtypes), common.BACKENDS],
        ["variant", "transform", "arg", "dtype", "backend"],
    )


_Accuracy.family = common.per_case(globals(), _Accuracy, common.catalog(), _params)
