"""The image benchmark's report: strict JSON and the markdown tables (one per norm).

``image_bench.py`` builds the report (every figure, configuration and per-sample distance);
this module only writes it, so ``image_bench.py --markdown-only`` can re-render a finished
run's tables from its JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

_NORM_TITLE = {"l2": "L2", "linf": "L∞", "l1": "L1"}


def json_dist(values: np.ndarray) -> list[float | None]:
    """Distances as JSON numbers, null for ∞ (a failed sample)."""
    return [None if not math.isfinite(v) else float(v) for v in values]


def _clean(obj: Any) -> Any:
    """Non-finite floats become null (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return format(value, spec)


_CHECK_TEXT = {
    "not_finite": "not finite (∞)",
    "outside_box": "outside [0, 1] (∞)",
    "not_adversarial": "not adversarial (∞)",
    "zero_image": "all-zero image (counted at its distance when the model's prediction on it "
    "differs from the label)",
}


def _times(r: dict[str, Any]) -> str:
    wall = f"{r['seconds']:.1f} ({r['cpu_seconds']:.1f})"
    ratio = (
        f"{_fmt(r.get('mmargin_time_ratio'), '.2f')} "
        f"({_fmt(r.get('mmargin_cpu_time_ratio'), '.2f')})"
    )
    paired = r.get("paired_timing") or {}
    pair = 1.0 if r["method"] == "mmargin" and r["status"] == "ok" else paired.get("median_ratio")
    return f"{wall} | {ratio} | {_fmt(pair, '.2f')}"


def markdown(report: dict[str, Any]) -> str:
    """The tables of a finished report, one per norm, with the run's facts above them."""
    meta = report["meta"]
    lines = [
        "# Minimal-norm adversarial search on the MNIST CNN: mmargin vs peers",
        "",
        f"- samples: first {meta['samples']} MNIST test images "
        f"({meta['misclassified']} misclassified by the model, distance 0 for every method)",
        f"- budget: {meta['budget']} forward+backward passes per sample (measured by one "
        f"shared counter); device {meta['device']}, torch threads {meta['threads']}",
        f"- torch {meta['versions'].get('torch')}, foolbox {meta['versions'].get('foolbox')}, "
        f"adv-lib {meta['versions'].get('adv-lib')}, torchattacks "
        f"{meta['versions'].get('torchattacks')}; {meta['started']}",
        f"- command: `{meta['command']}`; "
        f"total run time {_fmt(meta.get('total_seconds'), '.0f')} s",
        "",
        "success: valid adversarial on the correctly classified samples; median over them "
        "(failures count as ∞); optimality: AttackBench's score against the per-sample best "
        "of all methods in the table (exact area; *AB code*: the reference code's trapezoid "
        "rule); passes: measured per sample; seconds: wall time (process CPU time); ratio: "
        "mmargin seconds / method seconds, wall (CPU), in the main run; paired ratio: median "
        "of mmargin/method wall-time ratios from back-to-back runs on the first "
        f"{meta.get('timing_samples', '?')} images (robust to the shared machine's load) "
        "(< 1: mmargin faster).",
    ]
    for norm, block in report["norms"].items():
        lines += [
            "",
            f"## {_NORM_TITLE[norm]}",
            "",
            "| method | success | median | optimality | opt. (AB code) | passes/sample "
            "| seconds (CPU s) | mmargin/method time (CPU) | paired ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = sorted(
            block["methods"],
            key=lambda r: (r["status"] != "ok", -(r.get("optimality") or -1e9)),
        )
        for r in rows:
            name = r["method"] if r["method"] == "mmargin" else f"{r['library']} {r['attack']}"
            passes = f"{r['passes_per_sample']:.0f}"
            if not r["within_budget"]:
                passes += " (over budget)"
            if r["status"] != "ok":
                lines.append(f"| {name} | error | – | – | – | {passes} | {_times(r)} |")
                continue
            lines.append(
                f"| {name} | {r['success_rate']:.1%} | {_fmt(r['median_distance'], '.4f')} "
                f"| {_fmt(r['optimality'], '.3f')} "
                f"| {_fmt(r['optimality_attackbench_code'], '.3f')} "
                f"| {passes} | {_times(r)} |"
            )
        for r in block["methods"]:
            if r["status"] != "ok":
                lines.append(f"\n- {r['library']} {r['attack']}: **error** `{r['error']}`")
        for r in block["methods"]:
            checks = r.get("checks") or {}
            found = {k: v for k, v in checks.items() if v}
            if found:
                text = ", ".join(f"{_CHECK_TEXT[k]}: {v}" for k, v in found.items())
                lines.append(
                    f"\n- {r['library']} {r['attack']}, outputs rejected or flagged "
                    f"here (of the correctly classified samples): {text}"
                )
        by_note: dict[str, list[str]] = {}
        for r in block["methods"]:
            if r.get("notes"):
                by_note.setdefault(r["notes"], []).append(f"{r['library']} {r['attack']}")
        for note, names in by_note.items():
            lines.append(f"\n- {'; '.join(names)}: {note}")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    """``out`` (strict JSON) and the markdown tables beside it (``.md``)."""
    out.write_text(json.dumps(_clean(report), indent=1, allow_nan=False) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
