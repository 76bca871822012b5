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

from collections.abc import Sequence
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
        self.k, self.max_distance = k, max_distance
        self._cache: dict[str, list[str]] = {}

    def neighbours(self, word: str) -> list[str]:
        """The ``k`` nearest other words of ``word`` (lower case), nearest first."""
        key = word.lower()
        if key not in self._cache:
            row = self.index.get(key)
            found: list[str] = []
            if row is not None:
                sims = self.unit @ self.unit[row]
                sims[row] = -np.inf
                top = np.argpartition(-sims, min(self.k, len(sims) - 1))[: self.k]
                top = top[np.argsort(-sims[top], kind="stable")]
                limit = -np.inf if self.max_distance is None else 1.0 - self.max_distance
                found = [self.words[i] for i in top if sims[i] >= limit and np.isfinite(sims[i])]
            self._cache[key] = found
        return self._cache[key]

    def __call__(self, view: TextView, position: int) -> list[str]:
        word = view.words[position]
        return [match_case(w, word) for w in self.neighbours(word)]


def model_neighbours(
    adapter: Any, k: int = 15, max_distance: float | None = None
) -> EmbeddingNeighbours:
    """Neighbours in the model's own input embeddings (whole-word tokens only)."""
    from mmargin_text.adapters import EmbeddingTextModel

    if not isinstance(adapter, EmbeddingTextModel):
        raise ValueError(
            "this model exposes no input embeddings (a black box?): use "
            "candidates = 'matrix' with a local .npz, 'wordnet' or 'textattack'"
        )
    weights = adapter.embedding_matrix().detach().cpu().numpy()
    ids = [int(i) for i in adapter.projectable]
    words = [adapter.token_text(i).strip() for i in ids]
    return EmbeddingNeighbours(words, weights[ids], k=k, max_distance=max_distance)


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
        from mmargin_text.offline import use_offline_data

        use_offline_data()
        import nltk
        from nltk.corpus import wordnet

        try:
            nltk.data.find("corpora/wordnet")
        except LookupError:
            raise ValueError(
                "WordNet is not installed: copy Debian's wordnet-base files into "
                "$NLTK_DATA/corpora/wordnet (see mmargin_text/offline/README.md)"
            ) from None
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
