"""A tiny transformer with multi-piece words, built in the test (no hub, no network).

Oracle: brute-force enumeration of every combination of whole-word substitutions, by
number of edits, scored by the model itself — independent of the engine. The engine's
greedy and beam searches must never report fewer edits than that minimum, and must equal
it on at least 95% of the short sentences. Words such as ``unwatchable`` are three word
pieces; candidates are whole words of one or several pieces.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmargin.plugin import DiscreteConfig, Status
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_text.adapters import HFAdapter, adapt_text_model
from mmargin_text.models import hf_classifier
from mmargin_text.plugin import _embedding_l2, _word_edits, embedding_space, word_space
from mmargin_text.words import TextView

PIECES = ["un", "over", "##watch", "##able", "##rated", "##ind", "##ul", "##gent", "##ly"]
WORDS = [
    "the",
    "a",
    "film",
    "movie",
    "plot",
    "story",
    "cast",
    "is",
    "was",
    "good",
    "bad",
    "great",
    "dull",
    "fun",
    "fine",
    "and",
    "very",
]
SYNONYMS = {
    "good": ["great", "fine", "unwatchable"],
    "bad": ["dull", "unwatchable", "overrated"],
    "film": ["movie", "story"],
    "movie": ["film", "plot", "overindulgent"],
    "dull": ["bad", "overrated", "fun"],
    "unwatchable": ["bad", "dull", "fine"],
    "overrated": ["good", "dull", "overindulgent"],
    "overindulgent": ["dull", "fun"],
    "great": ["good", "fun", "overrated"],
    "fun": ["great", "dull"],
    "plot": ["story", "cast"],
    "story": ["plot", "film"],
}
EDITABLE = sorted(SYNONYMS)


POSITIVE = {"good", "great", "fun", "fine"}
NEGATIVE = {"bad", "dull", "unwatchable", "overrated", "overindulgent"}


def toy_label(text: str) -> int:
    """The toy sentiment the tiny model is trained on: more positive than negative words."""
    words = text.split()
    return int(sum(w in POSITIVE for w in words) > sum(w in NEGATIVE for w in words))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 24) and a WordPiece vocabulary where ``unwatchable``,
    ``overrated`` and ``overindulgent`` are several pieces, trained for a few seconds on a
    toy sentiment task (a random transformer's landscape is nothing like a classifier's)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-wordpiece")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=40,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config)
    texts = sentences(200, seed=1)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([toy_label(t) for t in texts])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimiser.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimiser.step()
    model.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(folder: Path) -> HFAdapter:
    adapter = adapt_text_model(hf_classifier(str(folder)))
    assert isinstance(adapter, HFAdapter)
    return adapter


@pytest.fixture(scope="module")
def word_list(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("words") / "synonyms.txt"
    lines = [f"{w} {' '.join(c)}" for w, c in SYNONYMS.items()]
    path.write_text("# word candidates\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def sentences(n: int = 40, seed: int = 0) -> list[str]:
    """Short sentences of 4-6 words, 2-4 of them editable."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        edit = rng.sample(EDITABLE, rng.randint(2, 4))
        fill = rng.sample(["the", "a", "is", "was", "and", "very"], rng.randint(1, 2))
        words = edit + fill
        rng.shuffle(words)
        text = " ".join(words)
        if text not in out:
            out.append(text)
    return out


def brute_force(model: HFAdapter, text: str, label: int) -> float:
    """The fewest substitutions that flip ``model`` (inf: none does), by enumeration."""
    view = TextView(text)
    cands = {p: SYNONYMS[w] for p, w in enumerate(view.words) if w in SYNONYMS}
    for level in range(1, len(cands) + 1):
        texts = [
            view.replace(dict(zip(positions, choice, strict=True)))
            for positions in itertools.combinations(sorted(cands), level)
            for choice in itertools.product(*(cands[p] for p in positions))
        ]
        with torch.no_grad():
            pred = model(texts).argmax(dim=1)
        if bool((pred != label).any()):
            return float(level)
    return float("inf")


def test_multi_piece_words_are_one_word(model: HFAdapter, word_list: Path) -> None:
    assert len(model.word_ids("unwatchable")) == 3 and len(model.word_ids("overindulgent")) == 4
    assert model.token_id("unwatchable") is None and model.token_id("good") is not None
    text = "the unwatchable movie was overrated"
    problem = word_space(candidates="list", words=str(word_list), stopwords=False).problem(
        model, text
    )
    assert problem.positions() == [1, 2, 4]  # whole words, however many pieces
    assert [e.value for e in problem.candidates(1)] == ["bad", "dull", "fine"]
    adv = problem.apply([problem.candidates(2)[2]])  # movie -> overindulgent (4 pieces)
    assert adv == "the unwatchable overindulgent was overrated"


