"""First-order ranking of word substitutions from one gradient of the model.

With the gradient ``g_t`` of the goal's loss with respect to the input embedding of token
``t``, replacing the word at ``t`` by a candidate ``c`` changes the loss by about
``g_t · (E[c] − E[w])`` (HotFlip's estimate). Where the word and the candidate are single
tokens this is computed for every candidate; where the word or a candidate is several word
pieces, the estimate moves the mean piece embedding, seen through the mean gradient of the
word's tokens (``n · ḡ · (mean E[c] − mean E[w])``); a candidate with no token at all gets
``−‖ḡ‖ · r`` with ``r`` the median embedding norm (TextAttack's gradient word importance).
One ranking costs 2 queries (a forward and a backward pass).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmargin.plugin import Ranking
from mmargin_text.adapters import EmbeddingTextModel


def substitution_ranking(
    adapter: Any,
    text: str,
    spans: Mapping[int, tuple[int, int]],
    candidates: Mapping[int, Sequence[str]],
    goal: Any,
    label: int,
    targets: Any,
) -> Ranking | None:
    """Estimated loss change of each candidate at each word position of ``text``."""
    if not isinstance(adapter, EmbeddingTextModel) or not adapter.differentiable:
        return None
    enc = adapter.encode(text)
    if not enc.ids:
        return None
    matrix = adapter.embedding_matrix().detach()
    ids = torch.tensor(enc.ids, device=matrix.device)
    embeds = matrix[ids].clone().requires_grad_(True)
    with torch.enable_grad():
        scores = adapter.forward_embeds(embeds.unsqueeze(0))
        loss = goal.loss(scores, torch.tensor([label], device=scores.device), targets)
        (grad,) = torch.autograd.grad(loss.sum(), embeds)
    typical = float(matrix.norm(dim=1).median())
    importance: dict[int, float] = {}
    estimates: dict[int, np.ndarray] = {}
    for position, (start, end) in spans.items():
        tokens = [
            t for t, s in enumerate(enc.spans) if s is not None and s[0] < end and s[1] > start
        ]
        cands = list(candidates.get(position, ()))
        if not tokens or not cands:
            continue
        ids_c = [adapter.token_id(c) for c in cands]
        if len(tokens) == 1 and all(i is not None for i in ids_c):
            t = tokens[0]
            delta = matrix[torch.tensor(ids_c, device=matrix.device)] - matrix[ids[t]]
            est = (delta @ grad[t]).cpu().numpy().astype(np.float64)
        elif hasattr(adapter, "word_ids"):
            # several pieces: the mean piece embedding moves from the word's to the
            # candidate's, seen by the word's tokens through their mean gradient
            g = grad[tokens].mean(dim=0)
            own = matrix[ids[tokens]].mean(dim=0)
            est = np.array(
                [
                    float(len(tokens) * ((matrix[adapter.word_ids(c)].mean(dim=0) - own) @ g))
                    if adapter.word_ids(c)
                    else -float(g.norm()) * typical
                    for c in cands
                ]
            )
        else:
            g = grad[tokens].mean(dim=0)
            est = np.full(len(cands), -float(g.norm()) * typical)
        estimates[position] = est
        importance[position] = -float(est.min()) if est.size else -math.inf
    return Ranking(importance=importance, queries=2, estimates=estimates)
