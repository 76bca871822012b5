"""TextAttack inside mmargin: transformations as candidate sources, constraints as filters,
and the transformation that lets a TextAttack search walk an mmargin word space.

Everything imports TextAttack through :func:`mmargin_text.offline.import_textattack`, so it
never reaches for the network. Task files name TextAttack objects as
``"textattack.transformations:WordSwapQWERTY"`` or as a table
``{class = "textattack.constraints.overlap:MaxWordsPerturbed", max_num_words = 3}``; only
classes under ``textattack.`` are accepted.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmargin_text.offline import import_textattack
from mmargin_text.words import TextView


def ta_object(spec: Any) -> Any:
    """A TextAttack object from an instance, ``"module:Class"`` or ``{class = ..., **opts}``."""
    if not isinstance(spec, (str, Mapping)):
        return spec
    import_textattack()
    options = dict(spec) if isinstance(spec, Mapping) else {}
    path = options.pop("class", None) if isinstance(spec, Mapping) else spec
    if not isinstance(path, str) or ":" not in path or not path.startswith("textattack."):
        raise ValueError(f"expected a TextAttack class as 'textattack.module:Class', got {path!r}")
    module_name, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {path!r} ({exc})") from None
    if not inspect.isclass(cls) or not cls.__module__.startswith("textattack."):
        # a task file names this: only TextAttack's own classes, never a re-exported callable
        raise ValueError(f"{path!r} is not a class defined in TextAttack")
    return cls(**options)


_SWAP: type | None = None


def swap_class() -> type:
    """``MmarginSwap``: a TextAttack ``WordSwap`` whose replacements come from a word-space
    problem (``self.problem``); TextAttack searches and constraints accept it as a swap."""
    global _SWAP
    if _SWAP is None:
        import_textattack()
        from textattack.transformations import WordSwap

        class MmarginSwap(WordSwap):
            """Word swaps at the positions, with the candidates, of an mmargin problem."""

            def __init__(self) -> None:
                super().__init__()
                self.problem: Any = None

            def _get_transformations(self, current_text: Any, indices_to_modify: Any) -> list:
                out = []
                for i in sorted(indices_to_modify):
                    for edit in [] if self.problem is None else self.problem.candidates(i):
                        out.append(current_text.replace_word_at_index(i, str(edit.value)))
                return out

        _SWAP = MmarginSwap
    return _SWAP


class TextAttackSource:
    """Candidates from any TextAttack transformation (words of one-word replacements)."""

    def __init__(self, transformation: Any) -> None:
        self.transformation = ta_object(transformation)
        from textattack.shared import AttackedText

        self._text = AttackedText

    def __call__(self, view: TextView, position: int) -> list[str]:
        attacked = self._text(view.text)
        if attacked.words != view.words:
            return []
        outs = self.transformation(attacked, indices_to_modify=[position])
        return [t.words[position] for t in outs if len(t.words) == len(attacked.words)]


def constraint_filters(
    constraints: Sequence[Any],
) -> tuple[list[Callable[..., list[str]]], Callable[..., Any] | None]:
    """(word filters, position filter) applying TextAttack constraints to a word space.

    Pre-transformation constraints (stopwords, input column ...) restrict positions; the
    others are checked on each candidate text against the original text.
    """
    if not constraints:
        return [], None
    import_textattack()
    from textattack.constraints import PreTransformationConstraint
    from textattack.shared import AttackedText

    objects = [ta_object(c) for c in constraints]
    pre = [c for c in objects if isinstance(c, PreTransformationConstraint)]
    post = [c for c in objects if not isinstance(c, PreTransformationConstraint)]
    swap = swap_class()()

    def positions(view: TextView) -> set[int] | None:
        if not pre:
            return None
        attacked = AttackedText(view.text)
        allowed = set(range(len(attacked.words)))
        for c in pre:
            allowed &= set(c(attacked, swap))
        return allowed

    def keep(view: TextView, position: int, words: list[str]) -> list[str]:
        attacked = AttackedText(view.text)
        texts = []
        for w in words:
            t = attacked.replace_word_at_index(position, w)
            t.attack_attrs["last_transformation"] = swap
            texts.append(t)
        for c in post:
            texts = c.call_many(texts, attacked)
        return [t.words[position] for t in texts]

    return ([keep] if post else []), (positions if pre else None)


def minilm_sentence_encoder(
    threshold: float = 0.8,
    window_size: int | None = 15,
    compare_against_original: bool = True,
    skip_text_shorter_than_window: bool = False,
) -> Any:
    """A TextAttack ``SentenceEncoder`` constraint on the local MiniLM encoder (cosine of
    mean-pooled all-MiniLM-L6-v2 embeddings): TextFooler's Universal Sentence Encoder
    check, offline. The encoder is :meth:`~mmargin_text.constraints.SentenceEncoder.shared`,
    so its embeddings are cached beside the word space's similarity filter."""
    import_textattack()
    import torch
    from textattack.constraints.semantics.sentence_encoders import SentenceEncoder

    from mmargin_text.constraints import SentenceEncoder as MiniLM

    class MiniLMSentenceEncoder(SentenceEncoder):
        """TextAttack's sentence-encoder constraint, embeddings from local MiniLM."""

        def __init__(self) -> None:
            super().__init__(
                threshold=threshold,
                metric="cosine",
                compare_against_original=compare_against_original,
                window_size=window_size,
                skip_text_shorter_than_window=skip_text_shorter_than_window,
            )
            self.model = self  # TextAttack's single-pair path calls self.model.encode

        def encode(self, sentences: list[str]) -> Any:
            return torch.as_tensor(MiniLM.shared().encode(list(sentences)))

    return MiniLMSentenceEncoder()
