"""What an exhaustive sweep covers: every finite float32 input of a case of one argument
(``rulelab sweep exhaustive32``) or every pair of finite 16-bit inputs of a case of two
(``rulelab sweep exhaustive16``); its variants and transforms, and which chunks of
consecutive bit patterns (all of them, or those of some binades)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rulelab.core.errors import UsageError
from rulelab.model.case import get_case
from rulelab.model.tasks import Task

PLAN = "exhaustive32"
"""The plan name that asks for every float32 input of a case of one argument."""
PLAN16 = "exhaustive16"
"""The plan name that asks for every pair of 16-bit inputs of a case of two arguments."""
PLANS = (PLAN, PLAN16)
DTYPES16 = ("bfloat16", "float16")
"""The dtypes ``exhaustive16`` sweeps."""
CHUNK_BITS = 22
"""log2 of the bit patterns per chunk: 4M points, a few hundred MB at most in flight."""
CHUNKS_DIR = "chunks"
MAX_EXPONENT = 254
"""The largest biased float32 exponent of finite values (255 is inf and NaN)."""


class ExhaustiveError(UsageError):
    """The exhaustive sweep cannot run as asked (a case of the wrong arity, no fast reference …)."""


def plan_of(dtype: str) -> str:
    """The exhaustive plan that sweeps ``dtype``."""
    return PLAN if dtype == "float32" else PLAN16


@dataclass(frozen=True)
class Spec:
    """What one exhaustive run covers: the case's ``variants`` under ``transforms`` (a
    derivative in each argument) in ``dtype`` over chunks ``chunks`` of ``chunk_bits``
    bit patterns each (all of them by default; fewer for a run over some binades). A
    bit pattern is one float32, or two 16-bit values side by side."""

    case: str
    variants: tuple[str, ...]
    transforms: tuple[str, ...]
    chunk_bits: int = CHUNK_BITS
    chunks: tuple[int, ...] = ()
    dtype: str = "float32"

    @property
    def plan(self) -> str:
        return plan_of(self.dtype)

    @property
    def args(self) -> tuple[str, ...]:
        return get_case(self.case).args

    @property
    def tasks(self) -> list[Task]:
        return [Task(self.case, v, t, a, self.dtype) for v in self.variants for t in self.transforms
                for a in ([""] if t == "value" else self.args)]

    @property
    def chunk_list(self) -> tuple[int, ...]:
        return self.chunks or tuple(range(1 << (32 - self.chunk_bits)))

    @classmethod
    def from_dict(cls, plan: Mapping[str, Any]) -> Spec:
        """The spec a run recorded with :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in plan.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.plan, "case": self.case, "variants": list(self.variants), "transforms": list(self.transforms),
                "chunk_bits": self.chunk_bits, "chunks": list(self.chunks), "dtype": self.dtype, "dtypes": [self.dtype],
                "cases": [self.case]}


def chunks_of_binades(lo: int, hi: int, chunk_bits: int = CHUNK_BITS) -> tuple[int, ...]:
    """The chunks holding every float32 of both signs whose biased exponent field lies in
    [lo, hi] (a run over those binades: 1 to 254 are the normal binades, 0 the
    subnormals and zeros). ExhaustiveError for exponents outside [0, 254] (255 holds
    inf and NaN) or LO > HI."""
    if not (0 <= lo <= hi <= MAX_EXPONENT):
        raise ExhaustiveError(
            f"--exponents {lo} {hi}: give biased float32 exponents LO <= HI from 0 (subnormals and zeros) to {MAX_EXPONENT} "
            "(the largest finite binade; 127 is [1, 2))"
        )
    per = 1 << (23 - chunk_bits) if chunk_bits <= 23 else None
    if per is None:
        raise ExhaustiveError("chunks of more than 2^23 bit patterns do not follow binades")
    out = []
    for sign in (0, 1):
        for e in range(lo, hi + 1):
            first = ((sign << 31) | (e << 23)) >> chunk_bits
            out.extend(range(first, first + per))
    return tuple(sorted(out))
