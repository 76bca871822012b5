"""What the core's exact solvers need to know from the tabular plugin — and nothing else.

The core (:mod:`mmargin.exact`) builds and solves every exact problem; this module only
describes, through two hooks:

- the **schema** of a row (:func:`schema_constraints`, hook ``mmargin_exact_constraints``):
  bounds with the allowed directions folded in, immutable features, integer and binary
  features, one-hot blocks and their switching costs, and the distance's per-column costs;
- the **parameters** of the scikit-learn models a fraud team deploys (:func:`sklearn_model`,
  hook ``mmargin_exact_model``): tree ensembles (random forest, extra trees, decision
  tree, gradient boosting, histogram gradient boosting, and XGBoost / LightGBM read from
  their own dumps by :mod:`mmargin_tabular.boosters`) as a
  :class:`~mmargin.exact.trees.TreeEnsemble`, behind a preprocessing step that reads one
  encoded column per model input (one-hot encoders and scalers on raw columns); linear
  classifiers and ReLU ``MLPClassifier`` s (behind affine scalers) as affine layers, each
  with the head that says how the adapter's scores derive from the outputs.

What the core then guarantees (``ExactMargin.optimal``): tree ensembles exact for L0, L1,
L2 and L∞; linear models and ReLU MLPs exact under L1 and L∞ with integer and categorical
features integral; linear models under L2 exact unless a discrete feature may change (the
QP's point is then a relaxation: ``-relaxed``, a lower bound). Binary decisions are moved
past the boundary by ``LIMITS.safety`` so the engine's float32 re-check agrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmargin.exact.problem import ExactModel, FeatureConstraints, feature_constraints
from mmargin.exact.trees import Tree, TreeEnsemble


# -- the schema ----------------------------------------------------------------------------
def schema_constraints(space: Any, distance: Any, x: np.ndarray) -> FeatureConstraints | None:
    """The constraints of one row of a :class:`~mmargin_tabular.space.TabularSpace` under an
    Lp (schema-weighted) distance, or ``None`` for other spaces and distances."""
    from mmargin.plugin import LpDistance
    from mmargin_tabular.space import TabularSpace

    if not (isinstance(space, TabularSpace) and isinstance(distance, LpDistance)):
        return None
    assert space.schema is not None
    xf = np.asarray(x, dtype=np.float64).ravel()
    lo, hi, free = space.sample_box(xf)
    w = np.ones(xf.size) if distance.weights is None else \
        distance.weights.double().cpu().numpy().ravel()  # fmt: skip
    groups = space.schema.groups
    return feature_constraints(xf, distance.p, lower=lo, upper=hi, free=free,
                               integer=space.schema.integer, weights=w, groups=groups,
                               group_costs=[_switch_cost(distance, xf.size, g) for g in groups],
                               name="schema")  # fmt: skip


def _switch_cost(distance: Any, d: int, cols: np.ndarray) -> float:
    """The distance of a category switch (one column 1 → 0, another 0 → 1)."""
    import torch

    delta = torch.zeros(1, d)
    delta[0, int(cols[0])], delta[0, int(cols[1])] = -1.0, 1.0
    return float(distance.norm(delta)[0])


# -- the models ----------------------------------------------------------------------------
def sklearn_model(adapter: Any) -> ExactModel | None:
    """The :class:`ExactModel` of a :class:`~mmargin_tabular.adapters.SklearnAdapter`'s
    estimator (cached on the adapter), or ``None`` when the core has no exact method."""
    from mmargin_tabular.adapters import SklearnAdapter

    if not isinstance(adapter, SklearnAdapter):
        return None
    if "ensemble" not in adapter.cache:
        adapter.cache["ensemble"] = _ensemble(adapter)
    ens = adapter.cache["ensemble"]
    if ens is not None:
        if ens.kind == "forest":
            return ExactModel("proba", ensemble=ens) if adapter.scores == "proba" else None
        if adapter.scores == "decision":
            return ExactModel("decision", ensemble=ens)
        return ExactModel("logit" if ens.n_outputs == 1 else "softmax", ensemble=ens)
    net = adapter.net
    if net is None or (len(net.layers) > 1 and net.activation != "relu"):
        return None
    return ExactModel(net.head, layers=net.folded(), info={"source": "sklearn"})


def _ensemble(adapter: Any) -> TreeEnsemble | None:
    """The tree ensemble of an adapter's estimator over the engine's encoded rows: read
    directly, or through an affine one-column-per-input preprocessing (a pipeline on raw
    DataFrame columns); ``None`` when the model is no tree ensemble the core handles."""
    from mmargin_tabular.boosters import read_booster, through_columns

    raw = adapter.raw
    if raw is None:
        return ensemble_from_sklearn(adapter.estimator) or read_booster(adapter.estimator)
    if raw.pre is None:
        return None
    ens = ensemble_from_sklearn(raw.final) or read_booster(raw.final)
    return None if ens is None else through_columns(ens, *raw.pre)


def ensemble_from_sklearn(est: Any) -> TreeEnsemble | None:
    """A :class:`TreeEnsemble` equal to a fitted scikit-learn tree classifier, or ``None``."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        RandomForestClassifier,  # fmt: skip
    )
    from sklearn.tree import DecisionTreeClassifier

    if isinstance(est, GradientBoostingClassifier):
        stages = est.estimators_
        k = stages.shape[1]
        trees = []
        for stage in stages:
            for out, reg in enumerate(stage):
                t = reg.tree_
                value = np.zeros((t.node_count, k))
                value[:, out] = t.value[:, 0, 0]
                trees.append(_tree(t, value))
        ens = TreeEnsemble(tuple(trees), int(est.n_features_in_), np.zeros(k),
                           float(est.learning_rate), "gb")  # fmt: skip
        x0 = np.zeros((1, ens.n_features))
        raw = np.atleast_1d(np.asarray(est.decision_function(x0), dtype=np.float64)[0])
        base = raw - ens.scores(x0)[0]
        return TreeEnsemble(ens.trees, ens.n_features, base, ens.scale, "gb")
    if isinstance(est, (RandomForestClassifier, ExtraTreesClassifier, DecisionTreeClassifier)):
        members = [est] if isinstance(est, DecisionTreeClassifier) else list(est.estimators_)
        if getattr(est, "n_outputs_", 1) != 1:
            return None
        trees = []
        for m in members:
            t = m.tree_
            v = t.value[:, 0, :].astype(np.float64)
            trees.append(_tree(t, v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300)))
        k = len(est.classes_)
        return TreeEnsemble(tuple(trees), int(est.n_features_in_), np.zeros(k),
                            1.0 / len(members), "forest")  # fmt: skip
    return None


def _tree(t: Any, value: np.ndarray) -> Tree:
    feature = np.where(t.children_left < 0, -1, t.feature).astype(np.int64)
    return Tree(feature, t.threshold.astype(np.float64), t.children_left.astype(np.int64),
                t.children_right.astype(np.int64), value)  # fmt: skip
