"""Oracles and tiny models for testing mmargin and its plugins (exact margins known)."""

from __future__ import annotations

import math

import numpy as np
import torch


def linear_model(dim: int, classes: int, seed: int) -> torch.nn.Linear:
    """A random linear classifier (float32) with a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(dim, classes)
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, dim, generator=gen))
        model.bias.copy_(torch.randn(classes, generator=gen))
    return model


def closed_form_margin(model: torch.nn.Linear, x: np.ndarray, label: int, p: float) -> float:
    """Exact unconstrained untargeted margin: min_j (z_y − z_j) / ‖w_y − w_j‖_dual (float64)."""
    w = model.weight.detach().double().numpy()
    b = model.bias.detach().double().numpy()
    z = w @ x.astype(np.float64) + b
    dual = {1.0: math.inf, 2.0: 2.0, math.inf: 1.0}[p]
    return min(
        (z[label] - z[j]) / np.linalg.norm(w[label] - w[j], ord=dual)
        for j in range(len(z))
        if j != label
    )


def toy_linear() -> torch.nn.Linear:
    """A fixed 4-feature, 3-class linear model (a task-file factory for the core tests)."""
    return linear_model(4, 3, seed=11)
