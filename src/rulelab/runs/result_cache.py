"""The cache of measured results: what one group (a case x dtype program) measured, what
blame found at its worst inputs, and what the timings measured, kept so that a re-run
skips tracing, compiling and evaluating what has not changed. Checked, not trusted.

The pitfall is a stale hit: a table served after something it depends on changed is
exactly the kind of wrong number this project exists to remove. So an entry's key covers
everything its numbers depend on that can be known without running anything:

- the code: a fingerprint (``core.fingerprint``: everything reachable) of each variant,
  of the case's reference, and of rulelab's own code that evaluates and scores;
- the versions of Python and of every library a result depends on, and the environment
  variables that configure XLA and JAX (``XLA_*``, ``JAX_*``, ``LIBTPU_*``);
- the backend asked for, and the facts of the backend that ran (platform, device kind,
  flushing per dtype, jax and jaxlib): each set of facts has its own folder;
- the inputs: the bits of the points, of the reference at them and of its roundings.

A key can still miss something (a library patched in place, a flag set from code), so
every run re-evaluates a random sample of its hits, each with probability
1/:data:`CHECK_EVERY` and at least one, and compares the tables bit for bit (timing
columns aside). One difference discards every entry of that backend, says so in one
line, and the run recomputes what it had served. ``--no-cache`` or
``RULELAB_NO_CACHE=1`` measures everything and keeps nothing.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rulelab.core.cachedir import cache_dir
from rulelab.core.provenance import versions
from rulelab.core.shelf import Shelf, digest
from rulelab.store.vocabulary import SCHEMA_VERSION, TIMING_COLUMNS

FORMAT = 1
"""Raised whenever what an entry holds changes (part of every key)."""
CHECK_EVERY = 16
"""Each hit is re-evaluated and compared with probability 1/CHECK_EVERY (and at least
one hit per run)."""
NO_CACHE_ENV = "RULELAB_NO_CACHE"
KINDS = ("groups", "blame", "timings")
"""The entries kept per backend: group tables, blame rows, timing rows."""


def enabled(wanted: bool = True) -> bool:
    """Whether the cache is used: ``wanted`` (False under ``--no-cache``) and
    ``RULELAB_NO_CACHE`` unset, empty or 0."""
    return wanted and os.environ.get(NO_CACHE_ENV, "").strip() in ("", "0")


def environment() -> list[tuple[str, str]]:
    """The environment variables that configure XLA and JAX, sorted."""
    return sorted((k, v) for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_", "LIBTPU_")))


def settings_key(backend: str | None, code: str) -> str:
    """What every key of one run shares: the entry format, the results schema, the
    versions, the XLA and JAX environment, the backend asked for and ``code`` (a
    fingerprint of the code that measures)."""
    return digest(FORMAT, SCHEMA_VERSION, sorted(versions().items()), environment(), backend, code)


def shelf(kind: str, facts: Mapping[str, Any]) -> Shelf:
    """The entries of ``kind`` (one of :data:`KINDS`) computed under backend ``facts``."""
    assert kind in KINDS, kind
    return Shelf(_backend_folder(facts) / kind)


def _backend_folder(facts: Mapping[str, Any]) -> Path:
    described = json.dumps(facts, sort_keys=True, default=str)
    return cache_dir() / "results" / f"{facts.get('backend', 'backend')}-{digest(described)[:16]}"


def discard(facts: Mapping[str, Any]) -> None:
    """Remove every entry computed under backend ``facts``."""
    for kind in KINDS:
        shelf(kind, facts).discard()


def choose_checks(hits: Collection[int], rng: random.Random | None = None) -> set[int]:
    """Which hits are re-evaluated: each with probability 1/CHECK_EVERY, at least one."""
    if not hits:
        return set()
    rng = rng or random.Random()
    ordered = sorted(hits)
    chosen = {i for i in ordered if rng.random() < 1 / CHECK_EVERY}
    return chosen or {rng.choice(ordered)}


def _same(a: Any, b: Any) -> bool:
    """Bit for bit: arrays by dtype, shape and bytes; sequences element by element (NaN
    equals NaN)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "O" or b.dtype.kind == "O":
            return a.shape == b.shape and all(_same(x, y) for x, y in zip(a.tolist(), b.tolist()))
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def table_difference(cached: Mapping[str, Mapping[str, Any]], fresh: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Where two sets of tables (table -> column -> values) differ, timing columns aside;
    None where they are the same bit for bit."""
    for table in sorted(set(cached) | set(fresh)):
        a, b = cached.get(table, {}), fresh.get(table, {})
        for col in sorted(set(a) | set(b)):
            if col in TIMING_COLUMNS:
                continue
            if col not in a or col not in b or not _same(a[col], b[col]):
                return f"{table} column {col!r}"
    return None


def rows_difference(cached: Iterable[Mapping[str, Any]], fresh: Iterable[Mapping[str, Any]]) -> str | None:
    """Where two lists of rows differ (bit for bit, timing columns aside); None where they do not."""
    cached, fresh = list(cached), list(fresh)
    if len(cached) != len(fresh):
        return f"{len(cached)} rows cached, {len(fresh)} now"
    for i, (a, b) in enumerate(zip(cached, fresh)):
        where = table_difference({"row": a}, {"row": b})
        if where:
            return f"{where.replace('row column', 'column')} of row {i}"
    return None


def summary_line(what: str, where: str, facts: Mapping[str, Any]) -> str:
    """The one line a failed check prints."""
    return (f"result cache: the cached {what} differs from its re-evaluation ({where}); every cached result of backend "
            f"{facts.get('backend')} ({facts.get('device_kind')}) is discarded and recomputed")


def inputs_digest(objects: Sequence[Any]) -> bytes:
    """A digest of arrays and plain data (points, references, roundings) by their bits."""
    return bytes.fromhex(digest(*(pickle.dumps(o, protocol=4) for o in objects)))


class Use:
    """One run's use of the entries of one kind: ``keys[i]`` is item ``i``'s key (None:
    an item that is always computed and never kept).
    :meth:`begin` serves the hits it does not check; every item computed is handed to
    :meth:`record`, which compares a checked one with its entry and stores the others."""

    def __init__(self, kind: str, keys: Sequence[str | None], differ: Any, rng: random.Random | None = None) -> None:
        self.kind, self.keys, self.differ, self.rng = kind, list(keys), differ, rng
        self.shelf: Shelf | None = None
        self.facts: Mapping[str, Any] = {}
        self.served: set[int] = set()
        self.checks: set[int] = set()
        self.held: dict[int, Any] = {}
        self.fresh: dict[int, Any] = {}
        self.mismatch: str | None = None

    def begin(self, facts: Mapping[str, Any]) -> dict[int, Any]:
        """The entries served (hits not chosen for a check) under backend ``facts``."""
        self.facts, self.shelf = facts, shelf(self.kind, facts)
        hits = {i: e for i, k in enumerate(self.keys) if k is not None and (e := self.shelf.load(k)) is not None}
        self.checks = choose_checks(hits, self.rng)
        self.held = {i: hits[i] for i in self.checks}
        served = {i: e for i, e in hits.items() if i not in self.checks}
        self.served = set(served)
        return served

    def record(self, i: int, value: Any, what: str) -> None:
        """Item ``i`` as computed now (``what`` names it in the message of a difference)."""
        if self.checks:
            self.fresh[i] = value
        if i in self.held:
            where = self.differ(self.held.pop(i), value)
            if where and self.mismatch is None:
                self.mismatch = summary_line(f"{self.kind} entry of {what}", where, self.facts)
        elif self.mismatch is None:
            self._save(i, value)

    def recover(self) -> set[int]:
        """After a mismatch: discard every entry of this backend, keep what this run
        computed, and return the items that were served (to be computed again)."""
        discard(self.facts)
        for i, value in self.fresh.items():
            self._save(i, value)
        redo, self.served = self.served, set()
        return redo

    def _save(self, i: int, value: Any) -> None:
        key = self.keys[i]
        if key is not None and self.shelf is not None:
            self.shelf.save(key, value)

    def stats(self) -> dict[str, Any]:
        """Items, served, checked, and the difference found (or None), for the run's record."""
        return {"items": len(self.keys), "served": len(self.served), "checked": len(self.checks), "mismatch": self.mismatch}


def measured_difference(cached: Sequence[Any], fresh: Sequence[Any]) -> str | None:
    """Where two groups' measurements ((task key, tables, info) per task) differ, timing
    columns and info aside; None where they are the same bit for bit."""
    if [tuple(k) for k, _, _ in cached] != [tuple(k) for k, _, _ in fresh]:
        return "its tasks"
    for (key, a, _), (_, b, _) in zip(cached, fresh):
        where = table_difference(a, b)
        if where:
            return f"{'/'.join(key)}, {where}"
    return None
