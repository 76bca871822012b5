"""A run on disk: results.jsonl, summary.json, adversarials.npz and the task copy.

:func:`write_run` writes them; :func:`load_run` (``mmargin.load_run``) reads a finished
run folder back into typed results, with their adversarials, the summary and the task.
"""

from __future__ import annotations

import json
import platform
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmargin.errors import MmarginError
from mmargin.results import FLOAT_FIELDS, SampleResult, Status, adversarial_arrays
from mmargin.summary import Summary

if TYPE_CHECKING:
    import pandas as pd

PACKAGES = ("mmargin", "torch", "numpy", "scipy", "pluggy", "scikit-learn", "transformers",
            "textattack", "torchaudio")  # fmt: skip


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape a result (missing ones left out)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_run(
    out: Path, results: Sequence[SampleResult], summary: Summary, task: Mapping[str, Any]
) -> None:
    """Write every artefact of a run into ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r.to_json(), allow_nan=False) + "\n")
    (out / "summary.json").write_text(
        json.dumps(summary.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    arrays = adversarial_arrays(results)
    if arrays:
        np.savez_compressed(out / "adversarials.npz", **arrays)  # type: ignore[arg-type]
    (out / "task.resolved.toml").write_text(to_toml(task), encoding="utf-8")


def task_record(task: Any) -> dict[str, Any]:
    """A task as the tables of a task file (defaults filled in, paths absolute: see
    :func:`mmargin.taskfile.task_tables`), plus package versions under ``versions``."""
    from mmargin.taskfile import task_tables
    from mmargin.tasks import FIELDS, Task

    record = task_tables(task, FIELDS) if isinstance(task, Task) else dict(task)
    return {**record, "versions": versions()}


def to_toml(data: Mapping[str, Any]) -> str:
    """The task copy as TOML (``tomli_w``: see :func:`mmargin.taskfile.dump_toml`)."""
    from mmargin.taskfile import dump_toml

    return dump_toml(data)


@dataclass(frozen=True)
class RunRecord:
    """A finished run read back from its folder: what :func:`load_run` returns.

    ``results`` are the per-sample :class:`SampleResult` records in file order, with
    ``adversarial`` filled from ``adversarials.npz`` for flipped samples; ``summary`` the
    run's :class:`Summary`; ``task`` the resolved task copy (nested tables, package
    versions under ``versions``).
    """

    out: Path
    results: list[SampleResult]
    summary: Summary
    task: dict[str, Any]

    def frame(self) -> pd.DataFrame:
        """The results as a pandas DataFrame, one row per sample (adversarials left out)."""
        from mmargin.results import to_frame

        return to_frame(self.results)


class RunFolderError(MmarginError, ValueError):
    """A run folder is missing a file or holds one mmargin cannot read."""


def load_run(out: str | Path) -> RunRecord:
    """Read a run folder written by ``mmargin run`` / :func:`mmargin.run_task`."""
    out = Path(out)
    results = read_results(out)
    try:
        summary_raw = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        task_file = out / "task.resolved.toml"
        task = tomllib.loads(task_file.read_text(encoding="utf-8")) if task_file.is_file() else {}
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{out}: not a readable run folder ({exc})") from None
    return RunRecord(out=out, results=results, summary=_summary(summary_raw), task=task)


def read_results(out: Path) -> list[SampleResult]:
    """The results of a run folder (``results.jsonl`` with ``adversarials.npz``), in file
    order; a last line cut short by a kill mid-write is skipped."""
    try:
        text = (out / "results.jsonl").read_text(encoding="utf-8")
        whole = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
        rows = [json.loads(line) for line in whole.splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{out}: not a readable run folder ({exc})") from None
    adversarials: dict[str, Any] = {}
    if (out / "adversarials.npz").is_file():
        with np.load(out / "adversarials.npz", allow_pickle=False) as found:
            adversarials = {key: _unpack(found[key]) for key in found.files}
    return [_result(row, adversarials.get(str(row.get("sample")))) for row in rows]


def _number(value: Any) -> Any:
    """Undo the JSON spelling of non-finite floats (``"inf"``, ``"-inf"``, ``"nan"``)."""
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def _unpack(array: np.ndarray) -> Any:
    """A stored adversarial: text comes back as a string, everything else as an array."""
    if array.ndim == 0 and array.dtype.kind in "US":
        return str(array)
    return array


def _result(row: Mapping[str, Any], adversarial: Any) -> SampleResult:
    known = {f.name for f in fields(SampleResult)}
    values = {k: v for k, v in row.items() if k in known}
    for key in FLOAT_FIELDS:
        if key in values:
            values[key] = _number(values[key])
    values["status"] = Status(values["status"])
    values["extras"] = dict(values.get("extras") or {})
    values["adversarial"] = adversarial
    return SampleResult(**values)


def _summary(raw: Mapping[str, Any]) -> Summary:
    known = {f.name for f in fields(Summary)}
    curves = ("robust_accuracy", "certified_robust_accuracy")
    values = {k: _number(v) for k, v in raw.items() if k in known and k not in curves}
    for key in curves:
        values[key] = {float(k): float(_number(v)) for k, v in dict(raw.get(key, {})).items()}
    return Summary(**values)
