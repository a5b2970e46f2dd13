"""The verdict: per case and dtype, which variant to use and which fail there.

A person opening the report asks "which rule should I use, and which is broken"; the
matrix answers it only cell by cell. Here each case and dtype gets one line: the most
accurate variant on the headline (no non-finite results first, then the smallest worst
max dULP over every transform and argument), ties broken by the cheapest in the study
timings; and the variants that fail there (non-finite results, over 1024 ULP, an error,
or a transform they cannot do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rulelab.report.styles import SEVERITY, nonfinite_count, row_class
from rulelab.report.tables import DTYPE_ORDER, fmt_ulp, ordered, variant_order
from rulelab.store.vocabulary import Bucket, Status

FAIL_ULP = 1024
"""A variant whose worst max dULP is above this fails there (the >1024 ULP bucket)."""


@dataclass(frozen=True)
class Standing:
    """One variant's record for one case and dtype, over every transform and argument."""

    variant: str
    max_ulp: float
    nonfinite: int
    problems: tuple[str, ...]
    ratio: float

    @property
    def fails(self) -> bool:
        return bool(self.problems) or self.nonfinite > 0 or self.max_ulp > FAIL_ULP

    def key(self) -> tuple[Any, ...]:
        """Best first: runs everywhere, no non-finite result, smallest max dULP, cheapest."""
        ulp = self.max_ulp if not math.isnan(self.max_ulp) else math.inf
        ratio = self.ratio if not math.isnan(self.ratio) else math.inf
        return (bool(self.problems), self.nonfinite > 0, ulp, ratio)


def _ratios(timings: pd.DataFrame | None) -> Mapping[tuple[str, str], float]:
    """Mean time per call relative to naive, per (case, variant), from study timings."""
    if timings is None or timings.empty or "ratio_to_naive" not in timings:
        return {}
    ok = timings[timings["status"] == Status.OK.value]
    return ok.groupby(["case", "variant"])["ratio_to_naive"].mean().to_dict()


def standings(rows: pd.DataFrame, ratios: Mapping[tuple[str, str], float]) -> list[Standing]:
    """Each variant's standing from its summary rows (one case, one dtype, one backend)."""
    out = []
    for variant in variant_order(rows):
        sel = rows[rows["variant"] == variant].to_dict("records")
        problems = tuple(dict.fromkeys(f"{r['transform']}: {r['status']}" for r in sel if r["status"] != Status.OK.value))
        ulps = [float(r["max_ulp"]) for r in sel if r["status"] == Status.OK.value and not pd.isna(r["max_ulp"])]
        case = sel[0]["case"] if sel else ""
        out.append(Standing(variant, max(ulps) if ulps else math.nan, sum(nonfinite_count(r) for r in sel), problems, ratios.get((case, variant), math.nan)))
    return out


def verdict_table(summary: pd.DataFrame, timings: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per case, dtype (and backend, when several): the variant to use, its max
    dULP, its non-finite count, its time per call relative to naive, and the variants
    that fail there. Columns carry plain values; ``use_class`` the colour class of the
    chosen variant's worst result."""
    ratios = _ratios(timings)
    multi_backend = summary["backend"].nunique() > 1
    records = []
    for case in dict.fromkeys(summary["case"]):
        sel_c = summary[summary["case"] == case]
        for dtype in ordered(sel_c["dtype"], DTYPE_ORDER):
            sel_d = sel_c[sel_c["dtype"] == dtype]
            for backend in dict.fromkeys(sel_d["backend"]):
                rows = sel_d[sel_d["backend"] == backend]
                ranked = sorted(standings(rows, ratios), key=Standing.key)
                if not ranked:
                    continue
                best = ranked[0]
                best_rows = rows[rows["variant"] == best.variant].to_dict("records")
                worst_class = max((row_class(r) for r in best_rows), key=lambda c: SEVERITY.get(c, 0), default=Bucket.EXACT.column)
                failing = [s for s in ranked if s.fails]
                records.append({
                    "case": case,
                    "dtype": dtype + (f" ({backend})" if multi_backend else ""),
                    "use": best.variant if not best.fails else f"{best.variant} (none passes)",
                    "max dULP": fmt_ulp(best.max_ulp),
                    "non-finite": best.nonfinite,
                    "time vs naive": "" if math.isnan(best.ratio) else f"{best.ratio:.2f}x",
                    "fail here": ", ".join(_why(s) for s in failing) or "none",
                    "use_class": worst_class,
                })
    return pd.DataFrame(records)


def _why(s: Standing) -> str:
    reasons = list(s.problems)
    if s.nonfinite:
        reasons.append(f"{s.nonfinite} non-finite")
    if s.max_ulp > FAIL_ULP:
        reasons.append(f"{fmt_ulp(s.max_ulp)} ULP")
    return f"{s.variant} ({'; '.join(reasons)})"

