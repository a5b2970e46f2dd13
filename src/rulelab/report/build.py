"""Write the report: the overview, one page per case, the performance page and, given
two runs, their comparison, into one folder of static HTML files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rulelab.report.caseinfo import case_info
from rulelab.report.findings import findings
from rulelab.report.load import load_accuracy, load_asv
from rulelab.report.pages import Links, case_file, case_page, compare_page, index_page
from rulelab.report.performance import bench_summary, performance_page

DASHBOARD = Path("asv") / "index.html"
"""Where ``asv publish`` writes its dashboard, relative to the report folder."""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build_report(runs: Sequence[Path], asv_dir: Path | None, out: Path, compare: tuple[Path, Path] | None = None) -> Path:
    """Write the report for accuracy ``runs`` (run folders, e.g. one per backend) and
    the asv results in ``asv_dir`` into ``out``; with ``compare`` = (run A, run B) also
    ``compare.html``. Any input may be missing: the pages then say what is absent and how
    to produce it. Returns the path of ``index.html``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [Path(r) for r in runs]
    if not runs and compare is not None:
        runs = [Path(compare[1])]
    acc = load_accuracy(runs)
    bench = load_asv(asv_dir, out / DASHBOARD.parent)
    links = Links(performance=True, compare=compare is not None, dashboard=DASHBOARD.as_posix() if bench.dashboard else "")
    found = findings(acc)
    cases = acc.cases()
    _write(out / "index.html", index_page(acc, found, links, bench_summary(bench)))
    for case in cases:
        _write(out / case_file(case), case_page(acc, case, case_info(case), found, links))
    _write(out / "performance.html", performance_page(bench, links, case_pages=set(cases)))
    if compare is not None:
        a, b = load_accuracy([Path(compare[0])]), load_accuracy([Path(compare[1])])
        _write(out / "compare.html", compare_page(a, b, findings(a), findings(b), links))
    return out / "index.html"
