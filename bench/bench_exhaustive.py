"""Throughput of the exhaustive sweeps (``rulelab sweep exhaustive32`` and ``exhaustive16``).

``bench_exhaustive.ExhaustiveSoftplus.track_points_per_second``: softplus, every
variant, ``grad``, on a fixed slice: the 2^18 float32 inputs from 1.0 upward (one chunk
of 2^18 bit patterns), scored as an exhaustive run scores a chunk (one compiled
program, the fast reference tier, mpmath where it cannot decide, flush-aware scoring,
aggregation). ``setup`` validates the fast reference and compiles; the track is the
best of three chunks, in input points (each evaluated by every variant) per second.

``bench_exhaustive.ExhaustiveLogaddexp16.track_points_per_second``: the same for every
pair of float16 inputs of logaddexp (every variant, ``grad`` in both arguments), on the
2^18 pairs whose first argument is one of the 4 float16 values from 1.0 upward.
"""

from __future__ import annotations

import time

from bench import common

CHUNK_BITS = 18
FIRST = 0x3F800000 >> CHUNK_BITS  # the chunk starting at 1.0


class ExhaustiveSoftplus:
    """Input points per second of an exhaustive float32 sweep of softplus' gradient."""

    params = [common.BACKENDS]
    param_names = ["backend"]
    timeout = 600.0
    case, dtype, first = "softplus", "float32", FIRST

    def setup(self, backend: str) -> None:
        common.require_backend(backend)
        try:
            from rulelab.jaxrun.backend import flushes_subnormals
            from rulelab.model.exhaustive_spec import Spec
            from rulelab.scoring.chunks import prepare, run_chunk
        except ImportError:  # a rulelab before its layer folders, or without an exhaustive sweep
            try:
                from rulelab.evaluate import flushes_subnormals
                from rulelab.exhaustive import Spec, prepare, run_chunk
            except ImportError as exc:
                raise NotImplementedError(f"this rulelab has no exhaustive sweep ({exc})") from None
        import rulelab

        try:  # as every exhaustive chunk runs (a rulelab without it page-faults its freed arrays back in)
            from rulelab.core.malloc import keep_freed_memory
        except ImportError:
            try:
                from rulelab.heap import keep_freed_memory
            except ImportError:
                keep_freed_memory = None
        if keep_freed_memory is not None:
            keep_freed_memory()
        case = rulelab.get_case(self.case)
        spec = Spec(self.case, tuple(case.variants), ("grad",), chunk_bits=CHUNK_BITS, **({"dtype": self.dtype} if self.dtype != "float32" else {}))
        self.run_chunk = run_chunk
        self.setup_ = prepare(spec, backend, flushes=flushes_subnormals(self.dtype, backend))
        self.run_chunk(self.setup_, self.first)  # compiles the program

    def track_points_per_second(self, backend: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            self.run_chunk(self.setup_, self.first)
            best = min(best, time.perf_counter() - start)
        return (1 << CHUNK_BITS) / best

    track_points_per_second.unit = "points/s"


class ExhaustiveLogaddexp16(ExhaustiveSoftplus):
    """Input pairs per second of an exhaustive float16 sweep of logaddexp's gradient."""

    case, dtype, first = "logaddexp", "float16", (0x3C00 << 16) >> CHUNK_BITS  # (pairs whose first argument is 1.0, 1.001, …)

    def setup(self, backend: str) -> None:
        try:
            from rulelab.model.exhaustive_spec import PLAN16  # noqa: F401 - a rulelab with every pair of 16-bit inputs
        except ImportError as exc:
            raise NotImplementedError(f"this rulelab has no exhaustive16 sweep ({exc})") from None
        super().setup(backend)
