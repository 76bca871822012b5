"""The embedding space: an L2 perturbation of the input embeddings a model reads.

A *relaxed* discrete space (``RelaxedSpace`` in :mod:`mmargin.plugin`): each text is
encoded as its sequence of input-embedding vectors (special tokens such as ``[CLS]`` are
frozen), the shared gradient engine finds the smallest verified L2 perturbation that flips
the model, and the adversarial embeddings are projected back to the nearest tokens — the
projected text, the token edits and whether that text still flips are reported beside
the margin (``extras["projection"]``, ``["token_edits"]``, ``["projection_flips"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.plugin import Encoding
from mmargin_text.adapters import EmbeddingTextModel
from mmargin_text.spaces import check_texts, highlight
from mmargin_text.words import TextView, word_spans


@dataclass
class EmbeddingModel:
    """The text model run on embedding sequences ``(B, T, D)``: what the gradient engine
    searches (differentiable)."""

    text_model: Any
    differentiable: bool = True

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        device: torch.device = self.text_model.device
        return device

    def __call__(self, x: Tensor) -> Tensor:
        out: Tensor = self.text_model.forward_embeds(x)
        return out


@dataclass
class EmbeddingSpace:
    """Continuous L2 margins in input-embedding space, with nearest-token projection."""

    name: str = "embedding"
    modality: str = "text"

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return check_texts(inputs)

    def encode(self, model: Any, x: str) -> Encoding:
        if not isinstance(model, EmbeddingTextModel):
            raise ValueError(
                "the embedding space needs a model with input embeddings "
                "(a torch or transformers model, not a black box)"
            )
        enc = model.encode(x)
        if not enc.ids:
            raise ValueError("the text has no token the model reads")
        matrix = model.embedding_matrix().detach()
        point = matrix[torch.tensor(enc.ids, device=matrix.device)].cpu().numpy()
        free = np.array([[s is not None] for s in enc.spans], dtype=np.float32)
        notes = (
            ("truncated: the model reads the first tokens only; the margin is over what it reads",)
            if enc.truncated
            else ()
        )
        return Encoding(point=point.astype(np.float32), free=free, notes=notes, info=enc)

    def continuous_model(self, model: Any) -> EmbeddingModel:
        return EmbeddingModel(model)

    def decode(
        self, model: Any, x: str, encoding: Encoding, point: np.ndarray
    ) -> tuple[str, dict[str, Any]]:
        """Nearest-token projection, written back into the text word by word.

        Each free token moves to the nearest vocabulary token *of its own kind* (a word
        start stays a word start, a continuation piece a continuation piece) when that is
        nearer than its own token; each changed word is rebuilt from its new pieces with the
        tokenizer's ``convert_tokens_to_string`` and put back at its place in the original
        text, so the projection reads as text and the rest of the text is untouched.
        Reports the margin relative to the median token-embedding norm and flags a
        perturbation larger than replacing every token by its farthest token."""
        enc = encoding.info
        matrix = model.embedding_matrix().detach().cpu().float()
        adv = torch.as_tensor(point, dtype=matrix.dtype)
        clean = torch.as_tensor(encoding.point, dtype=matrix.dtype)
        free = [t for t, s in enumerate(enc.spans) if s is not None]
        margin = float((adv - clean).norm())
        scale = _token_scale(model)
        reach = float(
            torch.cdist(clean[free], matrix[torch.as_tensor(model.projectable)]).amax(1).norm()
        )
        extras: dict[str, Any] = {
            "original_text": x,
            "token_norm_median": round(scale, 6),
            "margin_in_token_norms": margin / scale if scale > 0 else None,
            "max_token_change": reach,
        }
        if margin > reach:
            extras["implausible"] = (
                f"L2 {margin:.4g} is larger than replacing every token by its farthest "
                f"vocabulary token ({reach:.4g}): no text is that far"
            )
        starts = _piece_kinds(model)
        allowed_all = torch.as_tensor(model.projectable)
        new_ids = list(enc.ids)
        changes = []
        for t in free:
            kind = starts[enc.ids[t]]
            allowed = allowed_all[starts[allowed_all] == kind]
            if allowed.numel() == 0:
                continue
            dists = torch.cdist(adv[t : t + 1], matrix[allowed])[0]
            nearest = int(allowed[dists.argmin()])
            own = float(torch.dist(adv[t], matrix[enc.ids[t]]))
            if nearest != enc.ids[t] and float(dists.min()) < own:
                new_ids[t] = nearest
                changes.append(
                    {"token": t, "from": model.token_text(enc.ids[t]),
                     "to": model.token_text(nearest)}
                )  # fmt: skip
        text = _rewrite(model, x, enc, new_ids)
        extras.update(token_edits=changes, tokens_changed=len(changes))
        if changes:
            extras["highlighted"] = _highlight(x, text)
        return text, extras


def _token_scale(model: Any) -> float:
    """The median L2 norm of the vocabulary's token embeddings (the "typical token")."""
    matrix = model.embedding_matrix().detach().cpu().float()
    rows = matrix[torch.as_tensor(model.projectable)]
    return float(rows.norm(dim=1).median())


def _piece_kinds(model: Any) -> Tensor:
    """Per vocabulary id, whether the token starts a word (WordPiece: no ``##``; BPE and
    SentencePiece: a ``Ġ`` / ``▁`` mark); every token of a word-level model does."""
    size = int(model.embedding_matrix().shape[0])
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return torch.ones(size, dtype=torch.bool)
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(size, len(tokenizer)))))
    pieces = [p or "" for p in pieces] + [""] * (size - len(pieces))
    if any(p.startswith("##") for p in pieces):
        kinds = [not p.startswith("##") for p in pieces]
    elif any(p.startswith(("Ġ", "▁")) for p in pieces):
        kinds = [p.startswith(("Ġ", "▁")) for p in pieces]
    else:
        kinds = [True] * size
    return torch.tensor(kinds, dtype=torch.bool)


def _rewrite(model: Any, x: str, enc: Any, new_ids: list[int]) -> str:
    """``x`` with each word whose tokens changed rebuilt from its new tokens."""
    tokenizer = getattr(model, "tokenizer", None)
    words = word_spans(x)
    replacements: list[tuple[tuple[int, int], str]] = []
    for a, b in words:
        tokens = [t for t, s in enumerate(enc.spans) if s is not None and s[0] < b and s[1] > a]
        if not tokens or all(new_ids[t] == enc.ids[t] for t in tokens):
            continue
        if tokenizer is not None:
            pieces = tokenizer.convert_ids_to_tokens([new_ids[t] for t in tokens])
            word = str(tokenizer.convert_tokens_to_string(pieces)).strip()
        else:
            word = " ".join(model.token_text(new_ids[t]) for t in tokens)
        span = (min(enc.spans[t][0] for t in tokens), max(enc.spans[t][1] for t in tokens))
        replacements.append((span, word))
    return _replace_spans(x, replacements)


def _highlight(x: str, text: str) -> str:
    """``text`` with the words that differ from ``x`` shown as ``[old -> new]``."""
    old, new = TextView(x), TextView(text)
    if len(old.words) != len(new.words):
        return text
    changed = {i: w for i, (v, w) in enumerate(zip(old.words, new.words, strict=True)) if v != w}
    return highlight(old, changed)


def _replace_spans(text: str, replacements: list[tuple[tuple[int, int], str]]) -> str:
    out, last = [], 0
    for (start, end), word in sorted(replacements):
        out += [text[last:start], word]
        last = end
    return "".join(out) + text[last:]
