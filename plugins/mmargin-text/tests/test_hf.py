"""The Hugging Face path: a tiny randomly initialised BERT saved to a folder, loaded back
with ``AutoModelForSequenceClassification`` / ``AutoTokenizer`` (no hub, no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmargin import run_task
from mmargin.plugin import Status
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_text.adapters import HFAdapter, adapt_text_model
from mmargin_text.models import hf_classifier
from mmargin_text.plugin import (
    _embedding_l2,
    _levenshtein,
    _word_edits,
    char_space,
    embedding_space,
    word_space,
)

SENTENCES = [
    "a gripping and beautiful film with a great cast",
    "the plot is dull and the acting is terrible",
    "an uneven but often funny comedy about friends",
    "boring , slow and far too long for its own good",
    "one of the best movies of the year",
    "the director wastes a fine story on cheap tricks",
]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT (hidden 16) and its WordPiece tokenizer, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w for s in SENTENCES for w in s.split()} | {"good", "bad", "fine", "movie"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ly", "##ing"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        initializer_range=0.5,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert(tiny_bert: Path) -> HFAdapter:
    adapter = adapt_text_model(hf_classifier(str(tiny_bert)))
    assert isinstance(adapter, HFAdapter)
    return adapter


def _labels(adapter: Any, texts: list[str]) -> np.ndarray:
    return adapter(texts).argmax(dim=1).numpy()  # flip the model's own predictions


def test_loads_locally_and_scores_batches(bert: HFAdapter) -> None:
    scores = bert(SENTENCES)
    assert tuple(scores.shape) == (len(SENTENCES), 2)
    alone = bert([SENTENCES[2]])
    np.testing.assert_allclose(scores[2].numpy(), alone[0].numpy(), atol=1e-5)
    enc = bert.encode(SENTENCES[0])
    assert enc.spans[0] is None and enc.spans[-1] is None  # [CLS] / [SEP] are frozen
    with pytest.raises(FileNotFoundError):
        hf_classifier("/nonexistent/model/folder", local_files_only=True)


@pytest.mark.parametrize("kind", ["word", "char", "embedding"])
def test_every_space_flips_the_hf_model(bert: HFAdapter, kind: str) -> None:
    space, distance = {
        "word": (word_space(k=8, stopwords=False), _word_edits()),
        "char": (char_space(max_candidates=8), _levenshtein()),
        "embedding": (embedding_space(), _embedding_l2()),
    }[kind]
    texts = SENTENCES[:4]
    found = minimal_flip(
        bert,
        space,
        distance,
        np.array(texts, object),
        _labels(bert, texts),
        spec=SearchSpec(budget=300, exact="never"),
    )
    flipped = [r for r in found if r.status is Status.FLIPPED]
    assert flipped, [r.message for r in found]
    for r in flipped:
        assert r.verified and r.margin > 0
        if kind == "embedding":
            assert "projection" in r.extras and isinstance(r.extras["projection_flips"], bool)
        else:
            assert int(bert([r.adversarial]).argmax()) != r.label


def test_truncation_is_reported(tiny_bert: Path) -> None:
    short = adapt_text_model(hf_classifier(str(tiny_bert), max_length=8))
    text = SENTENCES[0] + " " + SENTENCES[4]
    assert short.words_seen(text) == 6  # 8 tokens minus [CLS] and [SEP]
    r = minimal_flip(
        short,
        word_space(k=8, stopwords=False),
        _word_edits(),
        np.array([text], object),
        _labels(short, [text]),
        spec=SearchSpec(budget=300),
    )[0]
    assert any("truncated" in n for n in r.extras.get("notes", [])), r
    if r.status is Status.FLIPPED:
        assert all(e["position"] < 6 for e in r.extras["edits"])
        assert r.extras["words_seen"] == 6


def test_task_file_with_a_local_transformers_model(tiny_bert: Path, tmp_path: Path) -> None:
    data = tmp_path / "texts.jsonl"
    data.write_text(
        "\n".join(json.dumps({"text": s, "label": int(i % 2)}) for i, s in enumerate(SENTENCES)),
        encoding="utf-8",
    )
    task = tmp_path / "hf.toml"
    task.write_text(
        f"""
[task]
name = "hf-word"
[model]
factory = "hf_classifier"
adapter = "text"
options = {{ path = "{tiny_bert}" }}
[data]
loader = "text-file"
path = "{data}"
[space]
name = "word"
k = 8
stopwords = false
[distance]
name = "word-edits"
[search]
budget = 300
""",
        encoding="utf-8",
    )
    out = run_task(task, out=tmp_path / "run")
    assert len(out.results) == len(SENTENCES)
    assert {r.status for r in out.results} <= {
        Status.FLIPPED,
        Status.MISCLASSIFIED,
        Status.NOT_FLIPPED,
    }
    assert (tmp_path / "run" / "results.jsonl").is_file()
