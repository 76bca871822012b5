"""The core's own plugin: Lp distances, the plain box space, torch and callable adapters,
a generic ``.npz`` loader, the ``toy_linear`` test model, and exact margins for linear
models and small ReLU networks.

It is registered through the ``mmargin`` entry point like any third-party plugin.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.hookspecs import Register, hookimpl


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
    register("l0", _distance("l0"), help="number of coordinates changed (images: pixels)")
    register("l0_channels", _distance("l0_channels"), help="L0 counting every coordinate "
             "(each channel of a pixel)")  # fmt: skip
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
    """The one exact hook: the method follows from what the model and the space describe.

    The constraints come from ``mmargin_exact_constraints`` (the space and the distance:
    box, mask, integer features, one-hot groups, costs), the model's parameters from
    ``mmargin_exact_model`` (ReLU layers, a linear model or a tree ensemble, whichever
    plugin knows the adapter); :func:`mmargin.exact.solve.exact_margin` picks the closed
    form / LP / QP, the ReLU MILP or the tree MILP, within :data:`mmargin.exact.limits.LIMITS`.
    """
    from mmargin import plugins
    from mmargin.exact.solve import exact_margin

    hook = plugins.manager().hook
    sample = np.asarray(x, dtype=np.float64)
    cons = hook.mmargin_exact_constraints(space=space, distance=distance, x=sample)
    if cons is None:
        return None
    from mmargin.engine.counting import CountingAdapter

    while isinstance(model, CountingAdapter):  # solvers read parameters: no pass to count
        model = model.model
    form = hook.mmargin_exact_model(model=model)
    if form is not None:
        from mmargin.exact.graph import UnsupportedModel

        try:
            form = form.for_input(sample.shape)
        except UnsupportedModel as e:
            note = f"no exact margin or certified lower bound for this model: it uses {e}"
            warnings.warn(f"{note}; the search runs without them", RuntimeWarning, stacklevel=2)
            form = None
    found = exact_margin(form, cons, label, target, upper_bound, goal)
    if found is None or found.adversarial is None:
        return found
    return replace(found, adversarial=np.asarray(found.adversarial).reshape(sample.shape))


@hookimpl
def mmargin_exact_model(model: Any) -> Any:
    """Torch modules, traced for the input shape (:mod:`mmargin.exact.graph`) with the
    adapter's normalisation in front: any ``nn.Module`` of supported operations."""
    from mmargin.adapters import TorchAdapter

    if not isinstance(model, TorchAdapter):
        return None
    from mmargin.exact.problem import ExactModel

    return ExactModel("logits", module=model.module, mean=model.mean, std=model.std,
                      info={"source": "torch", "device": str(model.device)})  # fmt: skip


@hookimpl(trylast=True)
def mmargin_exact_constraints(space: Any, distance: Any, x: np.ndarray) -> Any:
    """A continuous space whose constraint set is its box and mask, under an Lp distance
    (the fallback). A subclass that projects or finalises differently (a schema, a band
    limit) describes itself through this hook, or gets no exact margin."""
    from mmargin.distances import LpDistance
    from mmargin.exact.problem import feature_constraints
    from mmargin.spaces import ContinuousSpace

    if not (isinstance(space, ContinuousSpace) and isinstance(distance, LpDistance)):
        return None
    kind = type(space)
    if kind.project is not ContinuousSpace.project or kind.finalize is not ContinuousSpace.finalize:
        return None
    shape = np.shape(x)

    def flat(values: Any) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=np.float64), shape).ravel()

    mask = np.ones(shape) if space.mask is None else space.mask
    weights = 1.0 if distance.weights is None else distance.weights.cpu().numpy()
    return feature_constraints(x, distance.p, lower=flat(space.lower), upper=flat(space.upper),
                               free=flat(mask) > 0, weights=flat(weights),
                               name="box")  # fmt: skip


@hookimpl
def mmargin_write_artifacts(space: Any, out: Path, results: Sequence[Any], dataset: Any) -> None:
    """``inputs.npz``: the clean inputs of the flipped samples, for ``mmargin report``'s
    gallery (see :mod:`mmargin.report.inputs`); every modality with array inputs."""
    from mmargin.report.inputs import write_inputs

    write_inputs(out, results, dataset)
