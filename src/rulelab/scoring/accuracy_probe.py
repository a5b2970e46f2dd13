"""A small, fixed accuracy probe: the max dULP of one case x variant x transform x dtype
over a coarse sweep, for benchmarks that track accuracy across commits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulelab.core.floats import round_double_double
from rulelab.jaxrun.backend import flushes_subnormals
from rulelab.jaxrun.evaluate import evaluate_many
from rulelab.model.case import DERIVATIVE_ORDER, Case, get_case
from rulelab.model.inputs import Sweep, SweepSpec, make_sweep
from rulelab.reference.compute import references
from rulelab.scoring.metrics import flush_reference, point_errors
from rulelab.store.vocabulary import Bucket, Status

PROBE_SPEC = SweepSpec(exhaustive16=False, per_binade=2, grid_per_binade=1, grid_stride=8, specials=True)
"""Two points per binade and sign for one argument, a coarse grid for several, plus the
case's special points: a few hundred points, references served from the cache."""
MAX_POINTS = 4096


def max_ulp(case_name: str, variant: str, transform: str, arg: str | None, dtype: str, backend: str | None = None) -> float:
    """Max dULP over the probe sweep (the headline: flush-aware where the backend flushes
    the dtype's subnormals); inf if any point is in a non-finite class, NaN if the
    transform is unsupported or the variant fails."""
    return probe(case_name, [(variant, transform, arg)], dtype, backend)[0].max_ulp


@dataclass(frozen=True)
class Probe:
    """One job's probe: ``max_ulp`` as :func:`max_ulp` says it, and the evaluation's
    status (ok, unsupported, error) and message."""

    max_ulp: float
    status: Status
    message: str


def probe(case_name: str, jobs: Sequence[tuple[str, str, str | None]], dtype: str, backend: str | None = None) -> list[Probe]:
    """The :class:`Probe` of each (variant, transform, arg) of ``jobs``, evaluated with
    one compiled program (``evaluate_many``: the same results as one program each)."""
    case = get_case(case_name)
    sweep = probe_sweep(case, dtype)
    jobs = [(v, t, a or case.args[0]) for v, t, a in jobs]
    outcomes = evaluate_many(case, jobs, dtype, sweep.points, backend)
    flushes = flushes_subnormals(dtype, backend)
    out = [Probe(math.nan, o.status, o.message) for o in outcomes]
    for i, ((_, transform, arg), outcome) in enumerate(zip(jobs, outcomes)):
        if outcome.status != Status.OK:
            continue
        order = DERIVATIVE_ORDER[transform]
        hi, lo = references(case, order, arg, sweep.as_float64())
        flush = None
        if flushes:
            f_hi, f_lo = references(case, order, arg, sweep.flushed())
            flush = flush_reference(f_hi, f_lo, dtype, round_double_double(hi, lo, dtype))
        errors = point_errors(outcome.values, hi, lo, dtype, flush=flush)
        comparable = errors.bucket <= Bucket.ULP_GT_1024
        if np.isin(errors.bucket, (Bucket.WRONG_NONFINITE, Bucket.UNEXPECTED_FINITE)).any():
            ulp = math.inf
        else:
            ulp = float(errors.dulp[comparable].max()) if comparable.any() else 0.0
        out[i] = Probe(ulp, Status.OK, "")
    return out


def probe_sweep(case: Case, dtype: Any) -> Sweep:
    """The probe's points: the coarse sweep, thinned evenly to at most MAX_POINTS (grids
    of three arguments would otherwise reach hundreds of thousands)."""
    sweep = make_sweep(case, dtype, PROBE_SPEC, seed=0)
    if len(sweep) <= MAX_POINTS:
        return sweep
    idx = np.linspace(0, len(sweep) - 1, MAX_POINTS).round().astype(np.int64)
    return Sweep(sweep.case, sweep.dtype, tuple(p[idx] for p in sweep.points))


def probe_size(case_name: str, dtype: Any) -> int:
    """Points in the probe sweep of a case in a dtype."""
    return len(probe_sweep(get_case(case_name), dtype))
