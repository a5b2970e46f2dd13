"""rulelab from Python: a sweep as a function call, its run as DataFrames.

The same run as ``rulelab sweep`` (the same store, so ``rulelab sweep --resume`` and
``rulelab report`` work on it), for a test, a notebook or a script. A run is read only
through the store, so a :class:`Run` loaded from a folder another process wrote is the
same as the one a sweep returned.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rulelab import store
from rulelab.model.case import Case, CaseError, get_case, register, unregister
from rulelab.model.modules import load_modules
from rulelab.model.plan import load_plan, with_overrides
from rulelab.report import pages
from rulelab.report.build import build_report
from rulelab.report.load import load_accuracy
from rulelab.report.verdict import verdict_table
from rulelab.runs import sampled
from rulelab.runs.executors import Options
from rulelab.store.vocabulary import RunMeta


@dataclass(frozen=True)
class Run:
    """One accuracy run folder and its tables (read from the store on each access)."""

    path: Path

    @property
    def meta(self) -> RunMeta:
        """The run's meta.json: plan, backend facts, status, timings."""
        return store.read_meta(self.path)

    @property
    def summary(self) -> pd.DataFrame:
        """One row per result: status, max and median dULP, counts per bucket."""
        return store.load_table(self.path, "summary")

    @property
    def binned(self) -> pd.DataFrame:
        """One row per result, sign and binade."""
        return store.load_table(self.path, "binned")

    @property
    def worst(self) -> pd.DataFrame:
        """The worst inputs of each result with computed value and reference."""
        return store.load_table(self.path, "worst")

    @property
    def samples(self) -> pd.DataFrame:
        """Points spread over each result's sweep, to plot against the reference."""
        return store.load_table(self.path, "samples")

    @property
    def blame(self) -> pd.DataFrame:
        """Where the failing results lose their digits (operation, source line, cause)."""
        return store.load_blame(self.path)

    def verdict(self) -> pd.DataFrame:
        """Per case and dtype: the variant to use and the variants that fail there."""
        return verdict_table(load_accuracy([self.path]).summary, store.load_timings(self.path))

    def report(self, path: str | Path) -> Path:
        """Write the HTML report of this run into the folder ``path``; its index page."""
        return build_report([self.path], None, Path(path))

    def _repr_html_(self) -> str:
        return pages.inline_view(load_accuracy([self.path]), store.load_timings(self.path))

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def load_run(path: str | Path) -> Run:
    """The run in folder ``path``, or the newest complete run under a results root."""
    return Run(store.complete_run(path))


def sweep(
    cases: str | Case | Sequence[str | Case],
    plan: str = "quick",
    *,
    variants: Sequence[str] | None = None,
    transforms: Sequence[str] | None = None,
    dtypes: Sequence[str] | None = None,
    module: str | Sequence[str] | None = None,
    results: str | Path | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> Run:
    """Sweep ``cases`` (names, or :class:`Case` objects, registered for the sweep only)
    under ``plan`` (a plan's name or TOML path), narrowed to ``variants``,
    ``transforms`` and ``dtypes`` where given; ``module`` files or modules add cases
    first. The run goes into ``results`` (a temporary folder when None)."""
    given = [cases] if isinstance(cases, (str, Case)) else list(cases)
    modules = [module] if isinstance(module, str) else list(module or ())
    load_modules(modules)
    with registered([c for c in given if isinstance(c, Case)]):
        names = [c.name if isinstance(c, Case) else c for c in given]
        chosen = with_overrides(load_plan(plan), names, variants, transforms, dtypes)
        root = Path(results) if results is not None else Path(tempfile.mkdtemp(prefix="rulelab-"))
        return Run(sampled.start(chosen, root, modules, Options(workers=workers, progress=progress)))


@contextlib.contextmanager
def registered(cases: Sequence[Case]) -> Iterator[None]:
    """``cases`` in the catalog for the block, and gone after it (a case of that name
    already registered is put back)."""
    before = {}
    for c in cases:
        with contextlib.suppress(CaseError):
            before[c.name] = get_case(c.name)
        register(c, replace=True)
    try:
        yield
    finally:
        for c in cases:
            unregister(c.name)
            if c.name in before:
                register(before[c.name], replace=True)
