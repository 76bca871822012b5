"""The first-order ranking of a sample's candidate classes at its clean input.

An untargeted search (:mod:`mmargin.engine.gradient`) spends its probes on the classes
whose boundary is nearest in first order, ``(z_y − z_c) / ‖∇(z_y − z_c)‖_*`` with the
dual norm of the search's distance (:mod:`mmargin.engine.passes`), and the probe skip
(:func:`mmargin.engine.legstop.out_of_reach`) reads the same distances. Ranking costs one
forward pass and one backward pass per candidate class.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.engine.problem import Problem

__all__ = ["input_gradient", "rank_classes", "rank_reach"]


def input_gradient(loss: Tensor, inputs: Tensor, retain: bool = False) -> tuple[Tensor, Tensor]:
    """The gradient of ``loss.sum()`` with respect to ``inputs`` and a per-sample mask of
    where it is usable (finite and not all zero). Where the model gives no gradient at all
    (a non-differentiable step such as a comparison) the gradient is zero; non-finite
    entries become zero, so one sample's NaN never spreads into a step."""
    grad: Tensor | None = None
    if loss.requires_grad:
        (grad,) = torch.autograd.grad(loss.sum(), inputs, retain_graph=retain, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(inputs)
    flat = grad.flatten(1)
    usable = torch.isfinite(flat).all(dim=1)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    usable &= grad.flatten(1).abs().amax(dim=1) > 0
    return grad, usable


def rank_classes(problem: Problem, count: int) -> Tensor:
    """Candidate classes per sample, nearest first by first-order distance at ``problem.x``
    (the problem's goal and targets play no part: the classes are the model's).

    Only the ``count`` highest-scoring other classes are ranked (one backward pass each),
    so the cost stays bounded for models with many classes.
    """
    return rank_reach(problem, count)[0]


def rank_reach(problem: Problem, count: int) -> tuple[Tensor, Tensor]:
    """:func:`rank_classes` and, in the same order, each candidate's first-order distance
    at ``problem.x`` (``(z_y − z_c) / ‖∇(z_y − z_c)‖_*``, the gradient where the space lets
    it move)."""
    x, labels, space, distance = problem.x, problem.labels, problem.space, problem.distance
    xr = x.clone().requires_grad_(True)
    scores = problem.model(xr)
    masked = scores.detach().clone()
    masked.scatter_(1, labels.unsqueeze(1), float("-inf"))
    count = min(count, scores.shape[1] - 1)
    candidates = masked.topk(count, dim=1).indices
    true = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
    dists = []
    for c in range(count):
        diff = true - scores.gather(1, candidates[:, c : c + 1]).squeeze(1)
        grad, _ = input_gradient(diff, xr, retain=c < count - 1)
        grad = space.free_gradient(x, torch.zeros_like(x), grad)
        dists.append(diff.detach() / distance.dual_norm(grad).clamp(min=1e-12))
    reach = torch.stack(dists, dim=1)
    order = reach.argsort(dim=1)
    return candidates.gather(1, order), reach.gather(1, order)
