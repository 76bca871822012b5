"""The text plugin's view of one sample in ``mmargin report``: the sentence with its edits
highlighted, each changed word struck through and its replacement beside it.

The two texts come from the result's extras (``original_text`` and ``adversarial_text``;
an embedding-space run's nearest-token ``projection``); the highlighting is a word-level
diff, so word, character and token edits all show as "old word → new word". Every word is
escaped: a sentence may contain markup such as ``<script>``.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Mapping
from typing import Any


def adversarial_text(result: Any) -> str | None:
    """The adversarial sentence of a result, wherever the space put it."""
    extras: Mapping[str, Any] = result.extras
    for candidate in (extras.get("adversarial_text"), result.adversarial, extras.get("projection")):
        if isinstance(candidate, str):
            return candidate
    return None


def highlight(original: str, adversarial: str) -> str:
    """``adversarial`` as HTML, words changed from ``original`` shown as
    ``<del>old</del> <ins>new</ins>`` (everything escaped)."""
    old, new = re.split(r"(\s+)", original), re.split(r"(\s+)", adversarial)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(old[i1:i2])))
            continue
        removed, added = "".join(old[i1:i2]).strip(), "".join(new[j1:j2]).strip()
        if removed:
            out.append(f"<del>{html.escape(removed)}</del>")
        if removed and added:
            out.append(" ")
        if added:
            out.append(f"<ins>{html.escape(added)}</ins>")
    return "".join(out)


def render_text(result: Any) -> str | None:
    """The highlighted sentence and the edit count, or ``None`` without the two texts."""
    original = result.extras.get("original_text")
    adversarial = adversarial_text(result)
    if not isinstance(original, str) or adversarial is None:
        return None
    edits = result.extras.get("edits") or result.extras.get("token_edits") or []
    note = f"{len(edits)} edit(s)" if edits else ""
    if not isinstance(result.adversarial, str):  # an embedding-space flip: show its projection
        flips = result.extras.get("projection_flips")
        verdict = "" if flips is None else "; it flips" if flips else "; it does not flip"
        note = (f"The adversarial is a point in embedding space; shown: its nearest-token "
                f"projection ({len(edits)} token(s) changed{verdict}).")  # fmt: skip
    return (f'<div class="sentence">{highlight(original, adversarial)}</div>'
            f'<div class="muted">{html.escape(note)}</div>')  # fmt: skip
