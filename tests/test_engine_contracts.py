"""Contracts the engine enforces: the caller's model is left as given, exact-margin claims
are checked, device mistakes give one line, and run-level mistakes stop the run while
per-sample failures stay per sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmargin.adapters import CallableAdapter, TorchAdapter, check_device
from mmargin.distances import lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import SearchSpec
from mmargin.errors import RunError
from mmargin.exact.types import ExactMargin
from mmargin.goals import Targeted
from mmargin.results import Status
from mmargin.spaces import box
from mmargin.testing.oracles import closed_form_margin, linear_model


def _data(n: int = 6, d: int = 5) -> tuple[torch.nn.Linear, np.ndarray, np.ndarray]:
    model = linear_model(d, 3, seed=1)
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(2)).numpy()
    return model, x, model(torch.as_tensor(x)).argmax(1).numpy()


def _state(model: torch.nn.Module) -> tuple[list[bool], list[bool], list[torch.Tensor]]:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [p.detach().clone() for p in model.parameters()])  # fmt: skip


class _Net(torch.nn.Module):
    """Dropout (train mode matters), one frozen layer, one trainable; raises on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.drop, self.b = (
            torch.nn.Linear(5, 8),
            torch.nn.Dropout(0.5),
            torch.nn.Linear(8, 3),
        )
        self.a.weight.requires_grad_(False)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail:
            raise RuntimeError("model exploded")
        return self.b(self.drop(torch.relu(self.a(x))))


@pytest.mark.parametrize("fail", [False, True])
def test_the_callers_model_is_left_exactly_as_given(fail: bool) -> None:
    import mmargin

    net = _Net().train()
    net.drop.eval()  # a mixed state must come back mixed
    net.fail = fail
    before = _state(net)
    _, x, _ = _data()
    labels = np.zeros(len(x), dtype=np.int64)
    results = mmargin.evaluate(net, x, labels, "l2", budget=40)
    after = _state(net)
    assert after[0] == before[0] and after[1] == before[1]
    assert all(torch.equal(a, b) for a, b in zip(after[2], before[2], strict=True))
    if fail:
        assert all(r.status is Status.ERROR for r in results)


def test_eval_mode_is_used_while_searching() -> None:
    """Dropout in train mode would make verification random; the adapter runs eval mode."""
    net = _Net().train()
    _, x, _ = _data()
    adapter = TorchAdapter(net)
    with torch.no_grad():
        labels = adapter(torch.as_tensor(x)).argmax(1).numpy()
    results = minimal_flip(adapter, box(), lp("l2"), x, labels, spec=SearchSpec(budget=200))
    assert all(r.status is Status.FLIPPED for r in results)
    assert net.training and net.drop.training


def _overclaim(factor: float):  # type: ignore[no-untyped-def]
    def exact(x: np.ndarray, label: int, target: int | None, upper: float | None) -> ExactMargin:
        assert upper is not None
        return ExactMargin(upper * factor, upper * factor, None, None, "bogus", True,
                           plugin="liar")  # fmt: skip

    return exact


def test_an_overclaimed_lower_bound_is_discarded_with_a_warning_naming_the_plugin() -> None:
    model, x, labels = _data()
    with pytest.warns(RuntimeWarning, match="liar claimed a lower bound"):
        results = minimal_flip(TorchAdapter(model), box(), lp("l2"), x, labels,
                               exact=_overclaim(10.0))  # fmt: skip
    for i, r in enumerate(results):
        assert r.status is Status.FLIPPED and r.lower_bound is None and not r.exact
        assert "liar" in r.message and any("liar" in n for n in r.extras["notes"])
        assert r.margin >= closed_form_margin(model, x[i], int(labels[i]), 2.0) * (1 - 1e-4)


def test_a_claim_within_round_off_trims_to_the_margin_and_an_honest_one_is_kept() -> None:
    model, x, labels = _data()
    results = minimal_flip(TorchAdapter(model), box(), lp("l2"), x, labels,
                           exact=_overclaim(1.0 + 1e-4))  # fmt: skip
    assert all(r.exact for r in results)
    honest = minimal_flip(TorchAdapter(model), box(), lp("l2"), x, labels, exact=_overclaim(0.5))
    assert all(r.lower_bound == pytest.approx(r.margin * 0.5, rel=1e-3) for r in honest)


