"""The conformance kit on everything the text plugin registers: the ``word``, ``char`` and
``embedding`` spaces, the ``word-edits``, ``levenshtein`` and ``embedding-l2`` distances,
the ``text`` and ``text-callable`` adapters (the MR word CNN and a tiny local BERT), and
the ``mr`` and ``text-file`` loaders — looked up through the plugin registry."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmargin import plugins
from mmargin.testing import (
    Case,
    Check,
    adapter_case,
    discrete_case,
    distance_case,
    edit_distance_case,
    loader_case,
    parametrize_with_checks,
    unchecked_registrations,
)
from mmargin.testing import (
    build_registered as _make,
)

SENTENCES = [
    "a gripping and beautiful film with a great cast",
    "the plot is dull and the acting is terrible",
    "one of the best movies of the year",
]


@functools.cache
def _cnn() -> Any:
    return _make("adapters", "text", _make("models", "mr_cnn"))


@functools.cache
def _bert_folder() -> Path:
    """A 1-layer BERT (hidden 16) and its WordPiece tokenizer in a temporary folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = Path(tempfile.mkdtemp(prefix="mmargin-bert-"))
    words = sorted({w for s in SENTENCES for w in s.split()} | {"good", "bad", "movie"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ly"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32, num_labels=2)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@functools.cache
def _bert() -> Any:
    return _make("adapters", "text", _make("models", "hf_classifier", path=str(_bert_folder())))


@functools.cache
def _minilm_mr() -> Any:
    """The ``minilm_mr`` factory's load path, on a copy of the tiny BERT marked as built
    (building the real one takes minutes: ``python -m mmargin_text.minilm``)."""
    import shutil

    folder = Path(tempfile.mkdtemp(prefix="mmargin-minilm-")) / "built"
    shutil.copytree(_bert_folder(), folder)
    (folder / "mmargin_build.json").write_text('{"test_accuracy": null}', encoding="utf-8")
    return _make("adapters", "text", _make("models", "minilm_mr", path=str(folder)))


def _black_box(texts: Sequence[str]) -> np.ndarray:
    """Positive when the text holds more of 'great best beautiful' than 'dull terrible'."""
    good = np.array([sum(t.count(w) for w in ("great", "best", "beautiful")) for t in texts])
    bad = np.array([sum(t.count(w) for w in ("dull", "terrible")) for t in texts])
    return np.stack([bad - good, good - bad], axis=1).astype(np.float64)


def _pairs(space: str) -> list[tuple[str, str, list[Any]]]:
    """(text, edited text, edits) triples from the space's own problems."""
    built = _make("spaces", space)
    out = []
    for text in SENTENCES:
        problem = built.problem(_cnn(), text)
        edits = [problem.candidates(p)[0] for p in problem.positions()[:2]]
        out.append((text, problem.apply(edits), edits))
    return out


def _text_file() -> str:
    folder = Path(tempfile.mkdtemp(prefix="mmargin-texts-"))
    rows = "text,label\n" + "".join(f'"{s}",{i % 2}\n' for i, s in enumerate(SENTENCES))
    (folder / "reviews.csv").write_text(rows, encoding="utf-8")
    return str(folder / "reviews.csv")


CASES: list[Case] = [
    discrete_case("word", lambda: _make("spaces", "word"), _cnn, lambda: SENTENCES),
    discrete_case("word-bert", lambda: _make("spaces", "word", k=4), _bert, lambda: SENTENCES),
    discrete_case("char", lambda: _make("spaces", "char"), _cnn, lambda: SENTENCES),
    discrete_case("embedding", lambda: _make("spaces", "embedding"), _cnn, lambda: SENTENCES),
    discrete_case("embedding-bert", lambda: _make("spaces", "embedding"), _bert, lambda: SENTENCES),
    edit_distance_case(
        "word-edits", lambda: _make("distances", "word-edits"), lambda: _pairs("word")
    ),
    edit_distance_case(
        "levenshtein", lambda: _make("distances", "levenshtein"), lambda: _pairs("char")
    ),
    distance_case("embedding-l2", lambda: _make("distances", "embedding-l2"), (5, 8)),
    adapter_case("text-mr_cnn", _cnn, lambda: SENTENCES),
    adapter_case("text-hf_classifier", _bert, lambda: SENTENCES),
    adapter_case("text-minilm_mr", _minilm_mr, lambda: SENTENCES),
    adapter_case(
        "text-callable",
        lambda: _make("adapters", "text-callable", _black_box),
        lambda: SENTENCES,
    ),
    loader_case(
        "mr",
        plugins.lookup("datasets", "mr").factory,
        {},
        space=lambda: _make("spaces", "char"),
    ),
    loader_case(
        "text-file",
        plugins.lookup("datasets", "text-file").factory,
        {"path": _text_file()},
        space=lambda: _make("spaces", "word"),
    ),
]


@parametrize_with_checks(CASES)
def test_text_conformance(case: Case, check: Check) -> None:
    check(case)


def test_every_text_registration_is_checked() -> None:
    """A space, distance, adapter, loader or model added without a case fails here."""
    missing = unchecked_registrations("text", CASES)
    assert not missing, f"text registrations without a conformance case: {missing}"
