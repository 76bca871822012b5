"""Conformance checks for model adapters.

An adapter maps a batch (a float array ``(B, ...)`` in the space's units, or a list of
inputs such as texts for discrete spaces) to finite scores ``(B, K)``. The engine relies
on four more things that these checks test: a sample's scores do not depend on the rest
of its batch, gradients reach the input exactly when ``differentiable`` says so, the
input is not modified, and every pass is seen by the one pass counter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.protocols import ModelAdapter
from mmargin.testing.contract import ConformanceError, require_protocol


def _fail(adapter: Any, message: str) -> None:
    raise ConformanceError(f"adapter {type(adapter).__name__}: {message}")


def _is_array(inputs: Any) -> bool:
    return isinstance(inputs, (np.ndarray, Tensor))


def _as_batch(inputs: Any) -> Any:
    """A tensor for array inputs (on the adapter's device later), else a plain list."""
    if _is_array(inputs):
        return torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    return list(inputs)


def _rows(batch: Any, index: Sequence[int]) -> Any:
    if isinstance(batch, Tensor):
        return batch[list(index)]
    return [batch[i] for i in index]


def _scores(adapter: Any, batch: Any) -> Tensor:
    with torch.no_grad():
        out = adapter(batch)
    if not isinstance(out, Tensor):
        _fail(adapter, f"returned {type(out).__name__}, expected a torch.Tensor of scores")
    return out.detach().float().cpu()


def check_adapter_scores(adapter: Any, inputs: Any) -> None:
    """The ``ModelAdapter`` protocol; scores are a finite float tensor ``(B, K)`` with
    ``K >= 2``; ``device`` is a ``torch.device`` and ``differentiable`` a bool."""
    require_protocol(adapter, ModelAdapter)
    batch = _as_batch(inputs)
    scores = _scores(adapter, batch)
    n = len(batch)
    if scores.dim() != 2 or scores.shape[0] != n or scores.shape[1] < 2:
        _fail(adapter, f"scores of shape {tuple(scores.shape)} for {n} inputs; want ({n}, K>=2)")
    if not bool(torch.isfinite(scores).all()):
        _fail(adapter, "scores hold NaN/inf for valid inputs")
    if not isinstance(getattr(adapter, "device", None), torch.device):
        _fail(adapter, "has no `device` (a torch.device) attribute")
    if not isinstance(getattr(adapter, "differentiable", None), bool):
        _fail(adapter, "has no boolean `differentiable` attribute")


def check_adapter_batch_consistent(adapter: Any, inputs: Any) -> None:
    """Row ``i`` of a batch equals the scores of input ``i`` alone, and of a reversed
    batch, up to float rounding: a sample's result must not depend on its batch-mates."""
    batch = _as_batch(inputs)
    full = _scores(adapter, batch)
    n = len(batch)
    tol = 1e-4 * (1.0 + float(full.abs().max()))
    for i in range(n):
        alone = _scores(adapter, _rows(batch, [i]))
        err = float((alone[0] - full[i]).abs().max())
        if err > tol:
            _fail(adapter, f"input {i} scored alone differs from its row in the batch by {err:g}")
    order = list(range(n))[::-1]
    reversed_scores = _scores(adapter, _rows(batch, order))
    err = float((reversed_scores - full[order]).abs().max())
    if err > tol:
        _fail(adapter, f"reordering the batch changed the scores by {err:g}")


def check_adapter_gradients(adapter: Any, inputs: Any) -> None:
    """For array inputs: the scores carry a finite, non-zero gradient with respect to the
    input exactly when ``differentiable`` is true (list inputs: nothing to check)."""
    if not _is_array(inputs):
        return
    x = _as_batch(inputs).to(adapter.device).requires_grad_(True)
    with torch.enable_grad():
        try:
            scores = adapter(x)
        except RuntimeError as exc:  # a black box may refuse a tensor that requires grad
            if adapter.differentiable:
                _fail(adapter, f"differentiable, but scoring a tensor that requires grad "
                               f"raised: {exc}")  # fmt: skip
            return
        has_graph = isinstance(scores, Tensor) and scores.requires_grad
        if not adapter.differentiable:
            if has_graph:
                _fail(adapter, "says differentiable = False but its scores carry a gradient")
            return
        if not has_graph:
            _fail(adapter, "says differentiable = True but its scores carry no gradient")
        (grad,) = torch.autograd.grad(scores[:, 0].sum() - scores[:, 1].sum(), x,
                                      allow_unused=True)  # fmt: skip
    if grad is None or not bool(torch.isfinite(grad).all()) or float(grad.abs().max()) == 0:
        _fail(adapter, "says differentiable = True but no finite, non-zero gradient reaches x")


def check_adapter_leaves_input(adapter: Any, inputs: Any) -> None:
    """Scoring does not modify the batch it is given."""
    batch = _as_batch(inputs)
    if isinstance(batch, Tensor):
        before = batch.clone()
        _scores(adapter, batch)
        same = torch.equal(before, batch)
    else:
        copy = list(batch)
        _scores(adapter, batch)
        same = copy == batch
    if not same:
        _fail(adapter, "scoring modified its input batch in place")


def check_adapter_counted(adapter: Any, inputs: Any) -> None:
    """Wrapped in the engine's one pass counter, a batch of B costs B forward passes (and B
    backward passes for a gradient with respect to the input) and the scores are the
    adapter's own."""
    from mmargin.engine.counting import CountingAdapter, PassCounter

    batch = _as_batch(inputs)
    counter = PassCounter()
    counted = CountingAdapter(adapter, counter)
    plain = _scores(adapter, batch)
    seen = _scores(counted, batch)
    if not torch.equal(plain, seen):
        _fail(adapter, "the counting wrapper changed the scores")
    n = len(batch)
    if counter.forward != n or counter.backward != 0:
        _fail(adapter, f"a batch of {n} was counted as {counter.forward} forward and "
                       f"{counter.backward} backward passes")  # fmt: skip
    if not (_is_array(inputs) and adapter.differentiable):
        return
    x = batch.to(adapter.device).requires_grad_(True)
    with torch.enable_grad():
        scores = counted(x)
        torch.autograd.grad(scores.sum(), x)
    if counter.forward != 2 * n or counter.backward != n:
        _fail(
            adapter,
            f"a forward + backward pass over {n} inputs was counted as "
            f"{counter.forward - n} forward and {counter.backward} backward",
        )


ADAPTER_CHECKS = (
    check_adapter_scores,
    check_adapter_batch_consistent,
    check_adapter_gradients,
    check_adapter_leaves_input,
    check_adapter_counted,
)


def check_adapter(adapter: Any, inputs: Any) -> None:
    """Run every adapter check on ``adapter`` with a batch of valid ``inputs``."""
    for check in ADAPTER_CHECKS:
        check(adapter, inputs)