def test_embedding_candidates_are_whole_words(model: HFAdapter) -> None:
    whole = dict((w, i) for i, w in model.whole_words())
    assert set(whole) == set(WORDS) | {"un", "over"}  # no ##piece
    problem = word_space(k=5, stopwords=False).problem(model, "the unwatchable film")
    assert 1 in problem.positions()  # a three-piece word gets neighbours too
    for p in problem.positions():
        assert all(str(e.value) in whole for e in problem.candidates(p))


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_search_matches_brute_force(model: HFAdapter, word_list: Path, method: str) -> None:
    texts = sentences()
    labels = model(texts).argmax(dim=1).numpy()  # flip the model's own decisions
    found = minimal_flip(
        model,
        word_space(candidates="list", words=str(word_list), stopwords=False),
        _word_edits(),
        np.array(texts, object),
        labels,
        spec=SearchSpec(budget=2000, exact="never", discrete=DiscreteConfig(method=method)),
    )
    truth = [brute_force(model, t, int(y)) for t, y in zip(texts, labels, strict=True)]
    assert sum(np.isfinite(truth)) >= len(texts) // 2 and truth.count(2.0) >= 5, truth
    equal = 0
    for r, best in zip(found, truth, strict=True):
        assert r.status in (Status.FLIPPED, Status.NOT_FLIPPED), r
        assert r.margin >= best, (r.sample, r.margin, best)  # never below the minimum
        if r.status is Status.FLIPPED:
            assert int(model([r.adversarial]).argmax()) != r.label
        equal += r.margin == best
    assert equal >= 0.95 * len(texts), (equal, [r.margin for r in found], truth)


def test_embedding_projection_reads_as_text(model: HFAdapter) -> None:
    space = embedding_space()
    text = "The unwatchable movie was overrated!"
    enc = space.encode(model, text)
    matrix = model.embedding_matrix().detach()
    point = enc.point.copy()
    # move the pieces of "unwatchable" onto those of "overrated"'s: a readable word results
    ids = model.word_ids("overrated")
    point[2] = matrix[ids[0]].numpy()
    point[3] = matrix[ids[1]].numpy()
    point[4] = matrix[model.tokenizer.convert_tokens_to_ids("##ind")].numpy()
    projected, extras = space.decode(model, text, enc, point)
    assert projected == "The overratedind movie was overrated!"  # case and "!" kept
    assert "##" not in projected and "implausible" not in extras
    assert extras["highlighted"] == "The [unwatchable -> overratedind] movie was overrated!"


def test_absurd_margins_are_flagged(model: HFAdapter) -> None:
    space = embedding_space()
    text = "the film was good"
    enc = space.encode(model, text)
    matrix = model.embedding_matrix().detach()
    rows = matrix[model.projectable]
    free = [t for t, s in enumerate(enc.info.spans) if s is not None]
    reach = float(
        np.sqrt(
            sum(float(torch.cdist(matrix[enc.info.ids[t]][None], rows).max()) ** 2 for t in free)
        )
    )
    inside = enc.point.copy()
    inside[free[0]] += 0.5 * reach / np.sqrt(inside.shape[1])
    _, ok = space.decode(model, text, enc, inside)
    assert "implausible" not in ok and ok["max_token_change"] == pytest.approx(reach, rel=1e-5)
    far = enc.point.copy()
    far[free[0]] += 1.01 * reach  # each coordinate: far beyond
    _, flagged = space.decode(model, text, enc, far)
    assert "implausible" in flagged
    scale = float(rows.norm(dim=1).median())
    margin = float(np.linalg.norm(far - enc.point))
    assert flagged["margin_in_token_norms"] == pytest.approx(margin / scale, rel=1e-5)


def test_implausible_flip_is_not_reported_as_a_flip(model: Any) -> None:
    """Through the engine: a space whose adversarial point lands far beyond any token (here
    pushed there on purpose) reports the sample as not flipped, with the reason."""
    from mmargin_text.embedding import EmbeddingSpace

    class FarSpace(EmbeddingSpace):
        def decode(self, model: Any, x: str, encoding: Any, point: np.ndarray) -> Any:
            return super().decode(model, x, encoding, point + 1e3)

    texts = ["the film was good", "a dull and overrated movie"]
    labels = model(texts).argmax(dim=1).numpy()
    found = minimal_flip(
        model,
        FarSpace(),
        _embedding_l2(),
        np.array(texts, object),
        labels,
        spec=SearchSpec(budget=100),
    )
    ordinary = minimal_flip(
        model,
        embedding_space(),
        _embedding_l2(),
        np.array(texts, object),
        labels,
        spec=SearchSpec(budget=100),
    )
    assert any(r.status is Status.FLIPPED for r in ordinary)
    for r, plain in zip(found, ordinary, strict=True):
        if plain.status is Status.FLIPPED:
            assert r.status is Status.NOT_FLIPPED and r.margin == float("inf")
            assert r.message.startswith("implausible flip")
            assert r.extras["implausible_margin"] == pytest.approx(plain.margin)
