"""A run folder as the report reads it: the typed run plus the figures other versions add.

:func:`read_run` wraps :func:`mmargin.load_run` and keeps, beside the typed record, the raw
``summary.json`` and ``results.jsonl`` rows, so figures that newer runs carry (random-noise
ratios, certified accuracy, attack-failure indicators: the names in the project's
contracts) are shown when present and simply absent for older runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmargin.report.inputs import read_inputs
from mmargin.results import SampleResult, Status
from mmargin.store import RunRecord, load_run


@dataclass
class ReportRun:
    """One run folder, read for a report.

    ``summary`` is the raw ``summary.json`` (non-finite numbers decoded); ``rows`` the raw
    results rows in file order (one per ``record.results`` entry); ``inputs`` the clean
    inputs by sample id (``inputs.npz``; empty for older runs).
    """

    path: Path
    record: RunRecord
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    inputs: dict[str, Any]
    _space: Any = field(default=None, repr=False)
    _space_built: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        """The task's name (else the folder's)."""
        return str(self.record.task.get("task", {}).get("name") or self.path.name)

    @property
    def results(self) -> list[SampleResult]:
        return self.record.results

    def first(self, key: str) -> str:
        """``modality`` / ``space`` / ``distance`` of the run (its first result's)."""
        return str(getattr(self.results[0], key)) if self.results else ""

    @property
    def units(self) -> str:
        """The native unit label of margins (the summary's ``units``, else the distance)."""
        units = self.summary.get("units")
        return str(units) if units else self.summary.get("distance") or self.first("distance")

    @property
    def short_units(self) -> str:
        """The unit label for plot axes and table headers: the units when short, else the
        distance's name (``units`` may be a phrase)."""
        units = self.units
        return units if len(units) <= 16 else (self.summary.get("distance") or units[:16])

    def table(self, name: str) -> dict[str, Any]:
        """A table of the task copy (``data``, ``model``, ``space``, ``versions`` ...)."""
        value = self.record.task.get(name, {})
        return dict(value) if isinstance(value, Mapping) else {}

    def value(self, index: int, key: str) -> Any:
        """A per-sample field by name: the typed result's, else the raw row's, else None."""
        result = self.results[index]
        if hasattr(result, key):
            return getattr(result, key)
        return decode(self.rows[index].get(key)) if index < len(self.rows) else None

    def space(self) -> Any:
        """The run's space rebuilt from the task copy (``None`` when that fails)."""
        if not self._space_built:
            self._space_built = True
            self._space = _build_space(self.table("space"))
        return self._space

    def flipped(self) -> list[int]:
        """Indices of flipped samples with a finite margin."""
        return [i for i, r in enumerate(self.results)
                if r.status is Status.FLIPPED and math.isfinite(r.margin)]  # fmt: skip


def read_run(path: str | Path) -> ReportRun:
    """Read a run folder for a report (raises ``RunFolderError`` for an unreadable one)."""
    path = Path(path)
    record = load_run(path)
    summary = {k: decode(v) for k, v in
               json.loads((path / "summary.json").read_text(encoding="utf-8")).items()}  # fmt: skip
    lines = (path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return ReportRun(path, record, summary, rows, read_inputs(path))


def decode(value: Any) -> Any:
    """Undo the JSON spelling of non-finite floats, also inside mappings."""
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, Mapping):
        return {k: decode(v) for k, v in value.items()}
    return value


def component(table: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The name and options of a component table of a task copy (data, space, distance):
    written as a task file (``loader`` / ``name`` beside its options, since task copies
    became re-runnable task files) or, in older runs, as ``name`` plus an ``options``
    table."""
    name = table.get("name", table.get("loader"))
    options = table.get("options")
    if not isinstance(options, Mapping):
        options = {k: v for k, v in table.items() if k not in ("name", "loader", "in_memory")}
    return (str(name) if name else None), dict(options)


def _build_space(table: Mapping[str, Any]) -> Any:
    from mmargin import plugins

    name, options = component(table)
    if not name:
        return None
    try:
        entry = plugins.lookup("spaces", name)
        return entry.factory(**options)
    except Exception:  # noqa: BLE001 - a space that no longer builds only costs its views
        return None
