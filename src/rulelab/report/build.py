"""Write the report: the overview, one page per case, the performance page and, given
two runs, their comparison, into one folder of static HTML files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from rulelab import store
from rulelab.core.cachedir import cache_dir
from rulelab.core.files import atomic_write
from rulelab.core.fingerprint import fingerprint
from rulelab.core.processes import kill_pool, process_pool
from rulelab.core.shelf import Shelf
from rulelab.report import figcache, html
from rulelab.report.caseinfo import CaseInfo, case_info
from rulelab.report.findings import Finding, findings, in_order
from rulelab.report.load import RUN, Accuracy, load_accuracy, load_asv
from rulelab.report.pages import (
    Links,
    case_file,
    case_page,
    case_run_notes,
    compare_page,
    index_page,
)
from rulelab.report.performance import bench_summary, performance_page

DASHBOARD = Path("asv") / "index.html"
"""Where ``asv publish`` writes its dashboard, relative to the report folder."""

PARALLEL_FROM = 3
"""Case pages are drawn in worker processes when there are at least this many (each
worker first imports pandas and matplotlib, about a second)."""


def _write(path: Path, text: str) -> None:
    atomic_write(path, text)


def _per_case(acc: Accuracy) -> dict[str, Accuracy]:
    """``acc`` restricted to each of its cases (what a worker process needs), each
    table split once."""
    names = ("summary", "binned", "binned2", "worst", "samples", "blame")
    rows = {n: getattr(acc, n).groupby("case", sort=False).indices for n in names}
    none = np.zeros(0, dtype=np.int64)
    return {c: replace(acc, **{n: getattr(acc, n).iloc[rows[n].get(c, none)] for n in names}) for c in acc.cases()}


def _case_job(job: tuple[Accuracy, str, CaseInfo, bool, Links]) -> tuple[list[Finding], str]:
    acc, case, info, several_backends, links = job
    found = findings(acc, several_backends)
    return found, case_page(acc, case, info, found, links)


PAGES = "pages"
"""The folder of the cache (``$RULELAB_CACHE``) that keeps case pages by their content."""


def _page_key(job: tuple[Accuracy, str, CaseInfo, bool, Links], code: bytes) -> str:
    """What a case page (and its findings) depends on: the report's ``code``, the case's
    rows (without the name of the run they were read from), its description, the links,
    and what the page says of its runs."""
    acc, case, info, several_backends, links = job
    rows = [getattr(acc, name).drop(columns=RUN, errors="ignore") for name in ("summary", "binned", "binned2", "worst", "samples", "blame")]
    return figcache.key(PAGES, (*rows, case, repr(info), several_backends, repr(links), case_run_notes(acc)), {}, code)


def case_pages(acc: Accuracy, links: Links, workers: int | None = None) -> Iterator[tuple[str, list[Finding], str]]:
    """(case, its findings, its page) for every case of ``acc``: from the page cache
    where the same page was made from the same rows by the same code before, else found
    and drawn in ``workers`` processes (default: one per core) when there are several.
    The catalog is read here, so workers never import JAX."""
    cases = acc.cases()
    several_backends = acc.summary["backend"].nunique() > 1
    jobs = {c: (only, c, case_info(c), several_backends, links) for c, only in _per_case(acc).items()}
    shelf, code = Shelf(cache_dir() / PAGES), fingerprint(_case_job).encode()
    keys = {c: _page_key(job, code) for c, job in jobs.items()}
    made = {c: kept for c in cases if (kept := shelf.load(keys[c])) is not None}
    todo = [jobs[c] for c in cases if c not in made]
    workers = min(workers or os.cpu_count() or 1, len(todo))
    pool = process_pool(workers, "spawn") if workers >= 2 and len(todo) >= PARALLEL_FROM else None
    try:
        # the largest cases first, so that the workers finish together
        futures = {job[1]: pool.submit(_case_job, job) for job in sorted(todo, key=lambda j: -len(j[0].binned))} if pool else {}
        for case in cases:
            if case not in made:
                made[case] = futures[case].result() if pool else _case_job(jobs[case])
                with contextlib.suppress(OSError):  # an unwritable cache only costs the drawing
                    shelf.save(keys[case], made[case])
            yield (case, *made[case])
    except BaseException:  # an interrupt or a failed page: the queued pages are not waited for
        if pool:
            kill_pool(pool)
        raise
    if pool:
        pool.shutdown(wait=True)


def study_timings(runs: Sequence[Path]) -> pd.DataFrame | None:
    """The in-process timings ``rulelab study`` left in the runs, if any."""
    frames = [t for t in map(store.load_timings, runs) if t is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def build_report(runs: Sequence[Path], asv_dir: Path | None, out: Path, compare: tuple[Path, Path] | None = None, *, workers: int | None = None) -> Path:
    """Write the report for accuracy ``runs`` (run folders, e.g. one per backend) and
    the asv results in ``asv_dir`` into ``out``; with ``compare`` = (run A, run B) also
    ``compare.html`` (and, when no runs are given, the overview of run B). Any input
    may be missing: the pages then say what is absent and how to produce it.
    ``workers``: processes drawing case pages (default: one per core). Returns the
    path of ``index.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [Path(r) for r in runs]
    if not runs and compare is not None:
        runs = [Path(compare[1])]
    acc = load_accuracy(runs)
    bench = load_asv(asv_dir, out / DASHBOARD.parent)
    links = Links(performance=True, compare=compare is not None, dashboard=DASHBOARD.as_posix() if bench.dashboard else "")
    timings = study_timings(runs)
    bench_note = bench_summary(bench)
    if timings is not None:
        bench_note += f"<p>Quick in-process timings of every variant: {html.link('performance.html', 'performance page')}.</p>"
    found: list[Finding] = []
    for case, case_found, text in case_pages(acc, links, workers):
        found += case_found
        _write(out / case_file(case), text)
    _write(out / "index.html", index_page(acc, in_order(found, acc.cases()), links, bench_note, timings))
    _write(out / "performance.html", performance_page(bench, links, case_pages=set(acc.cases()), timings=timings))
    if compare is not None:
        a, b = load_accuracy([Path(compare[0])]), load_accuracy([Path(compare[1])])
        _write(out / "compare.html", compare_page(a, b, findings(a), findings(b), links))
    return out / "index.html"
