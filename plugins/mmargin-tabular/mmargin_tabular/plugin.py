"""The tabular plugin's hook implementations.

Registered through the ``mmargin`` entry point (``tabular = "mmargin_tabular.plugin"``),
the same way a third-party plugin is. Everything heavy is imported inside the factories.

- space ``tabular``: a feature schema (built-in name, TOML path or inline table);
- distances ``tabular-l1`` (cost, the default), ``tabular-l2``, ``tabular-linf`` (scaled),
  ``tabular-l0`` (features changed), weights from the same schema;
- adapter ``sklearn`` (and automatic adaptation of fitted scikit-learn classifiers);
- datasets ``fraud`` (synthetic card transactions) and ``tabular-file`` (CSV / Parquet);
- for the core's exact margins: the schema's constraints and the parameters of tree
  ensembles, linear models and ReLU MLPs (the core builds and solves every problem).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmargin.plugin import Register, hookimpl
from mmargin_tabular.examples import mmargin_summary_examples  # noqa: F401 - its hook


def _space(schema: Any, reference: Any = None) -> Any:
    """Rows encoded by a feature schema; ``reference = "fraud"`` adds the synthetic
    training rows as starting points for the decision-based search."""
    from mmargin_tabular.space import tabular_space

    return tabular_space(schema, reference)


@hookimpl
def mmargin_register_spaces(register: Register) -> None:
    register("tabular", _space, help="rows under a feature schema (bounds, immutables, types)")


@hookimpl
def mmargin_register_distances(register: Register) -> None:
    from mmargin_tabular.distances import factory

    register("tabular-l1", factory("l1"), help="total cost of the change (schema costs)")
    register("tabular-l2", factory("l2"), help="cost-weighted Euclidean norm")
    register("tabular-linf", factory("linf"), help="largest change in standard deviations")
    register("tabular-l0", factory("l0"), help="number of features changed")


def sklearn_adapter(model: Any, device: str = "cpu", scores: str = "proba",
                    gradients: str = "auto", schema: Any = None) -> Any:  # fmt: skip
    """A fitted scikit-learn classifier or pipeline (XGBoost and LightGBM classifiers too):
    ``scores`` = ``proba`` (log predict_proba) or ``decision``; ``gradients = "never"``
    forces the black-box path; ``schema`` names the raw columns of a model trained on a
    DataFrame (default: the run's tabular space's schema)."""
    from mmargin_tabular.adapters import SklearnAdapter

    return SklearnAdapter(model, device=device, scores=scores, gradients=gradients,  # type: ignore[arg-type]
                          schema=schema)  # fmt: skip


@hookimpl
def mmargin_register_adapters(register: Register) -> None:
    register("sklearn", sklearn_adapter, help="scikit-learn classifier / pipeline (torch twin "
             "for linear models and MLPs)")  # fmt: skip


@hookimpl
def mmargin_adapt_model(model: Any, device: str, options: dict[str, Any]) -> Any:
    from mmargin_tabular.adapters import is_sklearn_model

    if is_sklearn_model(model):
        return sklearn_adapter(model, device=device, **options)
    return None


def _fraud(split: str = "test", n: int | None = None, seed: int = 0, fraud_rate: float = 0.02,
           only_label: int | None = None) -> Any:  # fmt: skip
    """Synthetic card transactions (see ``mmargin_tabular.data.FRAUD_STORY``)."""
    from mmargin.plugin import Dataset
    from mmargin_tabular.data import fraud_split
    from mmargin_tabular.schema import load_schema

    x, y = fraud_split(split, n=n, seed=seed, fraud_rate=fraud_rate)
    ids = [f"fraud-{split}-{i}" for i in range(len(y))]
    if only_label is not None:
        keep = np.flatnonzero(y == only_label)
        x, y, ids = x[keep], y[keep], [ids[i] for i in keep]
    schema = load_schema("fraud")
    meta = {"source": "synthetic", "schema": schema.name, "classes": list(schema.classes)}
    return Dataset(x, y, ids, meta)


def _file(path: str, schema: Any, label: str | None = None, only_label: int | None = None) -> Any:
    """A user's CSV / Parquet file read through a schema."""
    from mmargin_tabular.data import load_table

    return load_table(path, schema, label=label, only_label=only_label)


