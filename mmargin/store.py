"""Writing a run to disk: results.jsonl, summary.json, adversarials.npz and the task copy."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.results import SampleResult, adversarial_arrays
from mmargin.summary import Summary

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
    """A task as nested tables (resolved defaults included), plus package versions."""
    raw = asdict(task) if is_dataclass(task) and not isinstance(task, type) else dict(task)
    record: dict[str, Any] = {"task": {}, "versions": versions()}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            record[key] = dict(value)
        elif value is not None:
            record["task"][key] = str(value) if isinstance(value, Path) else value
    return record


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the task copy: scalars, lists and nested tables only."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((f"{prefix}{key}", value))
        elif value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        text += f"\n[{name}]\n" + to_toml(table, prefix=f"{name}.")
    return text


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value))
