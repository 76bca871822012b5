"""Small run folders written without a model, for the report tests: results built by hand
(so every figure is known), written by the real ``write_run``, optionally with the
per-sample and summary fields newer runs carry (random ratios, bounds, indicators)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.results import SampleResult, Status, result_record
from mmargin.store import task_record, write_run
from mmargin.summary import summarize


def text_results(sentences: Sequence[tuple[str, str, float]]) -> list[SampleResult]:
    """Flipped text results: (original, adversarial, margin) each."""
    return [
        result_record(
            f"t{i}", 1, Status.FLIPPED, modality="text", space="word", distance="word-edits",
            pred_label=1, adv_label=0, margin=m, verified=True, queries=5, strategy="greedy",
            relative_margin=m / len(a.split()), adversarial=a,
            extras={"original_text": o, "adversarial_text": a, "edits": [{}] * int(m)},
        )
        for i, (o, a, m) in enumerate(sentences)
    ]  # fmt: skip


def image_results(margins: Sequence[float], seed: int = 0) -> tuple[list[SampleResult], dict]:
    """Flipped 1x4x4 image results and their clean inputs by sample id."""
    rng = np.random.default_rng(seed)
    results, clean = [], {}
    for i, m in enumerate(margins):
        x = rng.uniform(0.2, 0.8, (1, 4, 4)).astype(np.float32)
        d = rng.normal(size=x.shape).astype(np.float32)
        adv = x + m * d / np.linalg.norm(d)
        clean[f"i{i}"] = x
        results.append(result_record(
            f"i{i}", i % 3, Status.FLIPPED, modality="image", space="image", distance="l2",
            pred_label=i % 3, adv_label=(i + 1) % 3, margin=m, verified=True, queries=9,
            strategy="gradient", relative_margin=m / float(np.linalg.norm(x)), adversarial=adv,
        ))  # fmt: skip
    return results, clean


def write_fake_run(
    out: Path,
    results: Sequence[SampleResult],
    *,
    name: str,
    space: str,
    distance: str,
    data: Mapping[str, Any] | None = None,
    summary_extra: Mapping[str, Any] | None = None,
    row_extra: Sequence[Mapping[str, Any]] | None = None,
    clean: Mapping[str, np.ndarray] | None = None,
    legacy: bool = False,
) -> Path:
    """Write a run folder; ``summary_extra`` / ``row_extra`` add fields to summary.json and
    to each results row the way a newer mmargin would; ``legacy`` drops the fields that
    runs written before the reports existed lack (indicators, random baseline)."""
    record = task_record({"task": {"name": name, "samples": len(results)}})
    record.update(space={"name": space, "options": {}}, distance={"name": distance},
                  data=dict(data or {"name": "fake", "options": {"split": "test"}}))  # fmt: skip
    write_run(out, results, summarize(results), record)
    if summary_extra:
        path = out / "summary.json"
        summary = json.loads(path.read_text())
        summary.update(summary_extra)
        path.write_text(json.dumps(summary))
    if row_extra:
        lines = (out / "results.jsonl").read_text().splitlines()
        rows = [{**json.loads(line), **extra} for line, extra in zip(lines, row_extra, strict=True)]
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if legacy:
        _drop(out / "summary.json", LEGACY_SUMMARY, lines=False)
        _drop(out / "results.jsonl", LEGACY_ROW, lines=True)
    if clean:
        np.savez_compressed(out / "inputs.npz", **clean)  # type: ignore[arg-type]
    return out


LEGACY_SUMMARY = ("indicator_counts", "random_ratio_median", "normalised_auc",
                  "normalised_scale", "units", "certified_robust_accuracy",
                  "bracket_ratio_median")  # fmt: skip
LEGACY_ROW = ("indicators", "flip_rate", "random_margin", "random_ratio")


def _drop(path: Path, keys: Sequence[str], *, lines: bool) -> None:
    """Remove ``keys`` from a JSON file (or from every line of a JSON-lines file)."""
    if not lines:
        data = {k: v for k, v in json.loads(path.read_text()).items() if k not in keys}
        path.write_text(json.dumps(data))
        return
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k not in keys}) + "\n" for r in rows)
    )