@pytest.mark.parametrize("name", ["gpu9", "cuda:x", "tpu", ""])
def test_misspelt_devices_give_one_line(name: str) -> None:
    with pytest.raises(ValueError, match=r"^device .*: expected cpu, cuda or cuda:N") as info:
        check_device(name)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_gives_one_line(name: str) -> None:
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        check_device(name)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TorchAdapter(torch.nn.Linear(2, 2), device=name)  # type: ignore[arg-type]


# -- run-level errors ----------------------------------------------------------------------
def test_a_feature_count_mismatch_stops_the_run_with_one_line() -> None:
    model, _, _ = _data(d=5)
    x = np.zeros((4, 9), dtype=np.float32)
    with pytest.raises(RunError, match="first batch failed the same way: RuntimeError: mat1") as e:
        minimal_flip(TorchAdapter(model), box(), lp("l2"), x, np.zeros(4))
    assert "\n" not in str(e.value)


def test_a_black_box_feature_mismatch_stops_the_run() -> None:
    w = np.ones((5, 2))

    def predict(a: np.ndarray) -> np.ndarray:
        if a.shape[1] != 5:
            raise ValueError(f"X has {a.shape[1]} features, but the model is expecting 5 features")
        return a @ w

    with pytest.raises(RunError, match="X has 9 features"):
        minimal_flip(CallableAdapter(predict), box(), lp("l2"), np.zeros((3, 9)), np.zeros(3))


def test_a_normalisation_of_the_wrong_length_stops_the_run() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(24, 3))
    adapter = TorchAdapter(net, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    x = np.zeros((3, 2, 3, 4), dtype=np.float32)  # two channels, three means
    with pytest.raises(RunError, match="must match the size"):
        minimal_flip(adapter, box(), lp("l2"), x, np.zeros(3))


def test_scores_of_the_wrong_shape_stop_the_run() -> None:
    adapter = CallableAdapter(lambda a: np.zeros((a.shape[0], 2, 2)))
    with pytest.raises(RunError, match=r"scores of shape \(1, 2, 2\)"):
        minimal_flip(adapter, box(), lp("l2"), np.zeros((2, 3)), np.zeros(2))


def test_a_target_class_the_model_does_not_have_stops_the_run() -> None:
    model, x, labels = _data()
    with pytest.raises(RunError, match="target class 7 does not exist: the model scores 3"):
        minimal_flip(TorchAdapter(model), box(), lp("l2"), x, labels, goal=Targeted(7))


def test_genuine_per_sample_failures_stay_per_sample() -> None:
    model, x, labels = _data(n=6)

    def flaky(a: np.ndarray) -> np.ndarray:
        if np.any(a[:, 0] == 99):
            raise RuntimeError("poisoned input")
        return model(torch.as_tensor(a, dtype=torch.float32)).detach().numpy()

    x = x.copy()
    x[2, 0] = 99.0
    x[4, 1] = math.nan
    results = minimal_flip(CallableAdapter(flaky), box(), lp("l2"), x, labels,
                           spec=SearchSpec(budget=100))  # fmt: skip
    assert results[2].status is Status.ERROR and "poisoned" in results[2].message
    assert results[4].status is Status.ERROR and "NaN" in results[4].message
    assert all(results[i].status is not Status.ERROR for i in (0, 1, 3, 5))
    one = minimal_flip(CallableAdapter(flaky), box(), lp("l2"), x[2:3], labels[2:3])
    assert one[0].status is Status.ERROR  # one sample, not a set-up mistake: no RunError


def test_flips_from_loss_is_the_goals_own_test() -> None:
    """The flip test read off an already computed loss is the goal's ``is_adversarial``:
    goals with ``flipped`` use it, the others (a threshold) their own test."""
    from mmargin.goals import Targeted, Threshold, Untargeted, flips_from_loss

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 4, generator=g)
    scores[:8, 1] = scores[:8, 0]  # ties at the top
    labels = torch.randint(0, 4, (64,), generator=g)
    for goal in (Untargeted(), Targeted(2), Threshold(threshold=0.5)):
        targets = goal.targets_for(labels)
        loss = goal.loss(scores, labels, targets)
        got = flips_from_loss(goal, scores, loss, labels, targets)
        assert torch.equal(got, goal.is_adversarial(scores, labels, targets))
