"""The threshold goal: its decision rule, its loss, and that the runner's clean pass and
re-verification use the same rule (a transaction at P(fraud) = 0.4 with a 0.3 threshold
is *flagged*, so it is searched — not "already misclassified")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmargin.plugin import Status, Threshold, Untargeted, decide, make_goal
from mmargin.testing import SearchSpec, minimal_flip, parse_task
from mmargin_tabular import models
from mmargin_tabular.adapters import SklearnAdapter
from mmargin_tabular.distances import make_distance
from mmargin_tabular.space import tabular_space


def _logits(p1: list[float]) -> torch.Tensor:
    p = torch.tensor(p1, dtype=torch.float64)
    return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)


def test_decision_rule_and_loss_sign() -> None:
    goal = Threshold(0.3)
    scores = _logits([0.1, 0.299, 0.3, 0.45, 0.9])  # 0.3 itself is flagged (p >= τ)
    assert decide(goal, scores).tolist() == [0, 0, 1, 1, 1]
    assert decide(Untargeted(), scores).tolist() == [0, 0, 0, 0, 1]
    flagged = torch.ones(5, dtype=torch.long)
    loss = goal.loss(scores, flagged)
    assert torch.equal(loss < 0, goal.is_adversarial(scores, flagged))
    legit = torch.zeros(5, dtype=torch.long)
    assert goal.is_adversarial(scores, legit).tolist() == [False, False, True, True, True]
    p = torch.tensor([0.1, 0.299, 0.3, 0.45, 0.9], dtype=torch.float64)
    assert torch.allclose(goal.margin(scores), torch.logit(p) - math.log(0.3 / 0.7) + 1e-6)


def test_raw_scores_and_multiclass() -> None:
    raw = Threshold(-0.5, scores="raw")
    scores = torch.tensor([[0.4, -0.4], [-1.0, 1.0]])
    assert decide(raw, scores).tolist() == [1, 1]
    multi = Threshold(0.5, positive=2, target=0)
    z = torch.tensor([[0.0, 1.0, 3.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert decide(multi, z).tolist() == [2, 0, 1]
    labels = torch.tensor([2, 1, 2])
    t = multi.targets_for(labels)
    assert multi.is_adversarial(z, labels, t).tolist() == [False, True, False]
    assert torch.equal(multi.loss(z, labels, t) < 0, multi.is_adversarial(z, labels, t))


def test_bad_goals_are_refused() -> None:
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        Threshold(1.5)
    with pytest.raises(ValueError, match="'proba' or 'raw'"):
        Threshold(0.5, scores="logit")
    with pytest.raises(ValueError, match="needs a threshold"):
        make_goal("threshold")
    task = {"model": {"factory": "m:f"}, "data": {"loader": "fraud"},
            "space": {"name": "tabular"}, "distance": {"name": "tabular-l1"}}  # fmt: skip
    from mmargin.plugin import InvalidTaskError

    with pytest.raises(InvalidTaskError, match=r"goal\.threshold"):
        parse_task({**task, "goal": {"kind": "threshold"}})
    with pytest.raises(InvalidTaskError, match=r"goal\.threshold: expected a probability"):
        parse_task({**task, "goal": {"kind": "threshold", "threshold": 2.0}})
    with pytest.raises(InvalidTaskError, match="only used by kind = 'threshold'"):
        parse_task({**task, "goal": {"kind": "untargeted", "threshold": 0.3}})
    ok = parse_task({**task, "goal": {"kind": "threshold", "threshold": -1, "scores": "raw"}})
    assert ok.goal_options == {"threshold": -1, "scores": "raw"}


@pytest.mark.parametrize("tau", [0.3, 0.7])
def test_runner_uses_the_threshold_for_clean_pass_and_verification(test_rows, tau) -> None:
    x, _ = test_rows
    model = models.fraud_logreg()
    p = model.predict_proba(x.astype(np.float64))[:, 1]
    between = np.flatnonzero((p >= min(tau, 0.5)) & (p < max(tau, 0.5)))[:4]
    below = np.flatnonzero(p < min(tau, 0.5) - 0.05)[:2]
    idx = np.concatenate([between, below])
    labels = np.ones(len(idx), dtype=np.int64)  # "the model should flag these"
    space = tabular_space("fraud")
    results = minimal_flip(SklearnAdapter(model), space, make_distance("l1", space.schema),
                           x[idx], labels, goal=Threshold(tau),
                           spec=SearchSpec(budget=300, strategy="hybrid"))  # fmt: skip
    for r, i in zip(results, idx, strict=True):
        decided = int(p[i] >= tau)
        if decided == 1:
            assert r.status is Status.FLIPPED and r.pred_label == 1 and r.adv_label == 0
            p_adv = model.predict_proba(np.asarray(r.adversarial, dtype=np.float64)[None])[0, 1]
            assert p_adv < tau
        else:
            assert r.status is Status.MISCLASSIFIED and r.pred_label == 0 and r.margin == 0
