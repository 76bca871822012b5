"""The steps a sample's runs left unspent go to a second Lagrangian run (L2).

A class probe lets a sample leave early once the probe's class is hopeless
(:mod:`mmargin.engine.legstop`), so on adversarially trained models a 1000-pass L2 search
spent ~865 of its passes per sample. Their final flips come almost always from the
Lagrangian run, and which basin that run settles in depends on its path: a second run
from the clean input with a larger first step (``GradientConfig.unspent_lr``, twice the
first run's) reaches other flips. So after the planned runs, every sample that has a
flip and at least :data:`~mmargin.engine.lagrangian.MIN_STEPS` steps left runs that second
run for exactly the steps it has left.

Measured on the robust tuning models (L2, 1000 passes, 100 images, pooled with
ALMA/FMN/FAB/DDN/C&W/DeepFool): tune_cnn_fgsm 0.929 → 0.950, tune_cnn_fgsm_short 0.983 →
0.987 (both halves of 50 up; on images 100–199, 0.950 → 0.955 and 0.962 → 0.968);
mnist_cnn's distances are unchanged. It costs passes: ~990 per sample instead of ~865 on
the robust models and 915 on mnist_cnn. The same steps warm-started from the best flip gained
≤ 0.002, a second run with the first run's step size 0.005, and taking the second run's
steps out of the first run's (same passes) lost. Searches whose runs spend every step
(250 passes: the probes are too short to leave) are unchanged.

The plan stays a function of the steps and the distance; the lengths are each sample's
own (its queries), and each group of samples with the same steps left runs together with
per-sample arithmetic, so a sample's result never depends on the rest of its batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.engine.lagrangian import MIN_STEPS, lagrangian_run
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState
from mmargin.goals import Goal
from mmargin.protocols import Distance, ModelAdapter, Space

__all__ = ["spend_unspent", "unspent_steps"]


def unspent_steps(steps: int, before: Tensor, state: SearchState) -> Tensor:
    """Per sample, the steps of a search of ``steps`` steps its runs have not spent
    (``before``: its queries when the search's runs began; a step is 2 queries)."""
    return steps - torch.div(state.queries - before, 2, rounding_mode="floor")


def spend_unspent(
    model: ModelAdapter, space: Space, distance: Distance, goal: Goal, x: Tensor,
    labels: Tensor, steps: int, before: Tensor, state: SearchState, config: GradientConfig,
) -> None:  # fmt: skip
    """On L2 (and with ``config.unspent_lr`` > 0), give each sample that has a flip and
    at least ``MIN_STEPS`` unspent steps (:func:`unspent_steps`) a Lagrangian run from
    the clean input of exactly that many steps, first step ``config.unspent_lr``."""
    if distance.p != 2.0 or config.unspent_lr <= 0:
        return
    left = unspent_steps(steps, before, state)
    ready = (left >= MIN_STEPS) & torch.isfinite(state.best_norm)
    dead = state.flags.get("zero_gradients")
    if dead is not None:
        ready &= ~dead
    for length in sorted(set(left[ready].tolist())):
        lagrangian_run(model, space, distance, goal, x, labels, None, int(length), state,
                       only=ready & (left == length), lr_init=config.unspent_lr)  # fmt: skip
