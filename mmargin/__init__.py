"""mmargin: per-input adversarial robustness margins for any modality.

``import mmargin`` is cheap: torch and the plugins load only when a search runs. The
public API (``evaluate``, ``run_task``, ``load_run``, ``to_frame``, ``load_task`` and the
result types) is resolved on first use.
"""

from __future__ import annotations

from typing import Any

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
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmargin' has no attribute {name!r}")
