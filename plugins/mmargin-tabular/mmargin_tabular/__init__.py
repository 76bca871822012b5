"""mmargin-tabular: cost-weighted robustness margins of tabular models under a feature schema.

The plugin registers the ``tabular`` space (a :class:`~mmargin_tabular.space.TabularSpace`
built from a feature schema), schema-weighted distances, a scikit-learn model adapter,
the synthetic card-fraud data and a CSV/Parquet loader, and exact margins for linear
models, tree ensembles and small ReLU MLPs. Heavy imports happen inside the factories.
"""

__version__ = "0.1.0"
