"""What colour a result gets: the class of one summary row (its worst bucket, or
unsupported / error / not run), with labels and colours shared by tables and figures."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rulelab.store.vocabulary import Bucket, Status, worst_bucket

BUCKET_COLOURS: Mapping[Bucket, tuple[str, str]] = {
    Bucket.EXACT: ("#b8e0a8", "#000"),
    Bucket.ULP_1: ("#d9efc2", "#000"),
    Bucket.ULP_2_4: ("#fff3a8", "#000"),
    Bucket.ULP_5_1024: ("#fdae61", "#000"),
    Bucket.ULP_GT_1024: ("#f46d43", "#000"),
    Bucket.WRONG_NONFINITE: ("#a50026", "#fff"),
    Bucket.UNEXPECTED_FINITE: ("#762a83", "#fff"),
    Bucket.BOTH_UNDEFINED: ("#eeeeee", "#000"),
    Bucket.UNSETTLED: ("#9ecae1", "#000"),
}
"""(background, text) the matrix paints a cell whose worst points are of each bucket."""

STATUS_COLOURS: Mapping[Status, tuple[str, str]] = {
    Status.OK: ("#ffffff", "#000"),
    Status.UNSUPPORTED: ("#d0d0d0", "#555"),
    Status.ERROR: ("#303030", "#fff"),
    Status.MISSING: ("#ffffff", "#999"),
}
"""(background, text) of a cell by its result's status."""

_CELL_STATUSES = (Status.UNSUPPORTED, Status.ERROR, Status.MISSING)

CLASSES: tuple[str, ...] = (*(b.column for b in Bucket), *(s.value for s in _CELL_STATUSES))
"""Every cell class, best first as the legend shows them: the buckets, then the
statuses of results that have no points (from :mod:`rulelab.store.vocabulary`)."""

CLASS_LABELS: Mapping[str, str] = {**{b.column: b.label for b in Bucket}, **{s.value: s.label for s in _CELL_STATUSES}}

CLASS_COLOURS: Mapping[str, tuple[str, str]] = {**{b.column: BUCKET_COLOURS[b] for b in Bucket}, **{s.value: STATUS_COLOURS[s] for s in _CELL_STATUSES}}
"""(background, text) per class."""

SEVERITY: Mapping[str, int] = {**{b.column: b.severity for b in Bucket}, **{s.value: s.severity for s in _CELL_STATUSES}}
"""Order of badness, for picking the worst of several rows."""

NONFINITE_CLASSES = tuple(b.column for b in Bucket if b.nonfinite)


def row_class(row: Mapping[str, Any]) -> str:
    """The class of one summary row: ``unsupported`` or ``error`` by status, else its
    worst bucket (:func:`rulelab.store.vocabulary.worst_bucket`)."""
    status = str(row.get("status", Status.OK.value) or Status.OK.value)
    if status in (Status.UNSUPPORTED.value, Status.ERROR.value):
        return status
    return worst_bucket({b.column: _count(row.get(b.column)) for b in Bucket}).column


def number(value: Any) -> float:
    """A table cell as a number: missing, NaN or not a number is 0 (a count the run did
    not record counts nothing)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(v) else v


def _count(value: Any) -> int:
    return int(number(value))


def nonfinite_count(row: Mapping[str, Any]) -> int:
    """Points in a non-finite class (wrong non-finite or finite where undefined)."""
    return sum(_count(row.get(b)) for b in NONFINITE_CLASSES)
