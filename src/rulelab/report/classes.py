"""What colour a result gets: the class of one summary row (its worst bucket, or
unsupported / error / not run), with labels and colours shared by tables and figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rulelab.metrics import BUCKETS, worst_bucket

CLASSES: tuple[str, ...] = (*BUCKETS, "unsupported", "error", "missing")
"""Every cell class, best first as the legend shows them. The bucket names are those of
:data:`rulelab.metrics.BUCKETS`."""

CLASS_LABELS: Mapping[str, str] = {
    "exact": "exact (0 ULP)",
    "ulp_1": "1 ULP",
    "ulp_2_4": "2-4 ULP",
    "ulp_5_1024": "5-1024 ULP",
    "ulp_gt_1024": "> 1024 ULP",
    "wrong_nonfinite": "wrong non-finite",
    "unexpected_finite": "finite where undefined",
    "both_undefined": "undefined (both NaN)",
    "unsettled": "reference unsettled (not scored)",
    "unsupported": "unsupported",
    "error": "error",
    "missing": "not run",
}

CLASS_COLOURS: Mapping[str, tuple[str, str]] = {
    "exact": ("#b8e0a8", "#000"),
    "ulp_1": ("#d9efc2", "#000"),
    "ulp_2_4": ("#fff3a8", "#000"),
    "ulp_5_1024": ("#fdae61", "#000"),
    "ulp_gt_1024": ("#f46d43", "#000"),
    "wrong_nonfinite": ("#a50026", "#fff"),
    "unexpected_finite": ("#762a83", "#fff"),
    "both_undefined": ("#eeeeee", "#000"),
    "unsettled": ("#9ecae1", "#000"),
    "unsupported": ("#d0d0d0", "#555"),
    "error": ("#303030", "#fff"),
    "missing": ("#ffffff", "#999"),
}
"""(background, text) per class."""

SEVERITY: Mapping[str, int] = {
    name: i
    for i, name in enumerate(
        ("missing", "unsupported", "both_undefined", "unsettled", "exact", "ulp_1", "ulp_2_4", "ulp_5_1024", "ulp_gt_1024", "unexpected_finite", "wrong_nonfinite", "error")
    )
}
"""Order of badness, for picking the worst of several rows."""

NONFINITE_CLASSES = ("wrong_nonfinite", "unexpected_finite")


def row_class(row: Mapping[str, Any]) -> str:
    """The class of one summary row: ``unsupported`` or ``error`` by status, else its
    worst bucket (:func:`rulelab.metrics.worst_bucket`)."""
    status = str(row.get("status", "ok") or "ok")
    if status in ("unsupported", "error"):
        return status
    counts = {b: _count(row.get(b)) for b in BUCKETS}
    return worst_bucket(counts)


def _count(value: Any) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0
    return 0 if math.isnan(v) else int(v)


def nonfinite_count(row: Mapping[str, Any]) -> int:
    """Points in a non-finite class (wrong non-finite or finite where undefined)."""
    return sum(_count(row.get(b)) for b in NONFINITE_CLASSES)
