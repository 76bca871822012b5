"""Where replacement words come from: embedding neighbours, WordNet, TextAttack.

A candidate source is called with a text and a word position and returns replacement
words (most similar first); the word space then filters them (stopwords, distance,
TextAttack constraints) and turns them into edits. Sources:

* :class:`EmbeddingNeighbours` — the ``k`` nearest words by cosine similarity in an
  embedding matrix: the model's own input embeddings (:func:`model_neighbours`) or a local
  ``.npz`` holding ``words`` and ``vectors`` (:func:`matrix_neighbours`); ``max_distance``
  bounds the cosine distance ``1 - cos``;
* :class:`WordNetSynonyms` — WordNet lemmas, only where WordNet is installed offline;
* ``mmargin_text.textattack_bridge.TextAttackSource`` — any TextAttack transformation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmargin_text.words import TextView, match_case


class CandidateSource(Protocol):
    """Replacement words for word ``position`` of ``view`` (best first)."""

    def __call__(self, view: TextView, position: int) -> list[str]:
        """The candidate replacements (the original word excluded)."""
        ...


def _is_word(token: str) -> bool:
    return bool(token) and token.replace("'", "").replace("-", "").isalpha()


class EmbeddingNeighbours:
    """Nearest neighbours by cosine similarity among the rows of an embedding matrix."""

    def __init__(
        self,
        words: Sequence[str],
        vectors: np.ndarray,
        k: int = 15,
        max_distance: float | None = None,
        embed: Callable[[str], np.ndarray | None] | None = None,
    ) -> None:
        if len(words) != len(vectors):
            raise ValueError(f"got {len(words)} words and {len(vectors)} vectors")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        keep = [i for i, w in enumerate(words) if _is_word(w)]
        self.words = [str(words[i]).lower() for i in keep]
        vec = np.asarray(vectors, dtype=np.float32)[keep]
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        self.unit = vec / np.maximum(norms, 1e-12)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.k, self.max_distance, self.embed = k, max_distance, embed
        self._cache: dict[str, list[str]] = {}

    def neighbours(self, word: str) -> list[str]:
        """The ``k`` nearest other words of ``word`` (lower case), nearest first."""
        key = word.lower()
        if key not in self._cache:
            row = self.index.get(key)
            found: list[str] = []
            query = self.unit[row] if row is not None else self._embed(word)
            if query is not None:
                sims = self.unit @ query
                if row is not None:
                    sims[row] = -np.inf
                top = np.argpartition(-sims, min(self.k, len(sims) - 1))[: self.k]
                top = top[np.argsort(-sims[top], kind="stable")]
                limit = -np.inf if self.max_distance is None else 1.0 - self.max_distance
                found = [self.words[i] for i in top if sims[i] >= limit and np.isfinite(sims[i])]
            self._cache[key] = found
        return self._cache[key]

    def _embed(self, word: str) -> np.ndarray | None:
        """A unit vector for a word outside the matrix (several word pieces), if possible."""
        vec = None if self.embed is None else self.embed(word)
        if vec is None:
            return None
        norm = float(np.linalg.norm(vec))
        return (np.asarray(vec, np.float32) / norm) if norm > 0 else None

    def __call__(self, view: TextView, position: int) -> list[str]:
        word = view.words[position]
        return [match_case(w, word) for w in self.neighbours(word) if w != word.lower()]


def model_neighbours(
    adapter: Any, k: int = 15, max_distance: float | None = None
) -> EmbeddingNeighbours:
    """Neighbours in the model's own input embeddings, among the vocabulary tokens that are
    whole words (``adapter.whole_words()``); a word of several pieces is looked up by the
    mean of its pieces' embeddings."""
    from mmargin_text.adapters import EmbeddingTextModel

    if not isinstance(adapter, EmbeddingTextModel):
        raise ValueError(
            "this model exposes no input embeddings (a black box?): use "
            "candidates = 'matrix' with a local .npz, 'wordnet' or 'textattack'"
        )
    weights = adapter.embedding_matrix().detach().cpu().numpy()
    vocab = adapter.whole_words()
    ids = [i for i, _ in vocab]

    def pieces(word: str) -> np.ndarray | None:
        found = adapter.word_ids(word)
        return weights[found].mean(axis=0) if found else None

    return EmbeddingNeighbours(
        [w for _, w in vocab], weights[ids], k=k, max_distance=max_distance, embed=pieces
    )


def matrix_neighbours(
    path: str, k: int = 15, max_distance: float | None = None
) -> EmbeddingNeighbours:
    """Neighbours in a local ``.npz`` with arrays ``words`` (str) and ``vectors`` (N, D)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such embedding file: {file}")
    with np.load(file, allow_pickle=False) as data:
        missing = {"words", "vectors"} - set(data.files)
        if missing:
            raise ValueError(f"{file.name}: missing arrays {sorted(missing)}")
        return EmbeddingNeighbours(
            [str(w) for w in data["words"]], data["vectors"], k=k, max_distance=max_distance
        )


class WordNetSynonyms:
    """WordNet lemmas sharing a synset with the word (needs WordNet installed offline)."""

    def __init__(self, k: int = 15) -> None:
        from mmargin_text.offline import ensure_wordnet

        if ensure_wordnet() is None:
            raise ValueError(
                "WordNet is not installed: copy Debian's wordnet-base files into "
                "$NLTK_DATA/corpora/wordnet (see mmargin_text/offline/README.md)"
            )
        from nltk.corpus import wordnet

        self.wordnet, self.k = wordnet, k

    def __call__(self, view: TextView, position: int) -> list[str]:
        word = view.words[position]
        found: list[str] = []
        for synset in self.wordnet.synsets(word.lower()):
            for lemma in synset.lemma_names():
                name = lemma.replace("_", " ")
                if " " not in name and name.lower() != word.lower() and name not in found:
                    found.append(match_case(name, word))
        return found[: self.k]


class WordList:
    """Candidates from a local word list: one line per word, ``word candidate ...``
    (whitespace separated, ``#`` starts a comment); looked up lower-cased."""

    def __init__(self, table: dict[str, list[str]], k: int = 15) -> None:
        self.table, self.k = table, k

    @classmethod
    def read(cls, path: str, k: int = 15) -> WordList:
        """Read a word list file."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no such word list: {file}")
        table: dict[str, list[str]] = {}
        for line in file.read_text(encoding="utf-8").splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2:
                table.setdefault(fields[0].lower(), []).extend(fields[1:])
        if not table:
            raise ValueError(f"{file.name}: no line 'word candidate ...' found")
        return cls(table, k=k)

    def __call__(self, view: TextView, position: int) -> list[str]:
        word = view.words[position]
        return [match_case(w, word) for w in self.table.get(word.lower(), [])[: self.k]]
