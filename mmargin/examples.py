"""The example adversarials a run's CLI summary shows, in the modality's own units.

The ``mmargin_summary_examples`` hook (:mod:`mmargin.hookspecs`) lets each modality plugin
describe two or three flips of a run in its terms — an edited sentence, a feature diff in
raw units, a loudness in dB. :func:`pick_examples` chooses which (the smallest, median and
largest verified margins), :func:`ratio_note` says how each compares with random noise, and
:func:`summary_examples` asks the plugins and keeps their lines printable: one line each,
no control characters (terminal escapes from model or data text included), at most
:data:`MAX_CHARS` characters — the same output on a terminal, a pipe or ``--quiet``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from mmargin.results import SampleResult, Status

MAX_CHARS = 200
"""Longest example line printed (longer ones are cut with an ellipsis)."""
MAX_LINES = 3
"""Most example lines printed."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def pick_examples(results: Sequence[SampleResult], count: int = MAX_LINES) -> list[SampleResult]:
    """Up to ``count`` flipped results: the smallest, the median and the largest margin
    (distinct samples, in that order)."""
    flipped = sorted((r for r in results if r.status is Status.FLIPPED and math.isfinite(r.margin)),
                     key=lambda r: (r.margin, r.sample))  # fmt: skip
    if not flipped:
        return []
    picks = [0, len(flipped) // 2, len(flipped) - 1][: max(count, 0)]
    seen: list[int] = []
    for i in picks:
        if i not in seen:
            seen.append(i)
    return [flipped[i] for i in seen]


def ratio_note(result: SampleResult) -> str:
    """How a flip compares with random noise: ``"1/12 of random noise's"``, ``"random
    perturbation flipped it"`` or ``""`` when the run measured no random margin."""
    if result.random_margin is None or result.random_ratio is None:
        return ""
    if math.isinf(result.random_margin):
        return "no random perturbation flipped it"
    ratio = result.random_ratio
    if ratio <= 0:
        return ""
    if ratio >= 1:
        return f"{ratio:.2g}x the random margin {result.random_margin:.3g}"
    return f"1/{1 / ratio:.3g} of the random margin {result.random_margin:.3g}"


def printable(line: str, limit: int = MAX_CHARS) -> str:
    """``line`` on one line with control characters replaced by spaces, cut to ``limit``."""
    text = " ".join(_CONTROL.sub(" ", str(line)).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def summary_examples(space: Any, results: Sequence[SampleResult]) -> list[str]:
    """The plugins' example lines for a run (``[]`` when no plugin describes ``space``, or
    when the plugin fails: examples never sink a run)."""
    from mmargin import plugins

    try:
        lines = plugins.manager().hook.mmargin_summary_examples(space=space, results=results)
    except Exception as exc:  # noqa: BLE001 - plugin code; the run's results stand
        return [printable(f"(no examples: {type(exc).__name__}: {exc})")]
    return [printable(line) for line in (lines or [])[:MAX_LINES]]
