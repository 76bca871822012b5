"""The L1 ε-ball runs' own schedule start (:func:`mmargin.engine.epsball.schedule_start`,
``GradientConfig.alpha_init_l1`` / ``gamma_init_l1``) on the FGSM-trained tuning CNN, where
it was measured: with the other distances' start (α 1, γ 0.05) a 250-pass L1 search's
short runs took steps far longer than its flips and could not shrink ε from a first flip
several times the minimum. (By default only the rows still far after 10 steps switch.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo

from mmargin.adapters import TorchAdapter
from mmargin.distances import fit_distance, lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import GradientConfig, SearchSpec
from mmargin_image.data import load_mnist
from mmargin_image.plugin import image_space


def _l1(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, gradient: GradientConfig
) -> np.ndarray:
    spec = SearchSpec(budget=250, batch_size=len(x), exact="never", gradient=gradient)
    space = image_space()
    results = minimal_flip(TorchAdapter(model), space, fit_distance(space, lp("l1")), x, y,
                           spec=spec)  # fmt: skip
    return np.array([r.margin for r in results], dtype=float)


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
