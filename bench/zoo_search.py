"""One untargeted mmargin search of MNIST images on a zoo model, for the bench tests that
check a search setting on the model where it was measured."""

from __future__ import annotations

import numpy as np
import torch

from mmargin.adapters import TorchAdapter
from mmargin.distances import fit_distance, lp
from mmargin.engine import minimal_flip
from mmargin.engine.spec import GradientConfig, SearchSpec
from mmargin_image.plugin import image_space


def margins(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, norm: str, budget: int,
            gradient: GradientConfig) -> np.ndarray:  # fmt: skip
    """Each image's found margin under ``norm`` (``l2``, ``linf``, ``l1``) with ``budget``
    passes per sample and the search settings ``gradient`` (as the benchmark's mmargin row
    runs it: the image space, the whole batch at once, no exact solver)."""
    spec = SearchSpec(budget=budget, batch_size=len(x), exact="never", gradient=gradient)
    space = image_space()
    results = minimal_flip(TorchAdapter(model), space, fit_distance(space, lp(norm)), x, y,
                           spec=spec)  # fmt: skip
    return np.array([r.margin for r in results], dtype=float)
