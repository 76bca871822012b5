"""The core's one exact hook: it picks the method from what the model and the space
describe (through ``mmargin_exact_model`` / ``mmargin_exact_constraints``), for the
core's own torch models and box spaces and for any plugin's descriptions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mmargin import plugins
from mmargin.adapters import CallableAdapter, TorchAdapter
from mmargin.distances import lp
from mmargin.exact.linear import linear_margin
from mmargin.exact.milp import extract_relu_layers, fold_affine_input, relu_net_margin
from mmargin.exact.problem import ExactModel
from mmargin.goals import Threshold, Untargeted
from mmargin.hookspecs import hookimpl
from mmargin.spaces import box

torch.set_num_threads(1)


def _hook(model, space, distance, x, label, goal=None, target=None, upper=None):
    return plugins.manager().hook.mmargin_exact_margin(
        model=model, space=space, distance=distance, x=x, label=label, target=target,
        upper_bound=upper, goal=goal or Untargeted(),
    )  # fmt: skip


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3).double()


@pytest.mark.parametrize("name", ["l1", "l2", "linf"])
def test_linear_torch_model_gets_the_closed_form(name: str) -> None:
    module = _linear()
    x = np.array([0.2, 0.7, 0.4, 0.9])
    with torch.no_grad():
        label = int(module(torch.as_tensor(x[None])).argmax())
    mask = np.array([1.0, 1.0, 0.0, 1.0])
    found = _hook(TorchAdapter(module), box(0.0, 1.0, mask=mask), lp(name), x, label)
    w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
    oracle = linear_margin(w, b, x, label, lp(name).p, lower=0.0, upper=1.0, mask=mask)
    assert found is not None and found.method.startswith("linear")
    assert found.margin == pytest.approx(oracle.margin, rel=1e-9)
    assert found.adversarial is None or found.adversarial[2] == x[2]


def test_relu_torch_model_gets_the_milp_with_normalisation_folded() -> None:
    torch.manual_seed(1)
    module = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    mean, std = [0.3, 0.6], [0.5, 0.25]  # per channel of (2, 3) inputs
    adapter = TorchAdapter(module, mean=mean, std=std)
    x = np.random.default_rng(0).uniform(0.2, 0.8, size=(2, 3))
    with torch.no_grad():
        label = int(adapter(torch.as_tensor(x[None])).argmax())
    found = _hook(adapter, box(0.0, 1.0), lp("linf"), x, label)
    assert found is not None and found.method == "milp" and found.optimal
    assert found.adversarial.shape == x.shape
    with torch.no_grad():
        assert int(adapter(torch.as_tensor(found.adversarial[None])).argmax()) != label
    layers = extract_relu_layers(module)
    m, s = np.repeat(mean, 3), np.repeat(std, 3)  # channel c covers features 3c .. 3c + 2
    ref = relu_net_margin(fold_affine_input(layers, m, s), x.ravel(), label, math.inf)
    assert found.margin == pytest.approx(ref.margin, rel=1e-6)


def test_threshold_goal_on_a_two_logit_torch_model() -> None:
    torch.manual_seed(2)
    module = nn.Linear(3, 2).double()
    x = np.array([0.5, 0.5, 0.5])
    with torch.no_grad():
        p1 = float(torch.softmax(module(torch.as_tensor(x[None])), 1)[0, 1])
    goal = Threshold(min(max(p1 + 0.1, 0.05), 0.95))
    label = int(p1 >= goal.threshold)
    found = _hook(TorchAdapter(module), box(-5.0, 5.0), lp("l2"), x, label, goal)
    assert found is not None and math.isfinite(found.margin)
    scores = TorchAdapter(module)(torch.as_tensor(found.adversarial[None]))
    assert bool(goal.is_adversarial(scores, torch.tensor([label])))


def test_nothing_may_change_and_unknown_models() -> None:
    x = np.array([0.1, 0.2])
    frozen = _hook(CallableAdapter(lambda a: a), box(0.0, 1.0, mask=np.zeros(2)), lp("l2"), x, 0)
    assert frozen is not None and frozen.margin == math.inf and frozen.lower == math.inf
    assert frozen.method == "box: no feature of this row may change"
    assert _hook(CallableAdapter(lambda a: a), box(0.0, 1.0), lp("l2"), x, 0) is None


class _Affine:
    """A model kind the core does not know, described by a plugin of its own."""

    differentiable = False
    device = torch.device("cpu")

    def __init__(self, w: np.ndarray, b: np.ndarray) -> None:
        self.w, self.b = w, b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ torch.as_tensor(self.w).T + torch.as_tensor(self.b)


class _AffinePlugin:
    @hookimpl
    def mmargin_exact_model(self, model):  # type: ignore[no-untyped-def]
        if isinstance(model, _Affine):
            return ExactModel("logits", layers=[(model.w, model.b)])
        return None


def test_a_plugin_describes_its_model_and_the_core_solves_it() -> None:
    rng = np.random.default_rng(5)
    model = _Affine(rng.normal(size=(3, 4)), rng.normal(size=3))
    x = rng.uniform(0.3, 0.7, size=4)
    label = int(np.argmax(model.w @ x + model.b))
    pm = plugins.manager()
    assert _hook(model, box(0.0, 1.0), lp("l1"), x, label) is None
    pm.register(_AffinePlugin(), name="test-affine")
    try:
        found = _hook(model, box(0.0, 1.0), lp("l1"), x, label)
    finally:
        pm.unregister(name="test-affine")
    oracle = linear_margin(model.w, model.b, x, label, 1.0, lower=0.0, upper=1.0)
    assert found is not None and found.margin == pytest.approx(oracle.margin, rel=1e-9)


def test_counted_adapter_is_described_like_the_adapter_it_wraps() -> None:
    from mmargin.engine.counting import CountingAdapter

    module = _linear(3)
    x = np.array([0.2, 0.7, 0.4, 0.9])
    with torch.no_grad():
        label = int(module(torch.as_tensor(x[None])).argmax())
    counted = CountingAdapter(TorchAdapter(module))
    found = _hook(counted, box(0.0, 1.0), lp("l2"), x, label)
    assert found is not None and found.method.startswith("linear")


def test_a_space_that_projects_differently_is_not_taken_for_its_box() -> None:
    """The box fallback only describes spaces whose constraint set is the box and mask."""
    from dataclasses import dataclass

    from mmargin.spaces import ContinuousSpace

    @dataclass
    class Banded(ContinuousSpace):
        def project(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
            return super().project(x, delta * 0.5)

    module = _linear()
    x = np.array([0.2, 0.7, 0.4, 0.9])
    with torch.no_grad():
        label = int(module(torch.as_tensor(x[None])).argmax())
    space = Banded(lower=0.0, upper=1.0)
    assert _hook(TorchAdapter(module), space, lp("l2"), x, label) is None
