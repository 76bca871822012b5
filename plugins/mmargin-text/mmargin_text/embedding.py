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
from mmargin_text.adapters import EmbeddingTextModel, HFAdapter
from mmargin_text.spaces import check_texts


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
        enc = encoding.info
        matrix = model.embedding_matrix().detach().cpu()
        allowed = torch.as_tensor(model.projectable)
        rows = matrix[allowed]
        adv = torch.as_tensor(point, dtype=rows.dtype)
        new_ids = list(enc.ids)
        changes = []
        for t, span in enumerate(enc.spans):
            if span is None:
                continue
            dists = torch.cdist(adv[t : t + 1], rows)[0]
            nearest = int(allowed[dists.argmin()])
            own = float(torch.dist(adv[t], matrix[enc.ids[t]].to(adv)))
            if nearest != enc.ids[t] and float(dists.min()) < own:
                new_ids[t] = nearest
                changes.append(
                    {
                        "token": t,
                        "from": model.token_text(enc.ids[t]),
                        "to": model.token_text(nearest),
                    }
                )
        if isinstance(model, HFAdapter):  # word pieces: let the tokenizer join them
            text = str(model.tokenizer.decode(new_ids, skip_special_tokens=True))
        else:
            text = _replace_spans(x, [(enc.spans[c["token"]], c["to"]) for c in changes])
        return text, {"token_edits": changes, "tokens_changed": len(changes), "original_text": x}


def _replace_spans(text: str, replacements: list[tuple[tuple[int, int], str]]) -> str:
    out, last = [], 0
    for (start, end), word in sorted(replacements):
        out += [text[last:start], word]
        last = end
    return "".join(out) + text[last:]
