"""End-to-end tests of the written report (rulelab.report.build_report) on synthetic
stores: pages exist and link up, images are embedded PNGs, nothing is fetched, and
missing or partial inputs are named with what to run."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import Spec, standard_specs, write_asv, write_run

from rulelab.report import build_report

IMG = re.compile(r'<img src="([^"]*)"')


def pages(out: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out.glob("*.html"))}


def changed_spec(specs: list[Spec]) -> list[Spec]:
    """The standard run with the NaN gradient fixed in float32 (one differing result)."""
    return [replace(s, nan_from=None, ulp=1) if (s.case, s.variant, s.transform, s.dtype) == ("toy", "naive", "grad", "float32") else s for s in specs]


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("full")
    a = write_run(base / "run-a", standard_specs())
    b = write_run(base / "run-b", changed_spec(standard_specs()), started="2026-02-01T00:00:00+00:00")
    asv = write_asv(base, commits=(("a" * 40, 1_700_000_000_000), ("b" * 40, 1_700_100_000_000)))
    index = build_report([a], asv, base / "reports", compare=(a, b))
    assert index == base / "reports" / "index.html"
    return base / "reports"


def test_every_page_is_written_and_linked(full: Path) -> None:
    p = pages(full)
    assert set(p) == {"index.html", "case-toy.html", "case-pair.html", "performance.html", "compare.html"}
    index = p["index.html"]
    for target in ("case-toy.html", "case-pair.html", "performance.html", "compare.html"):
        assert f'href="{target}' in index
    assert 'href="case-toy.html#grad-x"' in index  # matrix cells link to the transform's section
    assert 'id="grad-x"' in p["case-toy.html"]
    assert index.count('<table class="matrix">') == 8  # 4 transforms x 2 dtypes


def test_pages_are_self_contained(full: Path) -> None:
    total = 0
    for name, text in pages(full).items():
        total += len(text)
        assert "<script" not in text.lower(), name
        assert not re.search(r'(src|href)="(https?:)?//', text), name
        assert "<link" not in text, name
        for src in IMG.findall(text):
            assert src.startswith("data:image/png;base64,"), name
            data = base64.b64decode(src.split(",", 1)[1])
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert total < 3_000_000


def test_index_shows_facts_findings_and_classes(full: Path) -> None:
    index = pages(full)["index.html"]
    assert "float32: yes, bfloat16: yes" in index and "0123456789ab" in index
    assert "grad NaN for x \u2265 88.72 in float32" in index
    assert '<td class="wrong_nonfinite" title="toy naive grad x float32 cpu' in index
    assert "Performance</a>: " in index


def test_case_page_sections(full: Path) -> None:
    toy = pages(full)["case-toy.html"]
    assert "not registered in this installation" in toy
    assert toy.count("<img") == 3  # one figure (errors above, values below) each for value, grad and jvp
    assert "worst inputs (grad d/dx)" in toy and "x = 88.72283935546875" in toy
    pair = pages(full)["case-pair.html"]
    section = pair[pair.index('id="grad-y"'):]
    assert section.index("convention:") < section.index("<table")  # the note sits above the numbers it governs
    assert "d/dy = 0 at (0, 0)" in section[: section.index("<table")]
    assert "convention:" not in pair[pair.index('id="grad-x"'): pair.index('id="grad-y"')]


def test_performance_page(full: Path) -> None:
    perf = pages(full)["performance.html"]
    assert "No asv dashboard here yet" in perf and "asv publish" in perf
    assert "bbbbbbbbbbbb" in perf and "aaaaaaaaaaaa" not in perf  # the newest commit's numbers
    assert "2.00\u00d7" in perf and ">failed<" in perf
    assert "Time per call at each commit with results" in perf
    assert "Time, memory and op counts against steps" in perf
    assert perf.count("<img") == 4  # toy time, toy tracks, toy history, newton steps


def test_compare_page_outlines_exactly_the_changed_result(full: Path) -> None:
    compare = pages(full)["compare.html"]
    assert compare.count(" changed\"") == 2  # the A and the B cell of one pair
    assert "<b>1</b> result(s) differ" in compare
    assert "grad in float32 on cpu: 1 changed" in compare and "grad in bfloat16 on cpu: 0 changed" in compare


@pytest.mark.slow
def test_accuracy_without_benchmarks(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    build_report([write_run(tmp_path / "run", standard_specs())], None, out)
    p = pages(out)
    for name in ("index.html", "performance.html"):
        assert "No benchmark results" in p[name] and "asv run --python=same --quick" in p[name]
    assert "compare.html" not in p and 'href="compare.html"' not in p["index.html"]


def test_benchmarks_without_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    build_report([], write_asv(tmp_path), out)
    p = pages(out)
    assert set(p) == {"index.html", "performance.html"}
    assert "No accuracy runs were given" in p["index.html"] and "rulelab sweep" in p["index.html"]
    assert "Time relative to naive" in p["performance.html"]


def test_dashboard_link_when_published(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    (out / "asv").mkdir(parents=True)
    (out / "asv" / "index.html").write_text("<html></html>")
    build_report([], write_asv(tmp_path), out)
    assert 'href="asv/index.html"' in pages(out)["performance.html"]
    assert "No asv dashboard here yet" not in pages(out)["performance.html"]


def test_partial_runs_are_named(tmp_path: Path) -> None:
    running = write_run(tmp_path / "running", [Spec("toy", "naive", "grad", "x")], status="running", skip=("samples",))
    out = tmp_path / "reports"
    build_report([running], None, out)
    p = pages(out)
    assert "is still running" in p["index.html"]
    assert "lacks samples.parquet" in p["index.html"]
    assert "No samples stored for this case" in p["case-toy.html"]


def test_empty_run_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "reports"
    build_report([empty], None, out)
    index = pages(out)["index.html"]
    assert "hold no results yet" in index and "lacks meta.json, summary.parquet" in index


def test_registered_case_shows_formula_and_code(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [Spec("softplus", "naive", "value"), Spec("softplus", "custom_jvp", "grad", "x")])
    out = tmp_path / "reports"
    build_report([run], None, out)
    page = pages(out)["case-softplus.html"]
    assert "log(1 + exp(x))" in page
    assert "jnp.log(1.0 + jnp.exp(x))" in page  # the naive variant's code
    assert "_softplus_jvp_rule" in page  # the custom rule shown beside its function
    assert "not registered" not in page


@pytest.mark.slow
def test_case_pages_drawn_in_workers_match_serial(tmp_path: Path) -> None:
    specs = [Spec(case, "naive", t, "x" if t != "value" else "", ulp=u) for case, u in (("c1", 1), ("c2", 3), ("c3", 9)) for t in ("value", "grad")]
    run = write_run(tmp_path / "run", specs)
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    build_report([run], None, serial, workers=1)
    build_report([run], None, parallel, workers=2)
    assert sorted(p.name for p in parallel.glob("case-*.html")) == ["case-c1.html", "case-c2.html", "case-c3.html"]
    for page in serial.glob("*.html"):
        assert (parallel / page.name).read_bytes() == page.read_bytes(), page.name
