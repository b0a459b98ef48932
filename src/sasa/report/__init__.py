"""Summaries and self-contained Markdown/HTML reports of evaluation results."""

from sasa.report.render import atomic_write_text, build_plots, render_html, render_markdown, write_report
from sasa.report.summary import RecordError, normalise_records, summarize

__all__ = [
    "summarize",
    "write_report",
    "render_markdown",
    "render_html",
    "build_plots",
    "normalise_records",
    "atomic_write_text",
    "RecordError",
]
