"""The image plugin's lines in a run's CLI summary: a few flips in grey levels.

Backs the ``mmargin_summary_examples`` hook for spaces of modality ``image``: for the
smallest, median and largest flips, the classes, the margin in its distance, what it means
per pixel in grey levels of an 8-bit image (L∞: the largest change; L2: the root mean
square change; L1: the mean change; L0: how many pixel values changed) and how it
compares with random noise. Images in ``[0, 1]`` are assumed for the grey levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mmargin.plugin import SampleResult, hookimpl, pick_examples, ratio_note

GREY = 255.0
"""Grey levels of an 8-bit image spanning [0, 1]."""


def pixel_note(distance: str, margin: float, values: int) -> str:
    """What a margin under ``distance`` means per pixel value of an image of ``values``."""
    if distance == "linf":
        return f"largest change {margin * GREY:.3g}/255 grey levels"
    if distance == "l2" and values:
        return f"RMS change {margin / math.sqrt(values) * GREY:.3g}/255 per value"
    if distance == "l1" and values:
        return f"mean change {margin / values * GREY:.3g}/255 per value"
    if distance == "l0":
        return f"{margin:.0f} of {values} values changed"
    return ""


def image_line(result: SampleResult) -> str:
    """One flip: sample, classes, margin, per-pixel meaning and the random-noise ratio."""
    import numpy as np

    values = int(np.asarray(result.adversarial).size) if result.adversarial is not None else 0
    parts = [f"{result.distance} {result.margin:.4g}",
             pixel_note(result.distance, result.margin, values), ratio_note(result)]  # fmt: skip
    detail = ", ".join(p for p in parts if p)
    return f"{result.sample!r} class {result.label} -> {result.adv_label}: {detail}"


@hookimpl
def mmargin_summary_examples(space: Any, results: Sequence[SampleResult]) -> list[str] | None:
    if getattr(space, "modality", None) != "image":
        return None
    return [image_line(r) for r in pick_examples(results)]
