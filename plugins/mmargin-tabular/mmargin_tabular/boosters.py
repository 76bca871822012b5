"""Gradient-boosted tree ensembles read from their own model dumps, for the exact core.

Each reader returns a :class:`~mmargin.exact.trees.TreeEnsemble` over the model's *own*
input columns whose ``scores`` equal the model's raw margin (``decision_function``,
``output_margin``, ``raw_score``), or ``None`` when the model uses something the core's
tree MILP does not model (categorical bitset splits, zero-as-missing):

- scikit-learn ``HistGradientBoostingClassifier``: the fitted predictors' node arrays
  (``x <= num_threshold`` goes left);
- XGBoost (``XGBClassifier`` or a ``Booster``): ``get_dump(dump_format="json")``
  (``x < split_condition`` goes "yes", compared in float32, so the threshold becomes the
  largest float32 below it);
- LightGBM (``LGBMClassifier`` or a ``Booster``): ``dump_model()``
  (``x <= threshold`` goes left).

The initial score is read off the model itself (its margin at the origin minus the trees'
sum there), so base scores, ``boost_from_average`` and learning rates need no decoding.
:func:`through_columns` then re-expresses an ensemble over a preprocessing step that maps
each of its inputs from one encoded column (one-hot encoders, scalers).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mmargin.exact.trees import Tree, TreeEnsemble


def read_booster(est: Any) -> TreeEnsemble | None:
    """The ensemble of a HistGradientBoosting, XGBoost or LightGBM classifier, else ``None``."""
    module = type(est).__module__
    if module.startswith("xgboost"):
        return _xgboost(est)
    if module.startswith("lightgbm"):
        return _lightgbm(est)
    from sklearn.ensemble import HistGradientBoostingClassifier

    if isinstance(est, HistGradientBoostingClassifier):
        return _hist_gb(est)
    return None


def _with_base(trees: list[Tree], k: int, n: int, margin_at_zero: np.ndarray,
               kind: str) -> TreeEnsemble:  # fmt: skip
    ens = TreeEnsemble(tuple(trees), n, np.zeros(k), 1.0, "gb", {"source": kind})
    base = np.atleast_1d(margin_at_zero).astype(np.float64) - ens.scores(np.zeros((1, n)))[0]
    return TreeEnsemble(ens.trees, n, base, 1.0, "gb", {"source": kind})


def _leaf_values(values: np.ndarray, out: int, k: int) -> np.ndarray:
    v = np.zeros((len(values), k))
    v[:, out] = values
    return v


def _hist_gb(est: Any) -> TreeEnsemble | None:
    k = int(est.n_trees_per_iteration_)
    n = int(est.n_features_in_)
    trees = []
    for stage in est._predictors:
        for out, predictor in enumerate(stage):
            nodes = predictor.nodes
            if bool(np.any(nodes["is_categorical"] & ~nodes["is_leaf"].astype(bool))):
                return None  # native categorical (bitset) splits
            leaf = nodes["is_leaf"].astype(bool)
            trees.append(Tree(
                np.where(leaf, -1, nodes["feature_idx"]).astype(np.int64),
                np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64),
                np.where(leaf, -1, nodes["left"]).astype(np.int64),
                np.where(leaf, -1, nodes["right"]).astype(np.int64),
                _leaf_values(nodes["value"].astype(np.float64), out, k),
            ))  # fmt: skip
    margin = np.asarray(est._raw_predict(np.zeros((1, n))), dtype=np.float64)[0]
    return _with_base(trees, k, n, margin, "sklearn-hist-gb")


def _xgboost(est: Any) -> TreeEnsemble | None:
    import xgboost as xgb

    booster = est.get_booster() if hasattr(est, "get_booster") else est
    config = json.loads(booster.save_config())
    objective = config["learner"]["objective"]["name"]
    if objective not in ("binary:logistic", "binary:logitraw", "multi:softprob",
                         "multi:softmax"):  # fmt: skip
        return None
    k = int(config["learner"]["learner_model_param"].get("num_class", "0") or 0)
    k = max(k, 1)
    n = int(booster.num_features())
    names = booster.feature_names or [f"f{i}" for i in range(n)]
    index = {name: i for i, name in enumerate(names)}
    trees = []
    for t, text in enumerate(booster.get_dump(dump_format="json")):
        tree = _xgb_tree(json.loads(text), index, t % k, k)
        if tree is None:
            return None
        trees.append(tree)
    margin = booster.predict(xgb.DMatrix(np.zeros((1, n)), feature_names=booster.feature_names),
                             output_margin=True)  # fmt: skip
    return _with_base(trees, k, n, np.asarray(margin, dtype=np.float64).reshape(-1), "xgboost")


class _Nodes:
    """A tree being read node by node (depth-first) from a JSON dump."""

    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.value: list[float] = []

    def add(self, value: float = 0.0) -> int:
        """A new node (a leaf with ``value`` until :meth:`split` makes it a split)."""
        self.feature.append(-1)
        self.threshold.append(0.0)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(value)
        return len(self.feature) - 1

    def split(self, node: int, feature: int, threshold: float, left: int, right: int) -> None:
        """Make ``node`` the split ``x[feature] <= threshold`` → ``left``, else ``right``."""
        self.feature[node], self.threshold[node] = feature, threshold
        self.left[node], self.right[node] = left, right

    def tree(self, out: int, k: int) -> Tree:
        """The :class:`Tree`, leaf values in output column ``out`` of ``k``."""
        return Tree(np.array(self.feature, dtype=np.int64), np.array(self.threshold),
                    np.array(self.left, dtype=np.int64), np.array(self.right, dtype=np.int64),
                    _leaf_values(np.array(self.value), out, k))  # fmt: skip


def _xgb_tree(root: dict[str, Any], index: dict[str, int], out: int, k: int) -> Tree | None:
    """One XGBoost JSON tree as a :class:`Tree` (node ids renumbered depth-first)."""
    nodes = _Nodes()

    def visit(node: dict[str, Any]) -> int | None:
        if "leaf" in node:
            return nodes.add(float(node["leaf"]))
        if "split_condition" not in node or node["split"] not in index:
            return None  # an indicator or categorical split
        me = nodes.add()
        children = {int(c["nodeid"]): c for c in node["children"]}
        yes, no = visit(children[int(node["yes"])]), visit(children[int(node["no"])])
        if yes is None or no is None:
            return None
        s = np.float32(node["split_condition"])
        below = float(np.nextafter(s, np.float32(-np.inf)))  # x < s  <=>  x <= prev(s)
        nodes.split(me, index[node["split"]], below, yes, no)
        return me

    return None if visit(root) is None else nodes.tree(out, k)


def _lightgbm(est: Any) -> TreeEnsemble | None:
    booster = est.booster_ if hasattr(est, "booster_") else est
    dump = booster.dump_model()
    k = int(dump.get("num_tree_per_iteration", 1))
    n = int(dump["max_feature_idx"]) + 1
    trees = []
    for info in dump["tree_info"]:
        tree = _lgb_tree(info["tree_structure"], int(info["tree_index"]) % k, k)
        if tree is None:
            return None
        trees.append(tree)
    margin = np.asarray(booster.predict(np.zeros((1, n)), raw_score=True), dtype=np.float64)
    return _with_base(trees, k, n, margin.reshape(-1), "lightgbm")


def _lgb_tree(root: dict[str, Any], out: int, k: int) -> Tree | None:
    """One LightGBM JSON tree as a :class:`Tree`."""
    nodes = _Nodes()

    def visit(node: dict[str, Any]) -> int | None:
        if "split_feature" not in node:
            return nodes.add(float(node["leaf_value"]))
        if node.get("decision_type") != "<=" or node.get("missing_type") == "Zero":
            return None  # categorical split, or zeros treated as missing
        me = nodes.add()
        a, b = visit(node["left_child"]), visit(node["right_child"])
        if a is None or b is None:
            return None
        nodes.split(me, int(node["split_feature"]), float(node["threshold"]), a, b)
        return me

    return None if visit(root) is None else nodes.tree(out, k)


def through_columns(ens: TreeEnsemble, a: np.ndarray, c: np.ndarray) -> TreeEnsemble | None:
    """The ensemble over encoded rows ``x`` when its inputs are ``x @ a.T + c`` and each
    input reads one encoded column with a positive factor (else ``None``): a split
    ``a_j x_col + c_j <= θ`` becomes ``x_col <= (θ - c_j) / a_j``."""
    from mmargin_tabular.frames import single_columns

    cols = single_columns(a)
    if cols is None or len(cols) != ens.n_features:
        return None
    factor = a[np.arange(len(cols)), cols]
    trees = []
    for t in ens.trees:
        split = t.feature >= 0
        j = np.where(split, t.feature, 0)
        trees.append(Tree(np.where(split, cols[j], -1).astype(np.int64),
                          np.where(split, (t.threshold - c[j]) / factor[j], 0.0),
                          t.left, t.right, t.value))  # fmt: skip
    return TreeEnsemble(tuple(trees), int(a.shape[1]), ens.base, ens.scale, ens.kind, ens.info)
