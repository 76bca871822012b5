"""Text model adapters: one calling convention, ``adapter(list_of_texts) -> scores (B, K)``.

The discrete engine scores candidate texts through ``__call__``; the text spaces use the
rest of the interface, declared by two protocols: :class:`TextModel` (every text adapter)
and :class:`EmbeddingTextModel` (adapters with input embeddings):

* ``words_seen(text)``: how many leading words fit in the model's maximum length (the
  search edits only those; truncation is reported);
* ``encode(text)``: the token ids the model reads, each token's character span in the
  text (``None`` for special tokens) — for gradients and the embedding space;
* ``embedding_matrix()``, ``forward_embeds(embeds)``: input embeddings and the model run
  on them (differentiable adapters only);
* ``token_id(word)``: the id of a word that is one token (first-order estimates of
  substitutions), else ``None``; ``word_ids(word)``: its tokens (one or several pieces);
  ``whole_words()``: the vocabulary tokens that are whole words (candidate substitutions);
* ``token_text(id)``, ``projectable``: nearest-token projection of the embedding space.

Three adapters: :class:`WordModelAdapter` (the shipped word CNN or any
:class:`~mmargin_text.models.WordClassifier`), :class:`HFAdapter` (a Hugging Face sequence
classifier + tokenizer) and :class:`CallableTextAdapter` (a black box ``list[str] ->
probabilities``, no gradients).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from mmargin_text.models import HFClassifier, WordClassifier
from mmargin_text.words import word_spans

Span = tuple[int, int] | None


@dataclass(frozen=True)
class Encoded:
    """What a model reads for one text: token ids, their character spans (``None`` for
    special tokens) and whether the text was truncated."""

    ids: list[int]
    spans: list[Span]
    truncated: bool


@runtime_checkable
class TextModel(Protocol):
    """What the word and character spaces need from a text model adapter."""

    differentiable: bool
    device: torch.device

    def __call__(self, texts: Sequence[str]) -> Tensor:
        """Scores ``(B, K)`` for a list of texts."""
        ...

    def words_seen(self, text: str) -> int:
        """How many leading words of ``text`` fit in the model's maximum length."""
        ...


@runtime_checkable
class EmbeddingTextModel(TextModel, Protocol):
    """A text model whose input embeddings are reachable: gradient ranking of substitutions,
    embedding-neighbour candidates and the embedding space need it."""

    projectable: Tensor

    def encode(self, text: str) -> Encoded:
        """The token ids the model reads, their character spans, truncation."""
        ...

    def embedding_matrix(self) -> Tensor:
        """The input-embedding matrix ``(vocabulary, D)``."""
        ...

    def forward_embeds(self, embeds: Tensor) -> Tensor:
        """Scores for a batch of embedding sequences ``(B, T, D)`` (differentiable)."""
        ...

    def token_id(self, word: str) -> int | None:
        """The id of a word that is one token, else ``None``."""
        ...

    def token_text(self, token: int) -> str:
        """The text of one token."""
        ...

    def word_ids(self, word: str) -> list[int]:
        """The tokens of one word as the model reads it inside a text."""
        ...

    def whole_words(self) -> list[tuple[int, str]]:
        """``(id, word)`` of the vocabulary tokens that are whole words."""
        ...


class WordModelAdapter:
    """A word-level torch classifier: one token per word, ids from its vocabulary."""

    differentiable = True

    def __init__(
        self, classifier: WordClassifier, device: str = "cpu", max_length: int | None = None
    ) -> None:
        self.device = torch.device(device)
        self.module = classifier.module.to(self.device).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.vocab = classifier.vocab
        self.max_length = max_length or classifier.max_length
        ids = torch.arange(len(self.vocab))
        self.projectable = ids[2:]  # never project onto <pad> / <unk>

    def encode(self, text: str) -> Encoded:
        spans = word_spans(text)
        seen = spans[: self.max_length]
        ids = [self.vocab.id(text[a:b]) for a, b in seen]
        return Encoded(ids, list(seen), truncated=len(spans) > len(seen))

    def words_seen(self, text: str) -> int:
        return min(len(word_spans(text)), self.max_length)

    def __call__(self, texts: Sequence[str]) -> Tensor:
        rows = [self.encode(t).ids or [1] for t in texts]
        width = max(len(r) for r in rows)
        batch = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=self.device)
        with torch.no_grad():
            return self.module(batch).float()

    def embedding_matrix(self) -> Tensor:
        return self.module.embedding.weight

    def forward_embeds(self, embeds: Tensor) -> Tensor:
        out: Tensor = self.module.forward_embeds(embeds.to(self.device))
        return out

    def token_id(self, word: str) -> int | None:
        return self.vocab.id(word)

    def word_ids(self, word: str) -> list[int]:
        """The one token of a word (``<unk>`` when unknown)."""
        return [self.vocab.id(word)]

    def whole_words(self) -> list[tuple[int, str]]:
        """Every vocabulary word (one token each), but ``<pad>`` / ``<unk>``."""
        return [(i, self.vocab.itos[i]) for i in range(2, len(self.vocab))]

    def token_text(self, token: int) -> str:
        return self.vocab.itos[token]