@hookimpl
def mmargin_register_datasets(register: Register) -> None:
    register("fraud", _fraud, help="synthetic card transactions, 2% fraud, fraud schema")
    register("tabular-file", _file, help="CSV / Parquet file read through a feature schema")


@hookimpl
def mmargin_exact_model(model: Any) -> Any:
    """Tree ensembles, linear models and ReLU MLPs behind the ``sklearn`` adapter, as the
    core's exact solvers read them (see :mod:`mmargin_tabular.exact`)."""
    from mmargin_tabular.exact import sklearn_model

    return sklearn_model(model)


@hookimpl
def mmargin_exact_constraints(space: Any, distance: Any, x: np.ndarray) -> Any:
    """A row of the ``tabular`` space: bounds, directions, immutables, integers, one-hot
    blocks and costs from the schema."""
    from mmargin_tabular.exact import schema_constraints

    return schema_constraints(space, distance, x)


def _fraud_logreg(seed: int = 0) -> Any:
    from mmargin_tabular.models import fraud_logreg

    return fraud_logreg(seed)


def _fraud_gbm(seed: int = 0, n_estimators: int = 60, max_depth: int = 3) -> Any:
    from mmargin_tabular.models import fraud_gbm

    return fraud_gbm(seed, n_estimators, max_depth)


def _fraud_forest(seed: int = 0, n_estimators: int = 40, max_depth: int = 6) -> Any:
    from mmargin_tabular.models import fraud_forest

    return fraud_forest(seed, n_estimators, max_depth)


def _fraud_mlp(seed: int = 0, hidden: int = 16) -> Any:
    from mmargin_tabular.models import fraud_mlp

    return fraud_mlp(seed, hidden)


def _fraud_torch_mlp(seed: int = 0, hidden: int = 16, epochs: int = 40) -> Any:
    from mmargin_tabular.models import fraud_torch_mlp

    return fraud_torch_mlp(seed, hidden, epochs)


def _fraud_pipeline_logreg(seed: int = 0) -> Any:
    from mmargin_tabular.models import fraud_pipeline_logreg

    return fraud_pipeline_logreg(seed)


def _fraud_pipeline_hgb(seed: int = 0, max_iter: int = 60, max_depth: int = 3) -> Any:
    from mmargin_tabular.models import fraud_pipeline_hgb

    return fraud_pipeline_hgb(seed, max_iter, max_depth)


@hookimpl
def mmargin_register_models(register: Register) -> None:
    register("fraud_logreg", _fraud_logreg, help="scaler + logistic regression on synthetic fraud")
    register("fraud_gbm", _fraud_gbm, help="gradient-boosted trees on synthetic fraud")
    register("fraud_forest", _fraud_forest, help="random forest on synthetic fraud")
    register("fraud_mlp", _fraud_mlp, help="scaler + scikit-learn ReLU MLP on synthetic fraud")
    register("fraud_torch_mlp", _fraud_torch_mlp, help="torch Linear-ReLU-Linear, fraud")
    register(
        "fraud_pipeline_logreg",
        _fraud_pipeline_logreg,
        help="Pipeline(ColumnTransformer("
        "OneHotEncoder, StandardScaler), LogisticRegression) on the raw fraud DataFrame",
    )
    register("fraud_pipeline_hgb", _fraud_pipeline_hgb, help="the same preprocessing + "
             "HistGradientBoostingClassifier, on the raw fraud DataFrame")  # fmt: skip


@hookimpl
def mmargin_sample_report(
    space: Any, model: Any, x: Any, x_adv: Any, labels: Any, goal: Any
) -> list[dict[str, Any]] | None:
    """Per row of the ``tabular`` space: the changed features (before / after, cost, change
    in standard deviations) and the distance in several units; no model pass."""
    from mmargin_tabular.report import row_report
    from mmargin_tabular.space import TabularSpace

    if not isinstance(space, TabularSpace) or space.schema is None:
        return None
    return row_report(space.schema, x, x_adv)


@hookimpl
def mmargin_render_sample(space: Any, result: Any, dataset_item: Any) -> str | None:
    """The changed features in raw units with their units, for ``mmargin report``."""
    if result.modality != "tabular":
        return None
    from mmargin_tabular.render import render_row

    return render_row(result, getattr(space, "schema", None), dataset_item)
