"""The word and character spaces against exact oracles, tasks end to end, bad inputs."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmargin import run_task
from mmargin.plugin import Status
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_text.adapters import CallableTextAdapter
from mmargin_text.plugin import _levenshtein, _word_edits, char_space, word_space
from mmargin_text.words import words

TASKS = Path(__file__).resolve().parents[3] / "tasks"
GROUPS = 12
PER_GROUP = 4


@pytest.fixture(scope="module")
def synonyms(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str], np.ndarray]:
    """A local embedding matrix whose neighbourhoods are exact synonym groups."""
    rng = np.random.default_rng(0)
    vocab = [f"q{chr(97 + g)}{chr(97 + i)}" for g in range(GROUPS) for i in range(PER_GROUP)]
    vectors = np.zeros((len(vocab), GROUPS))
    for j in range(len(vocab)):
        vectors[j, j // PER_GROUP] = 1.0
    vectors += rng.normal(scale=1e-3, size=vectors.shape)
    path = tmp_path_factory.mktemp("emb") / "synonyms.npz"
    np.savez(path, words=np.array(vocab), vectors=vectors)
    weights = rng.normal(size=len(vocab))
    return str(path), vocab, weights


def _bow(vocab: list[str], weights: np.ndarray) -> CallableTextAdapter:
    index = {w: i for i, w in enumerate(vocab)}

    def scores(texts: list[str]) -> np.ndarray:
        s = np.array([sum(weights[index[w]] for w in words(t) if w in index) for t in texts])
        return np.stack([np.zeros_like(s), s], axis=1)

    return CallableTextAdapter(scores)


def _oracle(text: str, vocab: list[str], weights: np.ndarray) -> float:
    """Fewest substitutions for a bag-of-words linear model: sort the best gains."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = [index[w] for w in words(text)]
    s = float(weights[ids].sum())
    sign = 1.0 if s > 0 else -1.0
    gains = sorted(
        (
            sign * weights[i]
            - min(
                sign * weights[j]
                for j in range(i // PER_GROUP * PER_GROUP, (i // PER_GROUP + 1) * PER_GROUP)
            )
            for i in ids
        ),
        reverse=True,
    )
    left = sign * s
    for k, g in enumerate(gains, start=1):
        left -= g
        if left < -1e-4:
            return float(k)
    return math.inf


def _texts(
    vocab: list[str], weights: np.ndarray, n: int, lengths: tuple[int, int], seed: int
) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    while len(texts) < n:
        picks = rng.integers(0, len(vocab), size=int(rng.integers(*lengths)))
        s = weights[picks].sum()
        if abs(s) > 1e-3:
            texts.append(" ".join(vocab[i] for i in picks) + " .")
            labels.append(int(s > 0))
    return texts, labels


@pytest.mark.parametrize(("method", "order"), [("greedy", "best-single"), ("beam", "auto")])
def test_word_space_matches_the_bag_of_words_oracle(synonyms: Any, method: str, order: str) -> None:
    path, vocab, weights = synonyms
    space = word_space(
        candidates="matrix",
        matrix=path,
        k=PER_GROUP - 1,
        max_distance=0.1,
        stopwords=False,
        search={"method": method, "order": order},
    )
    texts, labels = _texts(vocab, weights, 100, (4, 14), seed=1)
    found = minimal_flip(
        _bow(vocab, weights),
        space,
        _word_edits(),
        np.array(texts, object),
        np.array(labels),
        spec=SearchSpec(budget=3000, exact="never"),
    )
    agree = total = 0
    for text, r in zip(texts, found, strict=True):
        exact = _oracle(text, vocab, weights)
        if math.isinf(exact):
            assert r.status is Status.NOT_FLIPPED
            continue
        assert r.status is Status.FLIPPED and r.verified
        assert r.margin >= exact
        assert r.extras["words_changed"] == r.margin == len(r.extras["edits"])
        assert r.extras["adversarial_text"] == r.adversarial != text
        total += 1
        agree += r.margin == exact
    assert total >= 60 and agree / total >= 0.95, f"{agree}/{total}"


def test_exhaustive_mode_on_short_sentences_is_exact(synonyms: Any) -> None:
    path, vocab, weights = synonyms
    rng = np.random.default_rng(2)
    pair = rng.normal(scale=0.5, size=(len(vocab), len(vocab)))
    index = {w: i for i, w in enumerate(vocab)}

    def score(text: str) -> float:
        ids = [index[w] for w in words(text) if w in index]
        return float(weights[ids].sum() + sum(pair[a, b] for a, b in itertools.pairwise(ids)))

    model = CallableTextAdapter(lambda ts: np.array([[0.0, score(t)] for t in ts]))
    texts, _ = _texts(vocab, weights, 25, (2, 4), seed=3)
    texts = [t for t in texts if abs(score(t)) > 1e-3]
    labels = [int(score(t) > 0) for t in texts]
    space = word_space(
        candidates="matrix",
        matrix=path,
        k=PER_GROUP - 1,
        max_distance=0.1,
        stopwords=False,
        search={"method": "exhaustive"},
    )
    found = minimal_flip(
        model,
        space,
        _word_edits(),
        np.array(texts, object),
        np.array(labels),
        spec=SearchSpec(budget=5000),
    )
    for text, label, r in zip(texts, labels, found, strict=True):
        ws = words(text)
        best = math.inf
        options = [[v for v in vocab if index[v] // PER_GROUP == index[w] // PER_GROUP] for w in ws]
        for combo in itertools.product(*options):
            s = score(" ".join(combo) + " .")
            if (s < 0 if label else s > 0) and abs(s) > 1e-4 * (1 + abs(s)):
                best = min(best, sum(a != b for a, b in zip(combo, ws, strict=True)))
        assert r.margin == best and r.lower_bound == best, (text, r.margin, best, r.message)


def _run(task: str, tmp_path: Path, samples: int) -> list[dict[str, Any]]:
    out = run_task(TASKS / task, out=tmp_path / task, samples=samples)
    assert out.out is not None
    return [json.loads(line) for line in (out.out / "results.jsonl").read_text().splitlines()]


def test_word_task_end_to_end(tmp_path: Path, cnn: Any) -> None:
    rows = _run("text-mr-word.toml", tmp_path, 12)
    flipped = [r for r in rows if r["status"] == "flipped"]
    assert len(flipped) >= 6
    for r in flipped:
        assert r["verified"] and r["margin"] == r["extras"]["words_changed"] >= 1
        adv = r["extras"]["adversarial_text"]
        assert int(cnn([adv]).argmax()) == r["adv_label"] != r["label"]
        assert r["queries"] <= 1000 and 0 < r["extras"]["words_changed_pct"] <= 100
        assert r["lower_bound"] is not None and r["lower_bound"] <= r["margin"]


def test_char_task_end_to_end(tmp_path: Path, cnn: Any) -> None:
    from mmargin_text.words import levenshtein

    rows = _run("text-mr-char.toml", tmp_path, 8)
    flipped = [r for r in rows if r["status"] == "flipped"]
    assert len(flipped) >= 4
    for r in flipped:
        original, adv = r["extras"]["original_text"], r["extras"]["adversarial_text"]
        assert r["margin"] == levenshtein(original, adv) == r["extras"]["levenshtein"]
        assert int(cnn([adv]).argmax()) != r["label"]


def test_bad_inputs_get_a_status_not_a_crash(cnn: Any) -> None:
    long = " ".join(["great"] * 30 + ["dreadful"] * 80)
    texts = ["", "   \n", "the of and", long, "a masterpiece four years in the making ."]
    space = word_space(k=10)
    short = CallableTextAdapter(lambda ts: cnn(ts).numpy(), max_length=40)
    found = minimal_flip(
        cnn,
        space,
        _word_edits(),
        np.array(texts, object),
        np.array([1, 1, 1, 1, 1]),
        spec=SearchSpec(budget=300),
    )
    assert [r.status for r in found[:2]] == [Status.ERROR, Status.ERROR]
    assert "empty" in found[0].message
    assert found[2].status in (Status.NOT_FLIPPED, Status.MISCLASSIFIED)
    if found[2].status is Status.NOT_FLIPPED:
        assert found[2].lower_bound == math.inf and "no position" in found[2].message
    trunc = minimal_flip(
        short,
        space,
        _word_edits(),
        np.array([long], object),
        np.array([0]),
        spec=SearchSpec(budget=200),
    )[0]
    assert any("truncated" in n for n in trunc.extras.get("notes", [])) or trunc.status in (
        Status.MISCLASSIFIED,
        Status.ERROR,
    )
    if trunc.status is Status.FLIPPED:
        assert all(e["position"] < 40 for e in trunc.extras["edits"])


def test_char_candidates_and_costs() -> None:
    from mmargin_text.spaces import char_variants

    v = char_variants("good", ("swap", "substitute", "insert", "delete"), 50)
    assert "god" in v and "goid" in v and "ogod" in v and "good" not in v
    problem = char_space().problem(CallableTextAdapter(lambda t: np.zeros((len(t), 2))), "so good")
    costs = {e.value: e.cost for e in problem.candidates(1)}
    assert costs["god"] == 1 and costs["ogod"] == 2


def test_levenshtein_distance_measures_texts() -> None:
    assert _levenshtein().measure("a good film", "a god film", ()) == 1
