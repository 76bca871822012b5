"""Reports people read: ``mmargin report`` (one run) and ``mmargin compare`` (several).

Both write one self-contained HTML file that works offline: plots are matplotlib figures
inlined as SVG, media are data URIs, no script, font or stylesheet is fetched. Every text
that comes from a model, a data set or a task is escaped. Nothing heavy is imported until
a report is written (matplotlib loads inside the figure functions).

- :func:`write_report` — one run folder → ``report.html``;
- :func:`write_compare` — several run folders → ``compare.html`` (and a terminal table);
- :mod:`mmargin.report.media` — PNG / WAV data URIs for plugins' gallery views (also
  exported from :mod:`mmargin.plugin`).
"""

from __future__ import annotations

from mmargin.lazy import lazy_attributes

_LAZY = {
    "write_report": "mmargin.report.page",
    "write_compare": "mmargin.report.compare",
    "compare_table": "mmargin.report.compare",
}

__all__ = ["compare_table", "write_compare", "write_report"]

__getattr__ = lazy_attributes(__name__, _LAZY)
