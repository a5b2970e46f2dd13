"""HTML building blocks: escaping, the page frame and its stylesheet, tables of cells,
embedded images.

Pages are static and self-contained: one inline stylesheet, images as base64 PNG data
URIs, no scripts, nothing fetched. Tables are rendered here (not with pandas' Styler)
so every cell carries exactly the class the report assigns it, and no template engine
is needed.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from rulelab.report.styles import CLASS_COLOURS, CLASS_LABELS, CLASSES


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, CSS classes, a tooltip and an optional link."""

    text: str
    cls: str = ""
    title: str = ""
    href: str = ""


def esc(text: Any) -> str:
    """``text`` escaped for HTML content and attribute values."""
    return html.escape(str(text), quote=True)


def fmt_value(value: Any) -> str:
    """A plain table value as short text: integers without decimals, floats to four
    significant digits, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, float) or hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f":
        v = float(value)
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}"
    return str(value)


def _cell_html(value: Any, tag: str = "td") -> str:
    if isinstance(value, Cell):
        attrs = f' class="{esc(value.cls)}"' if value.cls else ""
        if value.title:
            attrs += f' title="{esc(value.title)}"'
        text = esc(value.text)
        if value.href:
            text = f'<a href="{esc(value.href)}">{text}</a>'
        return f"<{tag}{attrs}>{text}</{tag}>"
    return f"<{tag}>{esc(fmt_value(value))}</{tag}>"


def table(df: pd.DataFrame, *, cls: str = "", index: bool = True, caption: str = "") -> str:
    """``df`` as an HTML table. Values may be :class:`Cell` or plain scalars. A
    two-level column index becomes two header rows; repeated leading index labels are
    left blank so groups read as groups."""
    out = [f'<table class="{esc(cls)}">' if cls else "<table>"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    index_names = [n if n is not None else "" for n in df.index.names] if index else []
    out.append("<thead>")
    if isinstance(df.columns, pd.MultiIndex) and df.columns.nlevels == 2:
        top = ["<tr>"] + ['<th rowspan="2">' + esc(n) + "</th>" for n in index_names]
        for label, span in _runs([c[0] for c in df.columns]):
            top.append(f'<th colspan="{span}">{esc(label)}</th>')
        top.append("</tr>")
        out.append("".join(top))
        out.append("<tr>" + "".join(f"<th>{esc(c[1])}</th>" for c in df.columns) + "</tr>")
    else:
        cols = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in df.columns]
        out.append("<tr>" + "".join(f"<th>{esc(n)}</th>" for n in index_names) + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
    out.append("</thead><tbody>")
    previous: tuple[Any, ...] = ()
    for key, row in zip(df.index, df.itertuples(index=False, name=None)):
        parts = ["<tr>"]
        if index:
            labels = key if isinstance(key, tuple) else (key,)
            for i, label in enumerate(labels):
                same = len(previous) > i and previous[: i + 1] == labels[: i + 1] and i < len(labels) - 1
                parts.append(_cell_html(Cell("") if same else label, "th"))
            previous = labels
        parts.extend(_cell_html(v) for v in row)
        parts.append("</tr>")
        out.append("".join(parts))
    out.append("</tbody></table>")
    return "\n".join(out)


def _runs(labels: Sequence[Any]) -> list[tuple[Any, int]]:
    runs: list[tuple[Any, int]] = []
    for label in labels:
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1] + 1)
        else:
            runs.append((label, 1))
    return runs


def img(png: bytes, alt: str, *, caption: str = "") -> str:
    """A PNG embedded as a data URI, with alt text and an optional caption."""
    data = base64.b64encode(png).decode("ascii")
    tag = f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
    if caption:
        return f"<figure>{tag}<figcaption>{esc(caption)}</figcaption></figure>"
    return f"<figure>{tag}</figure>"


def note(text: str, kind: str = "info") -> str:
    """A boxed remark: ``info``, ``missing`` (data absent, and how to produce it) or
    ``warn``. ``text`` is HTML (callers escape what they interpolate)."""
    return f'<div class="note {esc(kind)}">{text}</div>'


def code(text: str) -> str:
    """Preformatted source code."""
    return f"<pre><code>{esc(text)}</code></pre>"


def details(summary: str, body: str, *, open_: bool = False) -> str:
    """A collapsible block (no script needed)."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def items(lines: Iterable[str]) -> str:
    """A bulleted list of HTML fragments."""
    return "<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>"


