"""The L1 schedule's own settings on the FGSM-trained tuning CNN, where they were measured
(250 passes):

- the ε-ball runs' own schedule start (:func:`mmargin.engine.anneal.schedule_start`,
  ``GradientConfig.alpha_init_l1`` / ``gamma_init_l1``): with the other distances' start
  (α 1, γ 0.05) the short runs took steps far longer than their flips and could not shrink
  ε from a first flip several times the minimum (by default only the rows still far after
  10 steps switch);
- the refinements' own step share (``GradientConfig.alpha_refine_l1``,
  :func:`mmargin.engine.gradient.refine_config`): with α 1 a refinement replaced the flip it
  starts from and annealed back to about where it began."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo
from zoo_search import margins

from mmargin.engine.spec import GradientConfig
from mmargin_image.data import load_mnist


def _l1(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, gradient: GradientConfig
) -> np.ndarray:
    return margins(model, x, y, "l1", 250, gradient)


def test_the_l1_start_finds_smaller_flips_on_the_robust_tuning_cnn() -> None:
    torch.set_num_threads(1)
    model = zoo.load("tune_cnn_fgsm").eval()
    data = load_mnist("test")
    x, y = np.ascontiguousarray(data.x[:16]), np.ascontiguousarray(data.y[:16])
    new = _l1(model, x, y, GradientConfig())  # the default: slow rows switch
    old = _l1(model, x, y, GradientConfig(alpha_init_l1=1.0, gamma_init_l1=0.05,
                                          l1_slow_after=0, l1_slow_kept=0.0))  # fmt: skip
    assert np.isfinite(new).all()
    assert new.mean() < 0.85 * old.mean()
    assert (new < old).mean() >= 0.6


def test_the_l1_refinement_step_share_finds_smaller_flips_on_the_robust_tuning_cnn() -> None:
    torch.set_num_threads(1)
    model = zoo.load("tune_cnn_fgsm").eval()
    data = load_mnist("test")
    x, y = np.ascontiguousarray(data.x[:16]), np.ascontiguousarray(data.y[:16])
    # the share as it was measured, without the first run's extension (session 16,
    # ``l1_slow_extend``): with it these 16 samples move chaotically (α 1 instead of 0.5:
    # mean 0.959 → 1.039, 7 smaller, 5 larger; images 16–47 0.981, 18 of 32 smaller, 5
    # larger), while over images 0–199 at 250 passes α 1 still gave larger flips on every
    # tuning CNN (geometric mean 1.037 tune_cnn_fgsm, 1.024 tune_cnn_fgsm_short, 1.007
    # mnist_cnn, 1.003 tune_cnn_bn)
    # and without session 19's smaller share for the far switched rows
    # (``alpha_refine_slow_l1``): it gives those rows 0.3 whatever the refinement's own
    # share, so on this robust CNN, where most rows are such, both runs would take it
    plain = GradientConfig(l1_slow_extend=False, alpha_refine_slow_l1=0.0)
    new = _l1(model, x, y, plain)
    old = _l1(model, x, y, replace(plain, alpha_refine_l1=0.0))
    assert np.isfinite(new).all()
    # measured (α 0.5, with the restart of session 15): mean 0.959 × the old one, 11 of
    # 16 samples smaller, 3 larger (without the restart 0.944, 12 of 16)
    assert new.mean() < 0.97 * old.mean()
    assert (new < old).mean() >= 0.6
