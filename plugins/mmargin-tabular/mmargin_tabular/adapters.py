"""The scikit-learn adapter: estimators and pipelines as mmargin models.

Scores are per-class **log-probabilities** (``log predict_proba``; ``scores = "proba"``, the
default) or the raw ``decision_function`` (``scores = "decision"``; a binary model's score
``f`` becomes the two columns ``[-f, f]``, so arg-max is sklearn's ``predict``). Either way
the softmax of the scores is what a threshold goal thresholds (``goal.scores = "proba"``)
or the second column is the raw score (``goal.scores = "raw"``).

Models that are smooth and small enough to re-implement — linear classifiers
(``LogisticRegression``, ``SGDClassifier(loss="log_loss")``, ``LinearSVC`` ... for their
decision function) and ``MLPClassifier``, optionally behind affine scalers in a
``Pipeline`` — run as an equivalent float64 torch module, so the gradient strategy and
the exact solvers apply (:func:`extract_net`). Everything else (tree ensembles, SVMs,
custom pipelines) is a black box: the engine uses the decision-based strategy.

**Raw DataFrames.** An estimator trained on a pandas DataFrame of a schema's *raw*
columns (``feature_names_in_`` are the schema's feature names: a ``Pipeline`` with a
``ColumnTransformer`` that one-hot encodes and scales them, a gradient-boosting model on
numeric + ``category`` columns) is fed DataFrames decoded from the engine's encoded rows
(:func:`mmargin_tabular.frames.to_frame`). The adapter learns the schema from its
``schema`` option or from the ``tabular`` space of the run (:meth:`SklearnAdapter.bind_space`).
When the preprocessing is affine in the encoding (:func:`~mmargin_tabular.frames.affine_map`),
a linear model or MLP behind it still gets its torch twin and exact margins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

_ACTIVATIONS = ("relu", "tanh", "logistic", "identity")
_LOG_FLOOR = 1e-30  # probabilities are floored here before the log (trees give exact 0)


@dataclass
class NetSpec:
    """A re-implementable estimator: ``x * scale + offset`` (optional), then affine layers
    ``(W (out, in), b)`` with ``activation`` between them, then a ``head``: ``logit``
    (one output z, P(class 1) = sigmoid z), ``softmax``, ``ovr`` (normalised sigmoids)
    or ``decision`` (raw scores)."""

    layers: list[tuple[np.ndarray, np.ndarray]]
    activation: str = "identity"
    head: str = "logit"
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    pre: tuple[np.ndarray, np.ndarray] | None = None

    def folded(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The layers with the input scaling (and ``pre``, an affine map ``x @ A.T + c``
        applied before it, e.g. a one-hot encoder on a schema's encoding) folded into the
        first one (float64 copies)."""
        layers = [(np.array(w, dtype=np.float64), np.array(b, dtype=np.float64))
                  for w, b in self.layers]  # fmt: skip
        if self.scale is not None:
            w, b = layers[0]
            offset = self.offset if self.offset is not None else 0.0
            layers[0] = (w * self.scale[None, :], b + w @ np.broadcast_to(offset, w.shape[1]))
        if self.pre is not None:
            w, b = layers[0]
            a, c = self.pre
            layers[0] = (w @ a, b + w @ c)
        return layers


