"""Words of a text, with their character spans, split the way TextAttack splits them.

Word positions are what the word and character spaces edit, so they must agree with
TextAttack's ``AttackedText.words`` (its transformations and constraints index words that
way): a word is a run of letters, digits and ``'-_*@`` (plus TextAttack's homoglyphs) that
does not begin or end with one of ``'-_*@``. Keeping the spans lets an edited text keep
every space and punctuation mark of the original.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

_EXCEPTIONS = "'-_*@"
_HOMOGLYPHS = "˗৭Ȣ𝟕бƼᏎƷᒿlO`ɑЬϲԁе𝚏ɡհіϳ𝒌ⅼｍոорԛⲅѕ𝚝սѵԝ×уᴢ"
_WORD = re.compile("[\\w" + re.escape(_HOMOGLYPHS) + "'\\-_\\*@]+")
_TOKEN = re.compile(r"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character ``(start, end)`` of every word of ``text``, in order."""
    spans: list[tuple[int, int]] = []
    for token in _TOKEN.finditer(text):
        raw = token.group()
        inner = raw.strip(_EXCEPTIONS)
        base = token.start() + (len(raw) - len(raw.lstrip(_EXCEPTIONS)))
        for match in _WORD.finditer(inner):
            word = match.group()
            stripped = word.strip(_EXCEPTIONS)
            if stripped:
                start = base + match.start() + (len(word) - len(word.lstrip(_EXCEPTIONS)))
                spans.append((start, start + len(stripped)))
    return spans


def words(text: str) -> list[str]:
    """The words of ``text`` (same split as TextAttack's ``words_from_text``)."""
    return [text[a:b] for a, b in word_spans(text)]


@dataclass(frozen=True)
class TextView:
    """A text with its word spans, able to rebuild itself with some words replaced."""

    text: str

    @cached_property
    def spans(self) -> list[tuple[int, int]]:
        """Character spans of the words."""
        return word_spans(self.text)

    @cached_property
    def words(self) -> list[str]:
        """The words, in order."""
        return [self.text[a:b] for a, b in self.spans]

    def replace(self, replacements: Mapping[int, str]) -> str:
        """The text with word ``i`` replaced by ``replacements[i]``; the rest is kept."""
        out: list[str] = []
        last = 0
        for i in sorted(replacements):
            start, end = self.spans[i]
            out.append(self.text[last:start])
            out.append(replacements[i])
            last = end
        out.append(self.text[last:])
        return "".join(out)


def match_case(word: str, like: str) -> str:
    """``word`` in the letter case of ``like`` (lower, UPPER or Capitalised)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]
