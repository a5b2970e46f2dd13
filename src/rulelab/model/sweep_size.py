"""What a plan will cost before it runs: points per sweep and memory, and a limit.

The pitfall: a plan's sizes multiply (per binade x binades x signs, and per axis to the
power of the arguments for grids), so one mistyped number (``per_binade = 100000000``)
asks for billions of points, and a sweep would fill the memory before its first progress
line. The estimate here is an upper bound computed without making any point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rulelab.core.errors import UsageError
from rulelab.model.case import get_case
from rulelab.model.inputs import estimate_points
from rulelab.model.plan import Plan

MAX_POINTS = 2**24
"""Default limit on the points of one sweep (one case in one dtype); ``--max-points``
raises it. The packaged exhaustive plan's largest sweep has about 1.2 million."""
BYTES_PER_POINT = 8 * 24
"""Peak bytes per reference point of a case: inputs, the confirmed reference, its
roundings and one task's errors, all float64 (an upper bound from the sweep's arrays)."""


class PlanTooLarge(UsageError):
    """A plan would need more points or memory than allowed; the message has the estimate."""


@dataclass(frozen=True)
class Estimate:
    """A plan's size: total points over every sweep, the largest sweep (points, case,
    dtype), and the peak memory of the largest case (every dtype's points together)."""

    points: int
    sweeps: int
    largest: tuple[int, str, str]
    peak_bytes: int

    def __str__(self) -> str:
        n, case, dtype = self.largest
        return (f"{self.points:,} points in {self.sweeps} sweeps, the largest {n:,} ({case} in {dtype}), "
                f"about {self.peak_bytes / 2**30:.2g} GiB at most")


def estimate(plan: Plan) -> Estimate:
    """The plan's size, without making a point."""
    total, sweeps, largest, peak = 0, 0, (0, "", ""), 0
    for name in plan.cases:
        case = get_case(name)
        per_case = 0
        for dtype in plan.dtypes:
            n = estimate_points(case, dtype, plan.spec(dtype, len(case.args)))
            total, sweeps, per_case = total + n, sweeps + 1, per_case + n
            largest = max(largest, (n, name, dtype))
        peak = max(peak, 2 * per_case * BYTES_PER_POINT)  # the flushed points may double the union
    return Estimate(total, sweeps, largest, peak)


def available_memory() -> int | None:
    """Bytes of memory available now (None where the system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_size(plan: Plan, max_points: int = MAX_POINTS) -> Estimate:
    """The plan's estimate, or :class:`PlanTooLarge` when its largest sweep is over
    ``max_points`` or it would need more memory than is available."""
    est = estimate(plan)
    if est.largest[0] > max_points:
        raise PlanTooLarge(
            f"plan {plan.name!r} is too large: {est}; the limit is {max_points:,} points per sweep. "
            "Lower per_binade or grid_per_binade (or raise grid_stride), or pass --max-points to allow it"
        )
    free = available_memory()
    if free is not None and est.peak_bytes > free:
        raise PlanTooLarge(f"plan {plan.name!r} would need more memory than is available ({free / 2**30:.2g} GiB): {est}")
    return est
