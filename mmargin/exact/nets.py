"""Reading ReLU networks: torch ``Linear``/``ReLU`` stacks as affine layers, an input
normalisation folded into the first layer, and a float64 forward pass to re-check flips."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmargin.exact.linear import broadcast_flat

Layers = list[tuple[np.ndarray, np.ndarray]]
"""Affine layers ``[(W (out, in), b (out,)), ...]`` with a ReLU after every one but the last."""


def extract_relu_layers(module: Any) -> Layers | None:
    """Affine layers of a torch ``Linear -> ReLU -> Linear ...`` net, else ``None``.

    Accepts an ``nn.Sequential`` (nested ones are flattened) or a bare ``nn.Linear`` built
    only from ``nn.Flatten`` (default dims), ``nn.Linear`` and ``nn.ReLU``, alternating
    Linear/ReLU and ending with a Linear.  Returns float64 ``[(W, b), ...]`` copies.
    """
    from torch import nn

    flat: list[Any] = []

    def walk(m: Any) -> None:
        if type(m) is nn.Sequential:
            for child in m:
                walk(child)
        else:
            flat.append(m)

    if type(module) not in (nn.Sequential, nn.Linear):
        return None
    walk(module)
    layers: Layers = []
    expect_linear = True
    for m in flat:
        if type(m) is nn.Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                return None
        elif type(m) is nn.Linear and expect_linear:
            W = m.weight.detach().cpu().double().numpy().copy()
            b = (
                m.bias.detach().cpu().double().numpy().copy()
                if m.bias is not None
                else np.zeros(W.shape[0])
            )
            if layers and layers[-1][0].shape[0] != W.shape[1]:
                return None
            layers.append((W, b))
            expect_linear = False
        elif type(m) is nn.ReLU and not expect_linear:
            expect_linear = True
        else:
            return None
    return layers if layers and not expect_linear else None


def fold_affine_input(
    layers: Layers, mean: Any, std: Any, input_shape: tuple[int, ...] | None = None
) -> Layers:
    """Fold an input normalisation ``(x - mean) / std`` into the first layer.

    ``mean``/``std`` are scalars, flat per-feature arrays, or arrays broadcastable to
    ``input_shape`` (e.g. per-channel ``(C, 1, 1)`` for ``(C, H, W)`` inputs).  The result
    applied to raw ``x`` equals ``layers`` applied to the normalised input.  Inputs are
    not modified.
    """
    W1, b1 = (np.asarray(a, dtype=np.float64) for a in layers[0])
    d = W1.shape[1]
    shape = input_shape if input_shape is not None else (d,)

    def as_flat(v: Any, name: str) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float64)
        if arr.size == d and arr.ndim > 0:
            return arr.ravel()
        flat = broadcast_flat(arr, shape, 0.0, name)
        if flat.size != d:
            raise ValueError(f"{name} does not match the {d} input features")
        return flat

    m, s = as_flat(mean, "mean"), as_flat(std, "std")
    if not np.all(np.isfinite(s) & (s != 0)):
        raise ValueError("std must be finite and non-zero")
    W_new = W1 / s[None, :]
    b_new = b1.ravel() - W_new @ m
    rest = [(np.array(W, dtype=np.float64), np.array(b, dtype=np.float64)) for W, b in layers[1:]]
    return [(W_new, b_new), *rest]


def forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    """Float64 logits of the ReLU net on one flat input."""
    h = np.asarray(x, dtype=np.float64).ravel()
    for i, (W, b) in enumerate(layers):
        h = W @ h + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h