def _scaler(step: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, offset)`` of an affine preprocessing step, or ``None``."""
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    n = int(step.n_features_in_)
    if type(step) is StandardScaler:
        s = 1.0 / step.scale_ if step.scale_ is not None else np.ones(n)
        m = step.mean_ if step.mean_ is not None else np.zeros(n)
        return s, -m * s
    if type(step) is MinMaxScaler and not step.clip:
        return step.scale_.copy(), step.min_.copy()
    if type(step) is MaxAbsScaler:
        return 1.0 / step.scale_, np.zeros(n)
    if type(step) is RobustScaler:
        s = 1.0 / step.scale_ if step.scale_ is not None else np.ones(n)
        c = step.center_ if step.center_ is not None else np.zeros(n)
        return s, -c * s
    return None


def extract_net(estimator: Any, scores: str = "proba") -> NetSpec | None:
    """The :class:`NetSpec` of a re-implementable estimator / pipeline, else ``None``."""
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.linear_model._base import LinearClassifierMixin
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline

    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    final = estimator
    if isinstance(estimator, Pipeline):
        for _, step in estimator.steps[:-1]:
            if step is None or step == "passthrough":
                continue
            affine = _scaler(step)
            if affine is None:
                return None
            s, o = affine
            scale, offset = (s, o) if scale is None else (scale * s, offset * s + o)
        final = estimator.steps[-1][1]
    if not hasattr(final, "classes_"):
        return None
    binary = len(final.classes_) == 2
    if isinstance(final, MLPClassifier):
        if final.activation not in _ACTIVATIONS or scores != "proba":
            return None
        if final.out_activation_ == "logistic" and final.n_outputs_ != 1:
            return None  # multi-label
        layers = [(w.T.copy(), b.copy()) for w, b in zip(final.coefs_, final.intercepts_,
                                                         strict=True)]  # fmt: skip
        head = "logit" if final.out_activation_ == "logistic" else "softmax"
        return NetSpec(layers, final.activation, head, scale, offset)
    if not isinstance(final, LinearClassifierMixin) or not hasattr(final, "coef_"):
        return None
    coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
    intercept = np.broadcast_to(np.asarray(final.intercept_, dtype=np.float64), coef.shape[0])
    layers = [(coef.copy(), intercept.copy())]
    if scores == "decision":
        head = "decision"
    elif isinstance(final, LogisticRegression):
        head = "logit" if binary else "softmax"
    elif isinstance(final, SGDClassifier) and final.loss == "log_loss":
        head = "logit" if binary else "ovr"
    else:
        return None
    return NetSpec(layers, "identity", head, scale, offset)


class TorchNet(nn.Module):
    """The float64 torch twin of a :class:`NetSpec`: per-class log-probabilities, or raw
    decision scores for ``head = "decision"`` (binary: ``[-f, f]``)."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        self.linears = nn.ModuleList()
        for w, b in spec.folded():
            layer = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
            with torch.no_grad():
                layer.weight.copy_(torch.as_tensor(w))
                layer.bias.copy_(torch.as_tensor(b))
            layer.requires_grad_(False)
            self.linears.append(layer)

    def forward(self, x: Tensor) -> Tensor:
        h = x.to(torch.float64)
        act = self.spec.activation
        for i, layer in enumerate(self.linears):
            h = layer(h)
            if i < len(self.linears) - 1:
                if act == "relu":
                    h = torch.relu(h)
                elif act == "tanh":
                    h = torch.tanh(h)
                elif act == "logistic":
                    h = torch.sigmoid(h)
        head = self.spec.head
        if head == "decision":
            return torch.cat([-h, h], dim=1) if h.shape[1] == 1 else h
        if head == "logit":
            h = torch.cat([torch.zeros_like(h), h], dim=1)
        if head == "ovr":
            logs = torch.nn.functional.logsigmoid(h)
            return logs - torch.logsumexp(logs, dim=1, keepdim=True)
        return torch.log_softmax(h, dim=1)


