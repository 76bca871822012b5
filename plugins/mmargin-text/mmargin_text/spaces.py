"""The word-substitution and character-edit spaces (discrete: searched by the engine).

Both edit *words*: a position is a word the model sees (words past the model's maximum
length are left alone and the truncation is reported), one edit per word (TextAttack's
"no repeat modification"). The word space replaces a word by a candidate from its source
(embedding neighbours, WordNet, a TextAttack transformation), filtered by the declared
constraints; the margin is the number of words changed (``extras["words_changed_pct"]``:
as a share of the words the model sees). The character space replaces a word by a
misspelling of it (swap two adjacent letters, substitute a keyboard neighbour, insert or
delete a letter); each edit costs its Levenshtein distance and the margin is the
Levenshtein distance between the original and the adversarial text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmargin.plugin import DiscreteConfig, Edit, ProblemBase, Ranking
from mmargin_text.adapters import TextModel
from mmargin_text.candidates import CandidateSource
from mmargin_text.ranking import substitution_ranking
from mmargin_text.words import TextView, levenshtein

UNK = "[UNK]"
"""The masking word of leave-one-out importance (TextAttack's default ``unk_token``)."""


def check_texts(inputs: Sequence[Any]) -> list[str | None]:
    """Per input: ``None``, or why it cannot be searched (not a string, empty)."""
    out: list[str | None] = []
    for x in inputs:
        if not isinstance(x, str):
            out.append(f"expected a text, got {type(x).__name__}")
        elif not x.strip():
            out.append("empty or whitespace-only text")
        else:
            out.append(None)
    return out


@dataclass
class TextProblem(ProblemBase):
    """One text prepared for the engine: edits per word position (see the module doc)."""

    view: TextView
    adapter: Any
    edits_at: dict[int, list[Edit]]
    seen: int
    notes: list[str] = field(default_factory=list)
    max_edits: int | None = None
    kind: str = "word"
    constraints: tuple[str, ...] = ()
    similarity: Any = None

    def positions(self) -> list[int]:
        return sorted(self.edits_at)

    def candidates(self, position: int) -> list[Edit]:
        return self.edits_at.get(position, [])

    def apply(self, edits: Sequence[Edit]) -> str:
        return self.view.replace({e.position: str(e.value) for e in edits})

    def admissible(self, edits: Sequence[Edit]) -> bool:
        return self.max_edits is None or len(edits) <= self.max_edits

    def neutral(self, position: int) -> Edit:
        return Edit(position, UNK, 1.0, f"{self.view.words[position]} -> {UNK}")

    def rank(self, goal: Any, label: int, targets: Any, current: Sequence[Edit]) -> Ranking | None:
        view = TextView(self.apply(current)) if current else self.view
        used = {e.position for e in current}
        spans = {p: view.spans[p] for p in self.edits_at if p not in used}
        cands = {p: [str(e.value) for e in self.edits_at[p]] for p in spans}
        return substitution_ranking(self.adapter, view.text, spans, cands, goal, label, targets)

    def size(self) -> float:
        return float(self.seen if self.kind == "word" else len(self.view.text))

    def report(self, edits: Sequence[Edit], adversarial: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "original_text": self.view.text,
            "adversarial_text": adversarial,
            "words_seen": self.seen,
            "words_changed": len(edits),
            "words_changed_pct": 100.0 * len(edits) / max(self.seen, 1),
        }
        if self.kind == "char":
            out["levenshtein"] = levenshtein(self.view.text, adversarial)
        if self.constraints:
            out["constraints"] = list(self.constraints)
        if self.similarity is not None:  # the whole texts, not a window
            out["semantic_similarity"] = round(
                self.similarity.whole_text(self.view.text, adversarial), 4
            )
        out["highlighted"] = highlight(self.view, {e.position: str(e.value) for e in edits})
        return out


def _seen_words(adapter: Any, view: TextView) -> tuple[int, list[str]]:
    """Words the model sees (all of them for a model that is not a :class:`TextModel`)."""
    seen = int(adapter.words_seen(view.text)) if isinstance(adapter, TextModel) else len(view.words)
    notes = []
    cut = adapter.truncation(view.text) if hasattr(adapter, "truncation") else None
    if seen < len(view.words) or cut:
        tokens = f" ({cut['tokens']} tokens, max_length {cut['max_length']})" if cut else ""
        notes.append(
            f"truncated: the model sees the first {seen} of {len(view.words)} words"
            f"{tokens}; only those are edited and counted"
        )
    return seen, notes


def highlight(view: TextView, replacements: Mapping[int, str]) -> str:
    """The text with each replaced word shown as ``[old -> new]`` (the CLI's view of an
    adversarial text)."""
    return view.replace({p: f"[{view.words[p]} -> {w}]" for p, w in replacements.items()})


@dataclass
class WordSpace:
    """Word substitutions from a candidate source, filtered by constraints.

    ``source(adapter)`` builds the :class:`CandidateSource` for a model (once per model);
    ``stopwords`` are never edited; ``filters`` are callables ``(view, position, words) ->
    words`` (TextAttack constraints, distance limits); ``max_edit_rate`` bounds the share
    of seen words changed; ``search_config`` carries the engine's search knobs.
    """

    source: Callable[[Any], CandidateSource]
    stopwords: frozenset[str] = frozenset()
    filters: Sequence[Callable[[TextView, int, list[str]], list[str]]] = ()
    model_filters: Sequence[Callable[[Any], Callable[[TextView, int, list[str]], list[str]]]] = ()
    position_filter: Callable[[TextView], set[int] | None] | None = None
    max_edit_rate: float | None = None
    search_config: DiscreteConfig | None = None
    applied: tuple[str, ...] = ()
    similarity: Any = None
    name: str = "word"
    modality: str = "text"
    _sources: dict[int, CandidateSource] = field(default_factory=dict, repr=False)
    _model_filters: dict[int, list[Any]] = field(default_factory=dict, repr=False)

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return check_texts(inputs)

    def source_for(self, model: Any) -> CandidateSource:
        """The candidate source for ``model`` (built on first use)."""
        if id(model) not in self._sources:
            self._sources[id(model)] = self.source(model)
        return self._sources[id(model)]

    def word_candidates(self, model: Any, view: TextView, position: int) -> list[str]:
        """The filtered replacement words of one word."""
        word = view.words[position]
        found = [
            w
            for w in self.source_for(model)(view, position)
            if w != word and w.strip() and not any(ch.isspace() for ch in w)
        ]
        found = list(dict.fromkeys(found))
        if id(model) not in self._model_filters:
            self._model_filters[id(model)] = [make(model) for make in self.model_filters]
        for keep in [*self._model_filters[id(model)], *self.filters]:
            if not found:
                break
            found = keep(view, position, found)
        return found

    def problem(self, model: Any, x: str) -> TextProblem:
        view = TextView(x)
        seen, notes = _seen_words(model, view)
        allowed = self.position_filter(view) if self.position_filter is not None else None
        edits: dict[int, list[Edit]] = {}
        for p in range(seen):
            word = view.words[p]
            if word.lower() in self.stopwords or (allowed is not None and p not in allowed):
                continue
            cands = self.word_candidates(model, view, p)
            if cands:
                edits[p] = [Edit(p, c, 1.0, f"{word} -> {c}") for c in cands]
        if not edits:
            notes.append("no word has an allowed substitution")
        limit = None if self.max_edit_rate is None else max(1, int(self.max_edit_rate * seen))
        if self.applied:
            notes.append("constraints: " + "; ".join(self.applied))
        return TextProblem(view, model, edits, seen, notes, max_edits=limit,
                           constraints=self.applied, similarity=self.similarity)  # fmt: skip


_QWERTY = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]


