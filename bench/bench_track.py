"""Compile time, op counts and memory of every case's variants, one class per case.

``bench_track.<case>.track_*`` is parametrised by variant, transform, dtype and backend,
at ``common.TRACK_SIZE`` points, derivatives in the first argument. Key cases
(``common.KEY_CASES``) run every transform in float32 and bfloat16; the others the
reduced product: value and grad in float32. Each combination is compiled once per commit
and environment, in the module's ``setup_cache``.

- ``track_compile_ms``: a fresh trace to an executable, ms (one sample, so noisy).
- ``track_jaxpr_eqns``: equations of the traced function, call wrappers seen through.
- ``track_hlo_ops``: instructions of the optimized HLO, fused computations included.
- ``track_temp_bytes``: XLA's scratch bytes (``memory_analysis``), where reported.
- ``track_residual_bytes``: what reverse mode keeps between the forward and the
  backward pass (``grad`` rows only).
"""

from __future__ import annotations

from bench import common
from bench.common import cost


class _Track(common._Tracks):
    def setup_cache(self) -> dict:
        return self.measure_family()

    def _target(self, variant: str, transform: str, dtype: str, backend: str) -> cost.Target:
        return common.target(self.case, variant, transform, dtype, common.TRACK_SIZE, backend)


def _params(case):
    p = common.product(case)
    return [list(case.variants), list(p.transforms), list(p.dtypes), common.BACKENDS], ["variant", "transform", "dtype", "backend"]


_Track.family = common.per_case(globals(), _Track, common.catalog(), _params)