@dataclass
class SklearnAdapter:
    """A fitted scikit-learn classifier (or pipeline) as an mmargin model adapter.

    ``gradients = "auto"`` uses the torch twin where :func:`extract_net` finds one
    (``differentiable`` is then true); ``"never"`` keeps the estimator a black box.
    """

    estimator: Any
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    scores: str = "proba"
    gradients: str = "auto"
    schema: Any = None
    differentiable: bool = field(default=False, init=False)
    net: NetSpec | None = field(default=None, init=False)
    module: TorchNet | None = field(default=None, init=False, repr=False)
    raw: Any = field(default=None, init=False, repr=False)
    cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        name = type(self.estimator).__name__
        if self.scores not in ("proba", "decision"):
            raise ValueError(f"scores must be 'proba' or 'decision', got {self.scores!r}")
        if self.gradients not in ("auto", "never"):
            raise ValueError(f"gradients must be 'auto' or 'never', got {self.gradients!r}")
        if not hasattr(self.estimator, "classes_"):
            raise ValueError(f"{name} is not a fitted classifier (no classes_)")
        method = "predict_proba" if self.scores == "proba" else "decision_function"
        if not hasattr(self.estimator, method):
            hint = (" Use adapter option scores = 'decision' (and goal.scores = 'raw' to "
                    "threshold its decision_function)." if hasattr(self.estimator,
                    "decision_function") else "")  # fmt: skip
            raise ValueError(f"{name} has no {method}.{hint}")
        self._setup(extract_net(self.estimator, self.scores))
        if self.schema is not None:
            from mmargin_tabular.schema import load_schema

            self.schema = load_schema(self.schema)
            self._bind(self.schema)

    def _setup(self, net: NetSpec | None) -> None:
        self.net, self.module, self.differentiable = net, None, False
        self.cache.clear()
        if net is not None and self.gradients == "auto":
            self.module = TorchNet(net).to(self.device)
            self.differentiable = True

    def bind_space(self, space: Any) -> None:
        """Learn the run's schema from its ``tabular`` space (unless given as an option),
        so an estimator trained on raw DataFrame columns is fed decoded DataFrames."""
        schema = getattr(space, "schema", None)
        if self.schema is None and schema is not None and hasattr(schema, "n_columns"):
            self.schema = schema
            self._bind(schema)

    def _bind(self, schema: Any) -> None:
        """Switch to raw-DataFrame mode when the estimator's input names are the schema's
        feature names (see the module docs)."""
        from mmargin_tabular.frames import affine_map

        names = getattr(self.estimator, "feature_names_in_", None)
        raw_names = [f.name for f in schema.features]
        if names is None or [str(n) for n in names] == schema.columns:
            return  # trained on the encoding itself (or on plain arrays)
        names = [str(n) for n in names]
        unknown = [n for n in names if n not in raw_names]
        if unknown:
            raise ValueError(
                f"{type(self.estimator).__name__} expects {len(names)} features named "
                f"{names}; schema {schema.name!r} has no column(s) {unknown} (its features "
                f"are {raw_names})"
            )
        self.raw = RawInput(schema, names)
        from sklearn.pipeline import Pipeline

        if isinstance(self.estimator, Pipeline) and len(self.estimator.steps) > 1:
            prefix, final = self.estimator[:-1], self.estimator.steps[-1][1]
            pre = affine_map(prefix.transform, schema, names)
        else:
            final, pre = self.estimator, affine_map(_as_array, schema, names)
        net = extract_net(final, self.scores) if pre is not None else None
        if net is not None:
            if net.scale is not None or net.pre is not None:
                net = None  # a final step that is itself a pipeline: keep it a black box
            else:
                net.pre = pre
        self.raw.pre = pre
        self.raw.final = final
        self._setup(net)

    @property
    def n_features(self) -> int | None:
        """How many input columns the adapter expects (when it knows)."""
        if self.raw is not None:
            return int(self.raw.schema.n_columns)
        n = getattr(self.estimator, "n_features_in_", None)
        return int(n) if n is not None else None

    def __call__(self, x: Tensor) -> Tensor:
        n = self.n_features
        if n is not None and x.shape[1] != n:
            names = getattr(self.estimator, "feature_names_in_", None)
            hint = ""
            if names is not None and self.raw is None:
                hint = (f" (a DataFrame with columns {[str(c) for c in names]}); give the "
                        "adapter the feature schema of those raw columns (adapter option "
                        "schema, or the run's tabular space) to feed it DataFrames")  # fmt: skip
            raise ValueError(
                f"{type(self.estimator).__name__} expects {n} features{hint}, got {x.shape[1]}"
            )
        if self.module is not None:
            return self.module(x.to(self.device)).to(x.dtype)
        return torch.as_tensor(self.numpy_scores(x.detach().cpu().numpy()),
                               dtype=x.dtype, device=x.device)  # fmt: skip

    def numpy_scores(self, x: np.ndarray) -> np.ndarray:
        """The scores of the estimator itself (float64), whatever the adapter runs."""
        arr: Any = np.asarray(x, dtype=np.float64)
        names = getattr(self.estimator, "feature_names_in_", None)
        if self.raw is not None:
            from mmargin_tabular.frames import to_frame

            arr = to_frame(self.raw.schema, arr, self.raw.names)
        elif names is not None:
            import pandas as pd

            arr = pd.DataFrame(arr, columns=list(names))
        if self.scores == "proba":
            proba = np.asarray(self.estimator.predict_proba(arr), dtype=np.float64)
            return np.log(np.clip(proba, _LOG_FLOOR, 1.0))
        d = np.asarray(self.estimator.decision_function(arr), dtype=np.float64)
        return np.stack([-d, d], axis=1) if d.ndim == 1 else d


@dataclass
class RawInput:
    """How an adapter feeds raw DataFrames: the schema, the estimator's column order, and
    (when the preprocessing is affine in the encoding) its map ``(A, c)`` and final step."""

    schema: Any
    names: list[str]
    pre: tuple[np.ndarray, np.ndarray] | None = None
    final: Any = None


def _as_array(frame: Any) -> np.ndarray:
    """A DataFrame's values as floats (an estimator fit on raw numeric columns sees them)."""
    return np.asarray(frame.to_numpy(dtype=np.float64))


def is_sklearn_model(model: Any) -> bool:
    """True for scikit-learn estimators (and anything duck-typed like one)."""
    module = type(model).__module__
    has_api = hasattr(model, "classes_") and (
        hasattr(model, "predict_proba") or hasattr(model, "decision_function")
    )
    return module.startswith("sklearn.") or (has_api and hasattr(model, "fit"))
