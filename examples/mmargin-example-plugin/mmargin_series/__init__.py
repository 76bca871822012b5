"""mmargin-example-plugin: robustness margins of time-series classifiers.

A complete, small, out-of-tree mmargin plugin (see ``docs/writing-a-plugin.md``): a
perturbation space (:mod:`mmargin_series.space`), a distance written from scratch to the
``Distance`` protocol (:mod:`mmargin_series.distance`), a seeded data loader and a model
factory (:mod:`mmargin_series.data`, :mod:`mmargin_series.model`), and the hook
implementations that register them (:mod:`mmargin_series.plugin`).
"""

__version__ = "0.1.0"
