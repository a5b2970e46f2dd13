"""The written pages in a real browser: headless Chromium opens the overview, a case
page and the performance page from disk; every image must decode, the matrix must be
there, nothing may be fetched and nothing may reach the console.

A copy of each page gets a small checking script (the report itself has none), which
writes what it finds into the DOM that ``--dump-dom`` prints.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import standard_specs, write_asv, write_run

from rulelab.report import build_report

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless browser check needs Chromium at /usr/bin/chromium (Debian: apt-get install -y chromium)",
)

CHECK = r"""<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || "error").slice(0, 200)), true);
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { window.__errors.push(level + ": " + args.join(" ")); original.apply(console, args); };
}
window.addEventListener("load", () => {
  const images = Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight, i.complete]);
  const resources = performance.getEntriesByType("resource").map(r => r.name.slice(0, 80));
  const external = Array.from(document.querySelectorAll("[src], [href]")).map(e => e.getAttribute("src") || e.getAttribute("href")).filter(u => /^([a-z]+:)?\/\//i.test(u));
  const out = document.createElement("pre");
  out.id = "__check";
  out.textContent = JSON.stringify({images, resources, external, errors: window.__errors, matrices: document.querySelectorAll("table.matrix").length, tables: document.querySelectorAll("table").length, verdict: Array.from(document.querySelectorAll("table.verdict tbody th a")).map(a => a.textContent)});
  document.body.appendChild(out);
});
</script>"""

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-default-apps", "--enable-logging=stderr", "--v=0",
)


def open_in_browser(page: Path, workdir: Path) -> tuple[dict, list[str]]:
    """Load ``page`` (a checked copy) in headless Chromium; the check's findings and the
    console lines Chromium logged."""
    checked = workdir / f"checked-{page.name}"
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    checked.write_text(text.replace("<head>", "<head>" + CHECK, 1), encoding="utf-8")
    proc = subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={workdir / 'profile'}", "--dump-dom", checked.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r'<pre id="__check">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the page did not finish loading (rc {proc.returncode}): {proc.stderr[-2000:]}"
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("browser")
    run = write_run(base / "run", standard_specs())
    return build_report([run], write_asv(base), base / "reports").parent


@pytest.mark.parametrize(("name", "matrices", "images"), [("index.html", 8, 0), ("case-toy.html", 1, 3), ("performance.html", 1, 3)])
def test_page_loads_cleanly(report: Path, tmp_path: Path, name: str, matrices: int, images: int) -> None:
    result, console = open_in_browser(report / name, tmp_path)
    assert result["matrices"] >= matrices and result["tables"] >= matrices
    assert len(result["images"]) == images
    assert all(w > 0 and h > 0 and complete for w, h, complete in result["images"]), result["images"]
    assert result["resources"] == [] and result["external"] == [], "the page fetches something"
    assert result["errors"] == [] and console == []


def test_the_overview_opens_with_a_verdict_row_per_case(report: Path, tmp_path: Path) -> None:
    result, _ = open_in_browser(report / "index.html", tmp_path)
    assert sorted(result["verdict"]) == ["pair", "toy"]
    text = (report / "index.html").read_text(encoding="utf-8")
    assert text.index('class="verdict"') < text.index('class="matrix"'), "the verdict comes before the matrix"


def test_the_check_sees_broken_images_and_errors(tmp_path: Path) -> None:
    """The check itself can fail: undecodable and missing images, an external URL."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><title>t</title></head><body><table class="matrix"></table>'
                    '<img src="data:image/png;base64,AAAA"><img src="missing.png"><a href="https://example.invalid/">x</a></body></html>')
    result, _ = open_in_browser(page, tmp_path)
    assert [w for w, _, _ in result["images"]] == [0, 0]
    assert len(result["errors"]) == 2 and any("missing.png" in e for e in result["errors"])
    assert result["external"] == ["https://example.invalid/"]
