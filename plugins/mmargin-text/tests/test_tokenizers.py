"""Any ``AutoModelForSequenceClassification`` in a local folder: a byte-level BPE model
(RoBERTa) and a SentencePiece one (ALBERT), tokenizers trained here on a few sentences,
random tiny models saved with ``save_pretrained`` and loaded back by the Auto classes.

The word space edits whole words whatever the pieces; its flips are re-scored here; the
embedding projection reads as text (no ``Ġ`` / ``▁`` marks); a long text is truncated to
the model's maximum length and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmargin.plugin import Status
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_text.adapters import HFAdapter, adapt_text_model
from mmargin_text.models import hf_classifier
from mmargin_text.plugin import _embedding_l2, _word_edits, embedding_space, word_space

CORPUS = [
    "a gripping and beautiful film with a great cast",
    "the plot is dull and the acting is terrible",
    "an unwatchable and overindulgent mess of a movie",
    "one of the best movies of the year",
    "a fine story told with wit and warmth",
]
SYNONYMS = "beautiful lovely fine\ndull boring flat\nterrible awful bad\nbest finest\nfine good\n"


def _bpe(folder: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 4) + "\nlovely boring flat awful bad finest good\n")
    bpe = ByteLevelBPETokenizer()
    bpe.train(
        [str(corpus)],
        vocab_size=300,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(folder))
    tok = RobertaTokenizerFast(
        vocab_file=str(folder / "vocab.json"),
        merges_file=str(folder / "merges.txt"),
        model_max_length=24,
    )
    config = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=2,
        initializer_range=0.5,
    )
    RobertaForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def _sentencepiece(folder: Path) -> None:
    import sentencepiece as spm
    from transformers import AlbertConfig, AlbertForSequenceClassification, AlbertTokenizerFast

    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 4) + "\nlovely boring flat awful bad finest good\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "sp"),
        vocab_size=60,
        model_type="unigram",
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        minloglevel=2,
    )
    tok = AlbertTokenizerFast(vocab_file=str(folder / "sp.model"), model_max_length=24)
    config = AlbertConfig(
        vocab_size=len(tok),
        embedding_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=40,
        num_labels=2,
        initializer_range=0.5,
    )
    AlbertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)


@pytest.fixture(scope="module", params=["bpe", "sentencepiece"])
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HFAdapter:
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    {"bpe": _bpe, "sentencepiece": _sentencepiece}[request.param](folder)
    adapter = adapt_text_model(hf_classifier(str(folder)))
    assert isinstance(adapter, HFAdapter)
    return adapter


def test_words_of_several_pieces_are_edited_whole(model: HFAdapter, tmp_path: Path) -> None:
    listed = tmp_path / "syn.txt"
    listed.write_text(SYNONYMS, encoding="utf-8")
    texts = CORPUS[:2] + CORPUS[4:]
    assert any(len(model.word_ids(w)) > 1 for t in texts for w in t.split())
    labels = model(texts).argmax(dim=1).numpy()
    found = minimal_flip(
        model,
        word_space(candidates="list", words=str(listed), stopwords=False),
        _word_edits(),
        np.array(texts, object),
        labels,
        spec=SearchSpec(budget=200, exact="auto"),
    )
    assert all(r.status in (Status.FLIPPED, Status.NOT_FLIPPED) for r in found), found
    for r in found:
        if r.status is Status.FLIPPED:
            assert int(model([r.adversarial]).argmax()) != r.label
            assert len(r.adversarial.split()) == len(r.extras["original_text"].split())


def test_embedding_projection_is_text(model: HFAdapter) -> None:
    space = embedding_space()
    text = CORPUS[1]
    enc = space.encode(model, text)
    rng = np.random.default_rng(0)
    point = enc.point + rng.normal(scale=2.0, size=enc.point.shape).astype(np.float32)
    point[[s is None for s in enc.info.spans]] = enc.point[[s is None for s in enc.info.spans]]
    projected, extras = space.decode(model, text, enc, point)
    assert extras["tokens_changed"] > 0
    assert "Ġ" not in projected and "▁" not in projected and "<" not in projected


def test_truncation_to_max_length_is_reported(model: Any) -> None:
    text = " ".join(CORPUS)  # far more than 24 tokens
    r = minimal_flip(
        model, word_space(k=3, stopwords=False), _word_edits(), np.array([text], object),
        model([text]).argmax(dim=1).numpy(), spec=SearchSpec(budget=60, exact="never"),
    )[0]  # fmt: skip
    notes = " ".join(r.extras.get("notes", []))
    assert "truncated" in notes and "max_length 24" in notes, notes
    r = minimal_flip(
        model, embedding_space(), _embedding_l2(), np.array([text], object),
        model([text]).argmax(dim=1).numpy(), spec=SearchSpec(budget=20),
    )[0]  # fmt: skip
    assert any("truncated" in n for n in r.extras.get("notes", [])), r.extras
