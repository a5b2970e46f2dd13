"""Static HTML reports of accuracy runs and asv benchmark results.

``build_report`` writes ``index.html`` (overview), ``case-<name>.html`` per case,
``performance.html`` and optionally ``compare.html``: self-contained files (inline
styles, images embedded as PNG) that open from disk with nothing fetched. The report
reads the store and asv's result files only; it computes no values or references.
"""

from rulelab.report.build import build_report
from rulelab.report.load import latest_runs

__all__ = ["build_report", "latest_runs"]
