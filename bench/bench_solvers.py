"""Cost against iteration count for every iterative case (one with ``steps``).

For each such case the variants a step count applies to (``Case.with_steps``: typically
the naive solver differentiated through its iterations, and an implicit rule whose
backward pass solves for the fixed point's adjoint) are rebuilt with 2, 4, ..., 64
iterations, in float32 on 2**16 points, derivatives in the first argument. Key cases
(``common.KEY_CASES``) run value and grad; the others grad only.

- ``bench_solvers.<case>.time_call``: steady-state time per call.
- ``bench_solvers.<case>_memory.track_*``: as in ``bench_track``; ``track_temp_bytes``
  and ``track_residual_bytes`` show reverse mode's storage growing with the iterations
  when unrolled and staying flat when implicit.
"""

from __future__ import annotations

import jax

from bench import common
from bench.common import cost

DTYPE = "float32"
SIZE = common.LARGE


class _Solvers(common._Measured):
    """Every combination compiled once per commit and environment, in the one
    ``setup_cache`` the time and memory classes share: the tracks read their numbers
    from it, and the timings load its executables instead of compiling again."""

    keep = True

    def setup_cache(self) -> dict:
        return self.measure_family()

    def _target(self, variant: str, steps: int, transform: str, backend: str) -> cost.Target:
        return common.target(self.case, variant, transform, DTYPE, SIZE, backend, steps=steps)


class _Steps(_Solvers):
    """Steady-state seconds per call against the iteration count."""

    timeout = 1800.0
    rounds = 1  # one process per combination
    repeat = (1, 10, 5.0)
    warmup_time = 0.05  # setup already ran the function once

    def setup(self, cache: dict, variant: str, steps: int, transform: str, backend: str) -> None:
        super().setup(cache, variant, steps, transform, backend)
        self.fn, self.args = common.loaded_call(self.entry, self._target(variant, steps, transform, backend))

    def time_call(self, cache: dict, variant: str, steps: int, transform: str, backend: str) -> None:
        jax.block_until_ready(self.fn(*self.args))


class _StepsMemory(_Solvers, common._Tracks):
    pass


def _params(case):
    transforms = ["value", "grad"] if case.name in common.KEY_CASES else ["grad"]
    return [common.step_variants(case), common.STEPS, transforms, common.BACKENDS], ["variant", "steps", "transform", "backend"]


_iterative = common.iterative(common.catalog())
_Solvers.family = common.per_case(globals(), _Steps, _iterative, _params)
common.per_case(globals(), _StepsMemory, _iterative, _params, suffix="_memory")
