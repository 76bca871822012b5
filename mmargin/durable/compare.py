"""Compare two run folders: are they the same run, wherever and however it ran?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

TIMING = ("seconds",)
"""Record fields that measure time, not the search: left out of every comparison."""


def folder_contents(out: Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """A run folder's records in file order (timing fields left out) and adversarials."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for row in rows:
        for key in TIMING:
            row.pop(key, None)
    arrays: dict[str, np.ndarray] = {}
    if (out / "adversarials.npz").is_file():
        with np.load(out / "adversarials.npz", allow_pickle=False) as found:
            arrays = {k: found[k] for k in found.files}
    return rows, arrays


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two run folders, beyond timing: records (order included),
    duplicated samples, adversarials (dtype and bits). Empty when they are the same run."""
    rows_a, adv_a = folder_contents(a)
    rows_b, adv_b = folder_contents(b)
    found = []
    for name, rows in ((a, rows_a), (b, rows_b)):
        ids = [r.get("sample") for r in rows]
        if len(ids) != len(set(ids)):
            found.append(f"{name}: duplicated samples")
    if len(rows_a) != len(rows_b):
        found.append(f"{len(rows_a)} records vs {len(rows_b)}")
    found += [f"record {i} ({x.get('sample')}) differs" for i, (x, y)
              in enumerate(zip(rows_a, rows_b, strict=False)) if x != y]  # fmt: skip
    if sorted(adv_a) != sorted(adv_b):
        found.append("different samples have adversarials")
    for key in sorted(set(adv_a) & set(adv_b)):
        x, y = adv_a[key], adv_b[key]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            found.append(f"adversarial of {key} differs")
    return found