def link(href: str, text: str) -> str:
    """An anchor to ``href`` with escaped ``text``."""
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def legend() -> str:
    """The colour key shared by every matrix."""
    spans = "".join(f'<span class="key {c}">{esc(CLASS_LABELS[c])}</span>' for c in CLASSES)
    return f'<p class="legend">{spans}</p>'


def _stylesheet() -> str:
    colours = "\n".join(f".{c} {{ background: {bg}; color: {fg}; }}" for c, (bg, fg) in CLASS_COLOURS.items())
    return BASE_CSS + colours


BASE_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; margin-top: 1.2em; }
nav { margin-bottom: 1em; } nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
thead th { background: #f3f3f3; text-align: center; }
tbody th { text-align: left; font-weight: normal; background: #fafafa; }
caption { text-align: left; font-weight: bold; padding: 2px 0; }
td a { color: inherit; }
td.text, th.text { text-align: left; }
table.matrix td { min-width: 5em; text-align: center; }
table.facts td, table.facts th { text-align: left; }
td.slower { background: #fdd0a2; } td.faster { background: #c7e9c0; }
td.changed { outline: 3px solid #1f5fbf; outline-offset: -3px; font-weight: bold; }
td.conv { text-align: left; font-size: 12px; color: #444; max-width: 40em; }
td.msg { text-align: left; font-size: 12px; max-width: 40em; }
figure { margin: 0.5em 0 1em; } figure img { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: #555; }
pre { background: #f6f8fa; padding: 0.6em; overflow-x: auto; font-size: 12px; }
.note { border-left: 4px solid #888; background: #f7f7f7; padding: 0.4em 0.8em; margin: 0.6em 0; }
.note.missing { border-color: #c08400; background: #fff8e6; }
.note.warn { border-color: #b2182b; background: #fdeeee; }
.note.conv { border-color: #1f5fbf; background: #eef4fd; }
.legend .key { display: inline-block; padding: 1px 8px; margin: 0 4px 4px 0; border: 1px solid #ccc; font-size: 12px; }
.findings li { margin-bottom: 0.3em; }
.badge { display: inline-block; padding: 0 6px; font-size: 11px; border-radius: 3px; min-width: 6em; text-align: center; }
.blocks { display: flex; flex-wrap: wrap; gap: 0 2em; align-items: flex-start; }
code { font-size: 12px; }
"""


def fragment(body: str) -> str:
    """``body`` (HTML) with the report's styles scoped to it, to show inside another page
    (a Jupyter cell): the same tables and colours, nothing loaded from elsewhere, and the
    host page's own styles left alone."""
    rules = []
    for rule in _stylesheet().split("}"):
        if "{" not in rule:
            continue
        selectors, decls = rule.split("{", 1)
        scoped = [f".rulelab {s.strip()}" for s in selectors.split(",") if s.strip() and s.strip() != "body"]
        if scoped:
            rules.append(f"{', '.join(scoped)} {{{decls}}}")
    return f'<div class="rulelab"><style>{" ".join(rules)}</style>{body}</div>'


def page(title: str, body: str, *, nav: Sequence[tuple[str, str]] = ()) -> str:
    """A complete HTML document: ``title``, a navigation bar of (href, text) and
    ``body`` (HTML)."""
    links = " ".join(link(h, t) for h, t in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_stylesheet()}</style></head>\n"
        f"<body>\n<nav>{links}</nav>\n<h1>{esc(title)}</h1>\n{body}\n</body></html>\n"
    )
