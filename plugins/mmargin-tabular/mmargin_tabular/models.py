"""The built-in fraud models, trained deterministically on first use and cached in-process.

Nothing is unpickled: a model is rebuilt from the synthetic training split (seed 0,
10000 rows) with fixed seeds every time a process first asks for it (a few seconds),
and ``manifest.json`` records what the training script produced (accuracy, AUC and a
fingerprint of the test-set probabilities) so a changed library version that trains a
different model is noticed (``python -m mmargin_tabular.train --check``).

Task files name these factories, e.g. ``factory = "fraud_gbm"`` (registered
by the plugin).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from mmargin_tabular.data import fraud_split


@functools.cache
def _train_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = fraud_split("train", seed=seed)
    return x.astype(np.float64), y


@functools.cache
def fraud_logreg(seed: int = 0) -> Any:
    """``StandardScaler`` + ``LogisticRegression`` (C = 1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _train_data(seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    return model.fit(x, y)


@functools.cache
def fraud_gbm(seed: int = 0, n_estimators: int = 60, max_depth: int = 3) -> Any:
    """``GradientBoostingClassifier`` (60 trees of depth 3, learning rate 0.1)."""
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _train_data(seed)
    model = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                       learning_rate=0.1, random_state=seed)  # fmt: skip
    return model.fit(x, y)


@functools.cache
def fraud_forest(seed: int = 0, n_estimators: int = 40, max_depth: int = 6) -> Any:
    """``RandomForestClassifier`` (40 trees of depth at most 6, one job)."""
    from sklearn.ensemble import RandomForestClassifier

    x, y = _train_data(seed)
    model = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                   random_state=seed, n_jobs=1)  # fmt: skip
    return model.fit(x, y)


@functools.cache
def fraud_mlp(seed: int = 0, hidden: int = 16) -> Any:
    """``StandardScaler`` + ``MLPClassifier`` (one ReLU layer of 16 units, Adam, L2 1e-3)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _train_data(seed)
    mlp = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1e-3, max_iter=300,
                        random_state=seed, early_stopping=False)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(StandardScaler(), mlp).fit(x, y)


def fraud_torch_mlp(seed: int = 0, hidden: int = 16, epochs: int = 40) -> Any:
    """A torch ``Linear-ReLU-Linear`` MLP on raw features (standardisation folded into the
    first layer, so the core's exact ReLU MILP recognises it). A fresh copy per call."""
    import torch
    from torch import nn

    state = _torch_state(seed, hidden, epochs)
    first, last = nn.Linear(state["w1"].shape[1], hidden), nn.Linear(hidden, 2)
    with torch.no_grad():
        first.weight.copy_(state["w1"])
        first.bias.copy_(state["b1"])
        last.weight.copy_(state["w2"])
        last.bias.copy_(state["b2"])
    return nn.Sequential(first, nn.ReLU(), last).eval()


@functools.cache
def _torch_state(seed: int, hidden: int, epochs: int) -> dict[str, Any]:
    import torch
    from torch import nn

    x, y = _train_data(seed)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    xt = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    first, last = nn.Linear(x.shape[1], hidden), nn.Linear(hidden, 2)
    net = nn.Sequential(first, nn.ReLU(), last)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for start in range(0, len(yt), 256):
            idx = order[start : start + 256]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    w1 = first.weight.detach().double()
    scale = torch.as_tensor(1.0 / std)
    return {
        "w1": (w1 * scale).float(),
        "b1": (first.bias.detach().double() - w1 @ torch.as_tensor(mean / std)).float(),
        "w2": last.weight.detach().clone(),
        "b2": last.bias.detach().clone(),
    }


@functools.cache
def _train_frame(seed: int = 0) -> tuple[Any, np.ndarray]:
    """The training split as a raw DataFrame (the fraud schema's columns and dtypes)."""
    from mmargin_tabular.frames import to_frame
    from mmargin_tabular.schema import load_schema

    x, y = _train_data(seed)
    frame = to_frame(load_schema("fraud"), x)
    for f in load_schema("fraud").features:
        if f.type == "categorical":  # what a user's CSV gives: plain strings
            frame[f.name] = frame[f.name].astype(str)
    return frame, y


def _column_transformer() -> Any:
    """``OneHotEncoder`` on the categorical columns, ``StandardScaler`` on the numeric ones
    (the fraud team's usual preprocessing, fit on raw columns by name)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from mmargin_tabular.schema import load_schema

    schema = load_schema("fraud")
    categorical = [f.name for f in schema.features if f.type == "categorical"]
    numeric = [f.name for f in schema.features if f.type != "categorical"]
    return ColumnTransformer([
        ("categories", OneHotEncoder(handle_unknown="ignore"), categorical),
        ("numbers", StandardScaler(), numeric),
    ])  # fmt: skip


@functools.cache
def fraud_pipeline_logreg(seed: int = 0) -> Any:
    """``Pipeline(ColumnTransformer(OneHotEncoder, StandardScaler), LogisticRegression)``
    trained on the raw DataFrame (string categories), as a fraud team would."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    frame, y = _train_frame(seed)
    steps = [("prep", _column_transformer()), ("model", LogisticRegression(max_iter=2000))]
    return Pipeline(steps).fit(frame, y)


@functools.cache
def fraud_pipeline_hgb(seed: int = 0, max_iter: int = 60, max_depth: int = 3) -> Any:
    """The same preprocessing + ``HistGradientBoostingClassifier`` (60 trees, depth 3)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    frame, y = _train_frame(seed)
    model = HistGradientBoostingClassifier(max_iter=max_iter, max_depth=max_depth,
                                           learning_rate=0.1, random_state=seed,
                                           early_stopping=False)  # fmt: skip
    return Pipeline([("prep", _column_transformer()), ("model", model)]).fit(frame, y)


FACTORIES: dict[str, Callable[..., Any]] = {
    "logreg": fraud_logreg,
    "gbm": fraud_gbm,
    "forest": fraud_forest,
    "mlp": fraud_mlp,
    "torch_mlp": fraud_torch_mlp,
    "pipeline_logreg": fraud_pipeline_logreg,
    "pipeline_hgb": fraud_pipeline_hgb,
}
