"""The Python API says what a task file says: adapter options, strategy, goal options,
search knobs; run_task takes in-memory models and data; load_run reads a run folder back."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mmargin
from mmargin import plugins
from mmargin.errors import InvalidTaskError
from mmargin.exact.types import ExactMargin
from mmargin.hookspecs import hookimpl
from mmargin.results import Status
from mmargin.tasks import parse_task
from mmargin.testing import closed_form_margin, linear_model


def _batch(model: torch.nn.Module, n: int, dim: int, seed: int) -> tuple[torch.Tensor, Any]:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return x, model(x).argmax(1)


def test_adapter_options_normalise_inside_the_adapter_closed_form() -> None:
    """A linear model on normalised inputs: its margin in raw units is the closed-form
    margin of the model with the normalisation folded in (W/σ, b − W·μ/σ)."""
    model = linear_model(4, 3, seed=5)
    mean, std = [0.5, -1.0, 0.2, 0.0], [2.0, 0.5, 1.0, 4.0]
    folded = linear_model(4, 3, seed=5)
    with torch.no_grad():
        folded.weight.div_(torch.tensor(std))
        folded.bias.sub_(folded.weight @ torch.tensor(mean))
    x, labels = _batch(folded, 6, 4, seed=2)
    results = mmargin.evaluate(model, x, labels, "l2", adapter="torch",
                               adapter_options={"mean": mean, "std": std},
                               budget=300, exact="never")  # fmt: skip
    for i, r in enumerate(results):
        exact = closed_form_margin(folded, x[i].numpy(), int(labels[i]), 2.0)
        assert r.status is Status.FLIPPED
        assert exact * (1 - 1e-4) <= r.margin <= exact * 1.01, (i, r.margin, exact)
    with pytest.raises(InvalidTaskError, match=r"adapter_options.mean: expected one value or 4"):
        mmargin.evaluate(model, x, labels, "l2", adapter_options={"mean": [0.1, 0.2]})
    with pytest.raises(InvalidTaskError, match="unknown adapter 'torchh'"):
        mmargin.evaluate(model, x, labels, "l2", adapter="torchh")


def test_threshold_goal_with_its_options_matches_the_closed_form() -> None:
    """Two classes, decision p(1) >= 0.3: the boundary is the hyperplane
    (w1 − w0)·x + b1 − b0 = logit(0.3), so the L2 margin is a point-to-plane distance."""
    model = linear_model(3, 2, seed=8)
    tau = 0.3
    w = (model.weight[1] - model.weight[0]).detach().double().numpy()
    b = float((model.bias[1] - model.bias[0]).detach())
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(4))
    score = x.double().numpy() @ w + b - math.log(tau / (1 - tau))
    labels = torch.as_tensor((score >= 0).astype(np.int64))
    results = mmargin.evaluate(model, x, labels, "l2", goal="threshold", threshold=tau,
                               positive=1, scores="proba", budget=300)  # fmt: skip
    for i, r in enumerate(results):
        exact = abs(score[i]) / np.linalg.norm(w)
        assert r.status is Status.FLIPPED
        assert exact * (1 - 1e-4) <= r.margin <= exact * 1.01, (i, r.margin, exact)
    with pytest.raises(InvalidTaskError, match=r"goal\.threshold: expected a probability"):
        mmargin.evaluate(model, x, labels, goal="threshold", threshold=1.5)
    with pytest.raises(InvalidTaskError, match=r"goal\.threshold: only used by kind"):
        mmargin.evaluate(model, x, labels, threshold=0.3)


def test_search_knobs_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmargin.engine import flip

    seen: dict[str, Any] = {}

    def spy(*args: Any, **kwargs: Any) -> list[Any]:
        seen.update(kwargs)
        return []

    monkeypatch.setattr(flip, "minimal_flip", spy)
    model = linear_model(4, 3, seed=1)
    mmargin.evaluate(model, torch.zeros(2, 4), [0, 1], "linf", strategy="decision", budget=77,
                     batch_size=5, restarts=3, patience=4, line_search_steps=6, exact="never",
                     seed=2**40, report_passes=9)  # fmt: skip
    spec = seen["spec"]
    assert (spec.strategy, spec.budget, spec.batch_size, spec.exact) == ("decision", 77, 5, "never")
    assert (spec.line_search_steps, spec.seed, spec.report_passes) == (6, 2**40, 9)
    assert callable(seen["exact"]) and callable(seen["report"])
    assert (spec.gradient.restarts, spec.gradient.patience) == (3, 4)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"budget": 0}, "search.budget"), ({"budget": 10**8}, "search.budget"),
     ({"restarts": 10**6}, "search.restarts"), ({"patience": -1}, "search.patience"),
     ({"strategy": "magic"}, "search.strategy"), ({"seed": -1}, "task.seed"),
     ({"seed": 2**63}, "task.seed"), ({"batch_size": 0}, "task.batch_size"),
     ({"device": "gpu9"}, "device"), ({"goal": "targeted"}, "goal.target"),
     ({"goal": "sideways"}, "goal.kind")],
)  # fmt: skip
def test_absurd_api_arguments_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    model = linear_model(4, 3, seed=1)
    with pytest.raises(InvalidTaskError) as info:
        mmargin.evaluate(model, torch.zeros(2, 4), [0, 1], **kwargs)
    assert info.value.field == field


def _task(out: Path | None = None) -> Any:
    raw: dict[str, Any] = {"space": {"name": "box"}, "distance": {"name": "l2"},
                           "search": {"budget": 200}, "report": {"epsilons": [0.5]}}  # fmt: skip
    if out is not None:
        raw["task"] = {"out": str(out)}
    return parse_task(raw)


def test_run_task_with_in_memory_model_and_data_round_trips_through_load_run(
    tmp_path: Path,
) -> None:
    model = linear_model(4, 3, seed=6)
    x, labels = _batch(model, 5, 4, seed=9)
    labels = labels.clone()
    labels[0] = (labels[0] + 1) % 3  # one misclassified sample
    output = mmargin.run_task(_task(tmp_path / "run"), model=model, data=(x, labels))
    assert [r.status for r in output.results] == [Status.MISCLASSIFIED] + [Status.FLIPPED] * 4
    for i, r in enumerate(output.results[1:], start=1):  # the core's exact hook: exact margins
        exact = closed_form_margin(model, x[i].numpy(), int(labels[i]), 2.0)
        assert r.margin == pytest.approx(exact, rel=1e-3)

    run = mmargin.load_run(tmp_path / "run")
    assert isinstance(run, mmargin.RunRecord)
    assert run.results == output.results  # every field but the adversarial (compare=False)
    for loaded, original in zip(run.results, output.results, strict=True):
        if original.status is Status.FLIPPED:
            np.testing.assert_array_equal(loaded.adversarial, original.adversarial)
    assert run.results[0].adversarial is None
    assert run.summary == output.summary
    assert run.task["model"] == {"in_memory": "Linear"} and "torch" in run.task["versions"]
    frame = run.frame()
    assert list(frame["sample"]) == ["0", "1", "2", "3", "4"]
    assert list(frame["margin"]) == [r.margin for r in output.results]


def test_run_task_takes_a_dataset_and_overrides(tmp_path: Path) -> None:
    model = linear_model(4, 3, seed=6)
    x, labels = _batch(model, 6, 4, seed=1)
    data = mmargin.Dataset(x.numpy(), labels.numpy(), [f"r{i}" for i in range(6)])
    output = mmargin.run_task(_task(), model=model, data=data, samples=4, epsilons=[0.1, 9.0])
    assert [r.sample for r in output.results] == ["r0", "r1", "r2", "r3"]
    assert set(output.summary.robust_accuracy) == {0.1, 9.0} and output.out is None
    with pytest.raises(InvalidTaskError, match=r"model\.factory: missing"):
        mmargin.run_task(_task(), data=data)
    with pytest.raises(InvalidTaskError, match="data: missing table"):
        mmargin.run_task(_task(), model=model)


def test_load_run_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    from mmargin.store import RunFolderError

    with pytest.raises(RunFolderError, match="not a readable run folder"):
        mmargin.load_run(tmp_path)


def _exact(margin: float) -> ExactMargin:
    return ExactMargin(margin=margin, lower=margin, adversarial=None, adv_label=None,
                       method="fake", optimal=True)  # fmt: skip


class _Answers:
    def __init__(self, margin: float | None) -> None:
        self.margin = margin

    @hookimpl
    def mmargin_exact_margin(self, x: np.ndarray, label: int) -> ExactMargin | None:
        return None if self.margin is None else _exact(self.margin)


class _First(_Answers):
    @hookimpl(tryfirst=True)
    def mmargin_exact_margin(self, x: np.ndarray, label: int) -> ExactMargin | None:
        return None if self.margin is None else _exact(self.margin)


def test_the_exact_callable_names_the_plugin_that_answered() -> None:
    from mmargin.api import exact_fn

    with plugins.registered(_Answers(None), name="silent"), \
            plugins.registered(_Answers(7.0), name="late"), \
            plugins.registered(_First(3.0), name="eager"):  # fmt: skip
        found = exact_fn(None, None, None, None)(np.zeros(2), 0, None, None)
        assert found.margin == 3.0 and found.plugin == "eager"
    with plugins.registered(_Answers(7.0), name="late"), \
            plugins.registered(_Answers(None), name="silent"):  # fmt: skip
        found = exact_fn(None, None, None, None)(np.zeros(2), 0, None, None)
        assert found.margin == 7.0 and found.plugin == "late"
    # pluggy's own call agrees on who answers first
    with plugins.registered(_Answers(7.0), name="late"), plugins.registered(_First(3.0), "eager"):
        hook = plugins.manager().hook.mmargin_exact_margin
        assert hook(model=None, space=None, distance=None, x=np.zeros(2), label=0, target=None,
                    upper_bound=None, goal=None).margin == 3.0  # fmt: skip


def test_evaluate_leaves_the_callers_model_as_given() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model.train()
    model[2].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    mmargin.evaluate(model, x, model(x).argmax(1), "l2", budget=50, exact="never")
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Reporter:
    """A sample-report plugin that spends one pass of the counted adapter per flip."""

    @hookimpl
    def mmargin_sample_report(
        self, space: Any, model: Any, x: torch.Tensor, x_adv: torch.Tensor, goal: Any
    ) -> list[dict[str, Any]] | None:
        if getattr(space, "name", "") != "box":
            return None
        scores = model(x_adv)
        return [{"h3_still_adversarial": bool(goal.is_adversarial(scores, scores.argmin(1)))}]


def test_the_sample_report_hook_reaches_the_engine_and_is_charged() -> None:
    model = linear_model(4, 3, seed=1)
    x, labels = _batch(model, 4, 4, seed=3)
    with plugins.registered(_Reporter(), name="reporter"):
        results = mmargin.evaluate(model, x, labels, "l2", budget=60, report_passes=1,
                                   exact="never")  # fmt: skip
    for r in results:
        assert r.status is Status.FLIPPED and "h3_still_adversarial" in r.extras
        assert r.queries <= 60
