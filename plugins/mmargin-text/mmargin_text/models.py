"""Text classifiers mmargin-text ships or loads: a small word-level CNN trained on MR, and
Hugging Face sequence classifiers from a local folder (or the hub, for users online).

The CNN (Kim-style: word embeddings, convolutions of widths 2/3/4, max-over-time pooling,
linear) is small enough that a word-substitution search over 200 sentences takes seconds
on one core. Its committed weights (``weights/mr_cnn.pt``) and vocabulary
(``weights/mr_vocab.json``) are rebuilt by ``python -m mmargin_text.train``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmargin_text.words import words

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PAD, UNK = "<pad>", "<unk>"


@dataclass(frozen=True)
class Vocab:
    """Lower-cased words to ids (0 = padding, 1 = unknown), split like TextAttack."""

    itos: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.itos[:2] != (PAD, UNK):
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {self.itos[:2]}")
        object.__setattr__(self, "_stoi", {w: i for i, w in enumerate(self.itos)})

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2) -> Vocab:
        """Words seen at least ``min_count`` times, most frequent first (ties: alphabetical)."""
        counts = Counter(w.lower() for t in texts for w in words(t))
        kept = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls((PAD, UNK, *kept))

    def __len__(self) -> int:
        return len(self.itos)

    def id(self, word: str) -> int:
        """The id of one word (``1`` when unknown)."""
        stoi: dict[str, int] = self._stoi  # type: ignore[attr-defined]
        return stoi.get(word.lower(), 1)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of the words of ``text``, truncated to ``max_length`` words."""
        ids = [self.id(w) for w in words(text)]
        return ids if max_length is None else ids[:max_length]

    def save(self, path: Path) -> None:
        """Write the vocabulary as a JSON list."""
        path.write_text(json.dumps(list(self.itos), ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocab:
        """Read a vocabulary written by :meth:`save`."""
        return cls(tuple(json.loads(path.read_text(encoding="utf-8"))))


class WordCNN(nn.Module):
    """Embedding → Conv1d (widths 2, 3, 4) + ReLU → masked max over time → linear logits.

    ``forward_embeds`` takes the embedded sequence directly (the embedding space perturbs
    it); padding positions never enter the max, so a text scores the same alone or batched.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 48,
        filters: int = 64,
        widths: Sequence[int] = (2, 3, 4),
        classes: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, w) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(filters * len(widths), classes)
        self.widths = tuple(widths)

    def forward(self, ids: Tensor) -> Tensor:
        """Logits ``(B, classes)`` of padded id batches ``(B, T)`` (0 = padding)."""
        lengths = (ids != 0).sum(dim=1).clamp(min=1)
        return self.forward_embeds(self.embedding(ids), lengths)

    def forward_embeds(self, embeds: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Logits of embedded batches ``(B, T, dim)``; ``lengths`` (default ``T``) marks
        where padding starts."""
        batch, steps, _ = embeds.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, device=embeds.device)
        short = max(self.widths) - steps
        if short > 0:
            embeds = torch.cat([embeds, embeds.new_zeros(batch, short, embeds.shape[2])], 1)
        h = embeds.transpose(1, 2)
        pooled = []
        for conv, width in zip(self.convs, self.widths, strict=True):
            act = torch.relu(conv(h))
            valid = (lengths - width + 1).clamp(min=1)
            keep = torch.arange(act.shape[2], device=act.device)[None, :] < valid[:, None]
            pooled.append(act.masked_fill(~keep[:, None, :], float("-inf")).amax(dim=2))
        logits: Tensor = self.out(self.dropout(torch.cat(pooled, dim=1)))
        return logits


@dataclass
class WordClassifier:
    """A word-level torch classifier with its vocabulary: what the ``text`` adapter wraps."""

    module: WordCNN
    vocab: Vocab
    max_length: int = 64
    classes: tuple[str, ...] = ("negative", "positive")


def mr_cnn(
    weights: str | None = None, vocab: str | None = None, max_length: int = 64
) -> WordClassifier:
    """The committed MR sentiment CNN (eval mode); ``weights``/``vocab`` override the files.

    Inputs longer than ``max_length`` words are truncated (the space reports it).
    """
    vocab_file = Path(vocab) if vocab else WEIGHTS_DIR / "mr_vocab.json"
    weights_file = Path(weights) if weights else WEIGHTS_DIR / "mr_cnn.pt"
    for file in (vocab_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(
                f"no such file: {file}; rebuild the committed model with "
                "`python -m mmargin_text.train`"
            )
    v = Vocab.load(vocab_file)
    state = torch.load(weights_file, map_location="cpu", weights_only=True)
    module = WordCNN(len(v))
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{weights_file.name} does not fit WordCNN({len(v)}): {exc}") from None
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    return WordClassifier(module.eval(), v, max_length=max_length)


@dataclass
class HFClassifier:
    """A Hugging Face sequence classifier with its tokenizer (``text`` adapter input)."""

    model: Any
    tokenizer: Any
    max_length: int | None = None


def hf_classifier(
    path: str, max_length: int | None = None, local_files_only: bool | None = None
) -> HFClassifier:
    """``AutoModelForSequenceClassification`` + ``AutoTokenizer`` from a folder or hub name.

    A local folder is read with ``local_files_only=True`` (no network); a hub name is
    fetched by ``transformers`` as usual (that needs network access).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local = Path(path).is_dir() if local_files_only is None else local_files_only
    if local and not Path(path).is_dir():
        raise FileNotFoundError(f"no such model folder: {path}")
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=local)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    return HFClassifier(model.eval(), tokenizer, max_length)
