"""mmargin: per-input adversarial robustness margins for any modality.

``import mmargin`` is cheap: torch and the plugins load only when a search runs. The
public API (``evaluate``, ``run_task``, ``load_run``, ``to_frame``, ``load_task``,
``write_report``, ``write_compare`` and the result types) is resolved on first use.
"""

from __future__ import annotations

from mmargin.lazy import lazy_attributes

__version__ = "0.1.0"

_LAZY = {
    "evaluate": "mmargin.api",
    "run_task": "mmargin.api",
    "RunOutput": "mmargin.api",
    "to_frame": "mmargin.results",
    "SampleResult": "mmargin.results",
    "Status": "mmargin.results",
    "load_task": "mmargin.tasks",
    "Dataset": "mmargin.data",
    "summarize": "mmargin.summary",
    "load_run": "mmargin.store",
    "RunRecord": "mmargin.store",
    "write_report": "mmargin.report.page",
    "write_compare": "mmargin.report.compare",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_attributes(__name__, _LAZY)