class HFAdapter:
    """A Hugging Face ``...ForSequenceClassification`` model with its (fast) tokenizer."""

    differentiable = True

    def __init__(
        self, classifier: HFClassifier, device: str = "cpu", max_length: int | None = None
    ) -> None:
        self.device = torch.device(device)
        self.model = classifier.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = classifier.tokenizer
        own: Any = getattr(self.tokenizer, "model_max_length", 512)
        limit = int(max_length or classifier.max_length or own)
        positions = int(getattr(self.model.config, "max_position_embeddings", None) or limit)
        self.max_length = min(limit, positions, 100_000)
        special = set(self.tokenizer.all_special_ids)
        size = min(self.embedding_matrix().shape[0], len(self.tokenizer))
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(size)))
        self.projectable = torch.tensor(
            [i for i in range(size) if i not in special and not _control(pieces[i])]
        )
        self._word_ids: dict[str, list[int]] = {}
        self._whole: list[tuple[int, str]] | None = None

    def _tokenize(self, texts: Sequence[str], **extra: Any) -> Any:
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            **extra,
        )

    def __call__(self, texts: Sequence[str]) -> Tensor:
        batch = self._tokenize(texts).to(self.device)
        with torch.no_grad():
            return self.model(**batch).logits.float()

    def encode(self, text: str) -> Encoded:
        enc = self.tokenizer(
            text,
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_overflowing_tokens=False,
        )
        spans: list[Span] = [
            None if s else (int(a), int(b))
            for (a, b), s in zip(enc["offset_mapping"], enc["special_tokens_mask"], strict=True)
        ]
        full = self.tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"]
        return Encoded(list(enc["input_ids"]), spans, truncated=len(full) > self.max_length)

    def words_seen(self, text: str) -> int:
        enc = self.encode(text)
        end = max((s[1] for s in enc.spans if s is not None), default=0)
        return sum(1 for a, _ in word_spans(text) if a < end)

    def embedding_matrix(self) -> Tensor:
        weight: Tensor = self.model.get_input_embeddings().weight
        return weight

    def forward_embeds(self, embeds: Tensor) -> Tensor:
        embeds = embeds.to(self.device)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        logits: Tensor = self.model(inputs_embeds=embeds, attention_mask=mask).logits
        return logits

    def word_ids(self, word: str) -> list[int]:
        """The tokens of ``word`` as the model reads it inside a text (after a space: BPE
        and SentencePiece mark word starts), without special tokens."""
        if word not in self._word_ids:
            enc = self.tokenizer("a " + word, add_special_tokens=False, return_offsets_mapping=True)
            self._word_ids[word] = [
                int(i)
                for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
                if b > 2 and a < 2 + len(word)
            ]
        return self._word_ids[word]

    def token_id(self, word: str) -> int | None:
        ids = self.word_ids(word)
        return ids[0] if len(ids) == 1 else None

    def token_text(self, token: int) -> str:
        return str(self.tokenizer.decode([token]))

    def whole_words(self) -> list[tuple[int, str]]:
        """``(id, word)`` of the vocabulary's tokens that are whole alphabetic words: the
        word, read in a text, is exactly that one token (word pieces such as ``##ing``,
        BPE tokens without a word-start mark, sub-word SentencePiece pieces are not)."""
        if self._whole is None:
            ids = [int(i) for i in self.projectable]
            texts = [self.token_text(i).strip() for i in ids]
            keep = [(i, t) for i, t in zip(ids, texts, strict=True) if _alphabetic(t)]
            batch = self.tokenizer(["a " + t for _, t in keep], add_special_tokens=False)[
                "input_ids"
            ]
            self._whole = [
                (i, t) for (i, t), row in zip(keep, batch, strict=True) if row[1:] == [i]
            ]
        return self._whole

    def truncation(self, text: str) -> dict[str, int] | None:
        """``{"tokens": n, "max_length": m}`` when ``text`` is longer than the model reads."""
        full = len(self.tokenizer(text, truncation=False)["input_ids"])
        return {"tokens": full, "max_length": self.max_length} if full > self.max_length else None


class CallableTextAdapter:
    """A black box ``f(list[str]) -> scores`` (probabilities or logits, ``(B, K)``)."""

    differentiable = False

    def __init__(
        self,
        function: Callable[[list[str]], Any],
        device: str = "cpu",
        max_length: int | None = None,
    ) -> None:
        self.function = function
        self.device = torch.device(device)
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> Tensor:
        scores = np.asarray(self.function(list(texts)), dtype=np.float64)
        if scores.ndim == 1:  # a binary score: class 1 when > 0
            scores = np.stack([-scores, scores], axis=1)
        return torch.as_tensor(scores, dtype=torch.float32)

    def words_seen(self, text: str) -> int:
        n = len(word_spans(text))
        return n if self.max_length is None else min(n, self.max_length)


def _control(piece: str | None) -> bool:
    """A token that is no text: ``<s>``, ``[unused7]`` ... (marks a tokenizer does not list
    among its special tokens, as SentencePiece's ``<s>`` under ALBERT)."""
    return not piece or (len(piece) > 2 and (piece[0], piece[-1]) in (("<", ">"), ("[", "]")))


def _alphabetic(token: str) -> bool:
    return bool(token) and token.replace("'", "").replace("-", "").isalpha()


TextAdapter = WordModelAdapter | HFAdapter | CallableTextAdapter


def adapt_text_model(model: Any, device: str = "cpu", max_length: int | None = None) -> Any:
    """The adapter for a text model object, or ``None`` when it is not one.

    Accepts a :class:`WordClassifier`, a :class:`HFClassifier`, a ``(model, tokenizer)``
    pair of Hugging Face objects, or an adapter (returned unchanged).
    """
    if isinstance(model, (WordModelAdapter, HFAdapter, CallableTextAdapter)):
        return model
    if isinstance(model, WordClassifier):
        return WordModelAdapter(model, device=device, max_length=max_length)
    if isinstance(model, HFClassifier):
        return HFAdapter(model, device=device, max_length=max_length)
    if isinstance(model, tuple) and len(model) == 2 and hasattr(model[1], "all_special_ids"):
        return HFAdapter(HFClassifier(model[0], model[1]), device=device, max_length=max_length)
    return None
