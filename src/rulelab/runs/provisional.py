"""The fast tier in a sampled sweep, end to end: which of a case's points may take a
provisional reference (``reference.tier``), and, once a group is evaluated, mpmath at
the provisional points whose fractional error shows in a table, so that the tables are
those of mpmath alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from rulelab.jaxrun.evaluate import Outcome
from rulelab.model.case import Case
from rulelab.model.inputs import Sweep
from rulelab.model.tasks import Task
from rulelab.reference.compute import uncached
from rulelab.reference.tier import FastFill, frac_margin, usable
from rulelab.scoring.metrics import FlushReference, frac_sensitive, point_errors
from rulelab.scoring.rows import thin
from rulelab.store.vocabulary import Status

Ref = tuple[np.ndarray, np.ndarray]
"""A reference's (hi, lo) at a group's points."""


@dataclass(frozen=True)
class Provisional:
    """Where a group's reference is provisional (positions in its sweep), how far a
    fractional error there may be off (``margin``, ULP of the group's dtype), and where
    the dtype's spacing may change inside the bound (``wide``: off by the fractional
    error itself too)."""

    at: np.ndarray
    margin: float
    wide: np.ndarray

    def margins(self, n: int, frac: np.ndarray) -> np.ndarray:
        """Per point of the group (``n``), how far its fractional error ``frac`` may be off."""
        m = np.zeros(n)
        m[self.at] = self.margin
        m[self.wide] += np.nan_to_num(frac[self.wide], nan=0.0)
        return m


Readers = tuple[Mapping[str, np.ndarray], np.ndarray]
"""Over a case's union of points: per dtype, which points it reads (its points and their
flushed readings); and which points a samples table lists."""


def readers(union: tuple[np.ndarray, ...], sweeps: Mapping[str, Sweep], index: Mapping[str, np.ndarray],
            flush_index: Mapping[str, np.ndarray], samples: int) -> Readers:
    """The :data:`Readers` of a case's union, worked out once for all its references. The
    points a plot samples (``rows.thin``, along each argument) are left to mpmath,
    since the samples table lists their reference."""
    n = len(union[0])
    uses = {}
    exact = np.zeros(n, dtype=bool)
    for d, sweep in sweeps.items():
        u = np.zeros(n, dtype=bool)
        u[index[d]] = True
        u[flush_index[d]] = True
        uses[d] = u
        for x in sweep.points:
            exact[index[d][thin(np.asarray(x).astype(np.float64), samples)]] = True
    return uses, exact


def fill(case: Case, order: int, arg: str, union: tuple[np.ndarray, ...], read: Readers, pool: Executor | None,
         tasks: int) -> FastFill | None:
    """The fast tier's fill for one reference over a case's union of points, or None
    where the case has no usable fast reference for it."""
    return FastFill(case, arg, order, union, *read, pool, tasks) if usable(case, arg, order) else None


@dataclass(frozen=True)
class UnionTier:
    """Where over a case's union of points one reference is provisional (``mask``),
    where the spacing may change inside its bound (``wide``), and each narrow dtype's
    validated ``bounds``."""

    mask: np.ndarray
    wide: np.ndarray
    bounds: Mapping[str, float]

    @classmethod
    def of(cls, provisional: np.ndarray, fill: FastFill | None) -> UnionTier | None:
        """The tier of a reference computed with ``fill`` (None where nothing is provisional)."""
        return cls(provisional, fill.wide & provisional, dict(fill.bounds)) if fill is not None and provisional.any() else None

    def group(self, idx: np.ndarray, dtype: str) -> Provisional | None:
        """The :class:`Provisional` of a group whose points sit at ``idx`` in the union."""
        at = np.flatnonzero(self.mask[idx])
        return Provisional(at, frac_margin(dtype, self.bounds[dtype]), np.flatnonzero(self.wide[idx])) if at.size else None


def settled(case: Case, tasks: Sequence[Task], outcomes: Sequence[Outcome], sweep: Sweep, refs: Mapping[tuple[int, str], Ref],
            provisional: Mapping[tuple[int, str], Provisional], rounded: Mapping[tuple[int, str], tuple[np.ndarray, FlushReference]],
            flushes: bool, k: int, max_precision: int) -> dict[tuple[int, str], Ref]:
    """``refs`` with mpmath's reference at every provisional point whose fractional error
    could change a result's worst points or its largest fractional error
    (``metrics.frac_sensitive``), computed here and not cached (this may be a cluster's
    worker). The dULPs and buckets need nothing: the fast values settled the rounding."""
    out = dict(refs)
    for key, prov in provisional.items():
        need = []
        for t, o in zip(tasks, outcomes):
            if (t.order, t.arg) != key or o.status != Status.OK or o.values is None:
                continue
            ieee, flush = rounded[key]
            e = point_errors(o.values, *refs[key], t.dtype, ieee, flush if flushes else None)
            need.append(frac_sensitive(e, k, prov.margins(len(e.frac), e.frac)))
        at = np.intersect1d(np.concatenate(need), prov.at) if need else prov.at[:0]
        if at.size:
            hi, lo = (a.copy() for a in refs[key])
            hi[at], lo[at] = uncached(case, key[0], key[1] or case.args[0], tuple(np.asarray(x, dtype=np.float64)[at] for x in sweep.points),
                                      max_precision)
            out[key] = (hi, lo)
    return out
