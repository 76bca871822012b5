"""The text plugin's lines in a run's CLI summary: a few flips as edited sentences.

Backs the ``mmargin_summary_examples`` hook for the text spaces: for the smallest, median
and largest flips, the number of words (or characters) edited and the sentence with each
edit marked ``[old -> new]``; for the embedding space, the L2 margin and the token
changes its adversarial embeddings project to (and whether that text still flips). Long
texts are cut around the first edit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmargin.plugin import SampleResult, hookimpl, pick_examples, ratio_note

WINDOW = 120
"""Characters of a long text shown around its first edit."""


def around(text: str, at: int, width: int = WINDOW) -> str:
    """``text`` cut to about ``width`` characters starting a little before index ``at``."""
    if len(text) <= width:
        return text
    start = max(0, min(at - width // 3, len(text) - width))
    head = "..." if start > 0 else ""
    tail = "..." if start + width < len(text) else ""
    return f"{head}{text[start : start + width]}{tail}"


def marked_text(original: str, edits: Sequence[Mapping[str, Any]]) -> str:
    """``original`` with each edited word shown as ``[old -> new]`` (edits at word
    positions, as the text spaces make them)."""
    from mmargin_text.words import TextView

    view = TextView(original)
    marks = {}
    for e in edits:
        p = int(e["position"])
        if 0 <= p < len(view.words):
            marks[p] = f"[{view.words[p]} -> {e['value']}]"
    text = view.replace(marks)
    return around(text, text.find("["))


def projection_note(extras: Mapping[str, Any]) -> str:
    """What the embedding space's nearest-token projection did: the token changes and
    whether the projected text still flips."""
    flips = "still flips" if extras.get("projection_flips") else "does not flip"
    changes = [c for c in extras.get("token_edits") or [] if isinstance(c, Mapping)]
    if not changes:
        return f"nearest tokens: the original text ({flips})"
    shown = extras.get("highlighted")
    if isinstance(shown, str):  # the projection as text, its changed words marked
        return f'nearest tokens ({flips}): "{around(shown, shown.find("["))}"'
    listed = ", ".join(f"[{c.get('from')} -> {c.get('to')}]" for c in changes[:4])
    more = f" (+{len(changes) - 4} more)" if len(changes) > 4 else ""
    return f"nearest tokens: {listed}{more} ({flips})"


def text_line(result: SampleResult) -> str:
    """One flip: classes, the edit count and the marked sentence (or, for the embedding
    space, the L2 margin and the projected text)."""
    e = result.extras
    head = f"{result.sample!r} class {result.label} -> {result.adv_label}"
    note = ratio_note(result)
    if "projection" in e:
        size = f"{result.distance} {result.margin:.4g}" + (f" ({note})" if note else "")
        if isinstance(e.get("margin_in_token_norms"), float):
            size += f" = {e['margin_in_token_norms']:.3g} token norms"
        return f"{head}: {size}; {projection_note(e)}"
    edits = e.get("edits") or []
    if "words_seen" in e and result.distance == "word-edits":
        size = f"{result.margin:.0f} of {e['words_seen']} words edited"
    else:
        size = f"{result.distance} {result.margin:.4g}"
    if note:
        size += f" ({note})"
    original = e.get("original_text")
    if isinstance(original, str) and edits:
        return f'{head}: {size}: "{marked_text(original, edits)}"'
    return f"{head}: {size}"


@hookimpl
def mmargin_summary_examples(space: Any, results: Sequence[SampleResult]) -> list[str] | None:
    if getattr(space, "modality", None) != "text":
        return None
    return [text_line(r) for r in pick_examples(results)]
