"""``TorchAdapter`` reads its module's submodules and parameters once (a per-call walk of the
module tree was a fixed cost of every engine step): every call still runs eval mode with
frozen parameters and restores the caller's state, and a replaced module is read anew."""

from __future__ import annotations

import torch

from mmargin.adapters import TorchAdapter


class _Spy(torch.nn.Module):
    """Records, at each forward, its own and its child's training flags and which of its
    parameters require gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.drop = torch.nn.Dropout(0.5)
        self.seen: list[tuple[bool, bool, list[bool]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grads = [p.requires_grad for p in self.parameters()]
        self.seen.append((self.training, self.drop.training, grads))
        return self.drop(self.a(x))


def _mixed() -> _Spy:
    net = _Spy().train()
    net.a.bias.requires_grad_(False)  # a mixed state must come back mixed
    return net


def test_every_call_runs_frozen_in_eval_mode_and_restores_the_callers_state() -> None:
    net = _mixed()
    adapter = TorchAdapter(net)
    x = torch.rand(2, 4)
    for _ in range(3):
        first = adapter(x)
        assert torch.equal(first, adapter(x))  # eval mode: dropout is off
        assert net.training and net.drop.training
        assert [p.requires_grad for p in net.parameters()] == [True, False]
    assert net.seen == [(False, False, [False, False])] * 6


def test_a_replaced_module_is_read_anew() -> None:
    adapter = TorchAdapter(_mixed())
    x = torch.rand(2, 4)
    adapter(x)
    other = _mixed()
    adapter.module = other
    adapter(x)
    assert other.seen == [(False, False, [False, False])]  # frozen, not the old module's walk
    assert other.training and [p.requires_grad for p in other.parameters()] == [True, False]
