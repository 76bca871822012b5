"""The core's own plugin: Lp distances, the plain box space, torch and callable adapters,
a generic ``.npz`` loader, the ``toy_linear`` test model, and exact margins for linear
models and small ReLU networks.

It is registered through the ``mmargin`` entry point like any third-party plugin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.hookspecs import Register, hookimpl

MILP_MAX_HIDDEN = 256
"""ReLU networks with more hidden units than this are left to the search (MILP too slow)."""
MILP_TIME_LIMIT = 20.0
"""Seconds HiGHS may spend per sample; past it the best incumbent and its bound are kept."""


def _distance(name: str) -> Any:
    def factory(weights: Sequence[float] | None = None, units: str = "") -> Any:
        import torch

        from mmargin.distances import lp

        w = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        return lp(name, weights=w, units=units)

    factory.__name__ = f"{name}_distance"
    return factory


@hookimpl
def mmargin_register_distances(register: Register) -> None:
    register("l0", _distance("l0"), help="number of coordinates changed")
    register("l1", _distance("l1"), help="sum of absolute changes (optionally cost-weighted)")
    register("l2", _distance("l2"), help="Euclidean norm (optionally weighted)")
    register("linf", _distance("linf"), help="largest absolute change (optionally weighted)")


def box_space(
    lower: float | list[float] = -math.inf,
    upper: float | list[float] = math.inf,
    mask: list[float] | None = None,
    shape: list[int] | None = None,
) -> Any:
    """A box over plain feature vectors; bounds and mask broadcast to one sample."""
    from mmargin.spaces import box

    return box(
        np.asarray(lower, dtype=np.float64),
        np.asarray(upper, dtype=np.float64),
        mask=None if mask is None else np.asarray(mask, dtype=np.float64),
        sample_shape=shape,
    )


@hookimpl
def mmargin_register_spaces(register: Register) -> None:
    register("box", box_space, help="feature vectors inside per-feature bounds, optional mask")


def torch_adapter(
    model: Any,
    device: str = "cpu",
    mean: float | list[float] | None = None,
    std: float | list[float] | None = None,
) -> Any:
    """A torch module in eval mode on ``device``, normalising inputs with mean/std."""
    import torch

    from mmargin.adapters import TorchAdapter

    return TorchAdapter(model, device=torch.device(device), mean=mean, std=std)


def callable_adapter(model: Any, device: str = "cpu") -> Any:
    """A black-box ``f(numpy batch) -> scores`` (no gradients)."""
    import torch

    from mmargin.adapters import CallableAdapter

    return CallableAdapter(model, device=torch.device(device))


@hookimpl
def mmargin_register_adapters(register: Register) -> None:
    register("torch", torch_adapter, help="torch.nn.Module, optional mean/std normalisation")
    register("callable", callable_adapter, help="black-box function: numpy batch -> scores")


@hookimpl
def mmargin_adapt_model(model: Any, device: str, options: dict[str, Any]) -> Any:
    if type(model).__module__.startswith("mmargin.adapters"):
        return model
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return None
    if isinstance(model, torch.nn.Module):
        return torch_adapter(model, device=device, **options)
    if callable(model) and not hasattr(model, "predict_proba"):
        return callable_adapter(model, device=device)
    return None


def load_npz(path: str, limit: int | None = None) -> Any:
    """Feature vectors from an ``.npz`` holding arrays ``x`` and ``y`` (no pickles)."""
    from mmargin.data import Dataset

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {file}")
    with np.load(file, allow_pickle=False) as data:
        missing = {"x", "y"} - set(data.files)
        if missing:
            raise ValueError(f"{file.name}: missing arrays {sorted(missing)}; found {data.files}")
        x = np.asarray(data["x"], dtype=np.float32)
        y = np.asarray(data["y"])
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{file.name}: labels y must be integers, got {y.dtype}")
    ids = [f"{file.stem}-{i}" for i in range(len(y))]
    dataset = Dataset(x, y.astype(np.int64), ids, {"source": str(file)})
    return dataset.head(limit) if limit is not None else dataset


@hookimpl
def mmargin_register_datasets(register: Register) -> None:
    register("npz", load_npz, help="arrays x (N, ...) and y (N,) from an .npz file")


def toy_linear_model() -> Any:
    """The fixed 4-feature, 3-class linear model of the core tests and examples."""
    from mmargin.testing import toy_linear

    return toy_linear()


@hookimpl
def mmargin_register_models(register: Register) -> None:
    register("toy_linear", toy_linear_model, help="fixed 4-feature, 3-class linear model (tests)")


@hookimpl
def mmargin_exact_margin(
    model: Any, space: Any, distance: Any, x: np.ndarray, label: int,
    target: int | None, upper_bound: float | None, goal: Any,
) -> Any:  # fmt: skip
    """Closed form for linear torch models; MILP for small ReLU MLPs under L1 / L∞
    (arg-max goals only: other decision rules are left to the plugins that model them)."""
    from mmargin.adapters import TorchAdapter
    from mmargin.distances import LpDistance
    from mmargin.goals import Targeted, Untargeted
    from mmargin.spaces import ContinuousSpace

    if not (isinstance(model, TorchAdapter) and isinstance(distance, LpDistance)
            and isinstance(space, ContinuousSpace)) or distance.p == 0:  # fmt: skip
        return None
    if goal is not None and not isinstance(goal, (Untargeted, Targeted)):
        return None
    from mmargin.exact.linear import linear_margin
    from mmargin.exact.milp import extract_relu_layers, fold_affine_input, relu_net_margin

    layers = extract_relu_layers(model.module)
    if layers is None:
        return None
    shape = x.shape
    if model.mean is not None or model.std is not None:
        layers = fold_affine_input(layers, _per_feature(model.mean, shape, 0.0),
                                   _per_feature(model.std, shape, 1.0))  # fmt: skip
    lower = np.broadcast_to(np.asarray(space.lower, dtype=np.float64), shape).ravel()
    upper = np.broadcast_to(np.asarray(space.upper, dtype=np.float64), shape).ravel()
    mask = None if space.mask is None else np.broadcast_to(space.mask, shape).ravel()
    weights = None if distance.weights is None else distance.weights.cpu().numpy().ravel()
    flat = x.astype(np.float64).ravel()
    if len(layers) == 1:
        w, b = layers[0]
        found = linear_margin(w, b, flat, label, distance.p, target=target, lower=lower,
                              upper=upper, mask=mask, weights=weights)  # fmt: skip
    elif distance.p in (1.0, math.inf) and weights is None:
        hidden = sum(w.shape[0] for w, _ in layers[:-1])
        if hidden > MILP_MAX_HIDDEN:
            return None
        found = relu_net_margin(layers, flat, label, distance.p, target=target, lower=lower,
                                upper=upper, mask=mask, upper_bound=upper_bound,
                                time_limit=MILP_TIME_LIMIT)  # fmt: skip
    else:
        return None
    if found.adversarial is not None:
        found = type(found)(**{**found.__dict__, "adversarial": found.adversarial.reshape(shape)})
    return found


def _per_feature(values: Any, shape: tuple[int, ...], default: float) -> np.ndarray:
    """Broadcast scalar or per-channel statistics to one flattened sample."""
    if values is None:
        return np.full(int(np.prod(shape)), default)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(shape) >= 2:
        arr = arr.reshape(-1, *([1] * (len(shape) - 1)))
    return np.broadcast_to(arr, shape).ravel()