def _keyboard_neighbours(ch: str) -> str:
    low = ch.lower()
    for r, row in enumerate(_QWERTY):
        c = row.find(low)
        if c < 0:
            continue
        near = [row[c - 1] if c > 0 else "", row[c + 1] if c + 1 < len(row) else ""]
        for other in (r - 1, r + 1):
            if 0 <= other < len(_QWERTY):
                near += [_QWERTY[other][j] for j in (c - 1, c) if 0 <= j < len(_QWERTY[other])]
        out = "".join(n for n in near if n)
        return out.upper() if ch.isupper() else out
    return ""


def char_variants(word: str, ops: Sequence[str], limit: int) -> list[str]:
    """Misspellings of ``word`` one operation away, interleaved across ``ops``, at most
    ``limit``: adjacent ``swap``, keyboard-neighbour ``substitute``, ``insert`` (a
    keyboard neighbour of the previous letter) and ``delete``."""
    per_op: dict[str, list[str]] = {op: [] for op in ops}
    n = len(word)
    for i in range(n):
        if "delete" in per_op and n > 1:
            per_op["delete"].append(word[:i] + word[i + 1 :])
        if "swap" in per_op and i + 1 < n and word[i] != word[i + 1]:
            per_op["swap"].append(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
        if "substitute" in per_op:
            per_op["substitute"] += [
                word[:i] + c + word[i + 1 :] for c in _keyboard_neighbours(word[i])
            ]
        if "insert" in per_op:
            per_op["insert"] += [
                word[: i + 1] + c + word[i + 1 :] for c in _keyboard_neighbours(word[i])[:2]
            ]
    out: list[str] = []
    lists = [per_op[op] for op in ops]
    for group in zip(
        *(lst + [""] * (max(map(len, lists)) - len(lst)) for lst in lists), strict=True
    ):
        for w in group:
            if w and w != word and w not in out:
                out.append(w)
    return out[:limit]


CHAR_OPS = ("swap", "substitute", "insert", "delete")


@dataclass
class CharSpace:
    """Character edits inside words (one operation per word); cost = Levenshtein."""

    ops: Sequence[str] = CHAR_OPS
    max_candidates: int = 24
    min_length: int = 2
    stopwords: frozenset[str] = frozenset()
    max_edit_rate: float | None = None
    search_config: DiscreteConfig | None = None
    name: str = "char"
    modality: str = "text"

    def __post_init__(self) -> None:
        unknown = set(self.ops) - set(CHAR_OPS)
        if unknown or not self.ops:
            raise ValueError(f"ops: expected some of {list(CHAR_OPS)}, got {list(self.ops)}")

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return check_texts(inputs)

    def problem(self, model: Any, x: str) -> TextProblem:
        view = TextView(x)
        seen, notes = _seen_words(model, view)
        edits: dict[int, list[Edit]] = {}
        for p in range(seen):
            word = view.words[p]
            if len(word) < self.min_length or word.lower() in self.stopwords:
                continue
            variants = char_variants(word, self.ops, self.max_candidates)
            if variants:
                edits[p] = [
                    Edit(p, v, float(levenshtein(word, v)), f"{word} -> {v}") for v in variants
                ]
        if not edits:
            notes.append("no word can be edited")
        limit = None if self.max_edit_rate is None else max(1, int(self.max_edit_rate * seen))
        return TextProblem(view, model, edits, seen, notes, max_edits=limit, kind="char")


@dataclass(frozen=True)
class WordEdits:
    """The word-substitution distance: the number of words changed."""

    name: str = "word-edits"
    units: str = "words"

    def measure(self, x: str, x_adv: str, edits: Sequence[Edit]) -> float:
        """The summed edit costs: one per word changed."""
        return float(sum(e.cost for e in edits))


@dataclass(frozen=True)
class Levenshtein:
    """The character distance: Levenshtein distance between original and adversarial text."""

    name: str = "levenshtein"
    units: str = "characters"

    def measure(self, x: str, x_adv: str, edits: Sequence[Edit]) -> float:
        """Levenshtein distance of the two texts (at most the summed edit costs)."""
        return float(levenshtein(x, x_adv))


def space_options(search: Mapping[str, Any] | None) -> DiscreteConfig | None:
    """The engine's search knobs from a task's ``[space.search]`` table."""
    return None if search is None else DiscreteConfig(**dict(search))
