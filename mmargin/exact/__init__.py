"""Exact minimal margins where a closed form or a solver exists: one core for every model.

These are both a feature (the reported margin then has ``lower_bound == margin``) and the
oracle the engine's tests are checked against. Layout (each module one job):

- :mod:`.limits` — the one place for limits and tolerances (:data:`~.limits.LIMITS`);
- :mod:`.problem` — what a sample poses: :class:`~.problem.FeatureConstraints` (from the
  space and distance) and :class:`~.problem.ExactModel` (from the model), both provided by
  plugins through the hooks ``mmargin_exact_constraints`` / ``mmargin_exact_model``;
- :mod:`.rules` — goals (untargeted, targeted, thresholds) as linear conditions on outputs;
- :mod:`.builder` and :mod:`.blocks` — the one MILP builder (named variables and rows)
  and its blocks: perturbation and norm, integer / one-hot features, ReLU units, flips;
- :mod:`.linear` (closed form / LP / QP), :mod:`.milp` (ReLU networks, and linear models
  with discrete features), :mod:`.trees` (tree ensembles) — the methods;
- :mod:`.nets` — reading torch ReLU stacks, folding normalisation, float64 forward;
- :mod:`.solve` — picks the method for one sample (what the core's exact hook runs).

Nothing outside this package builds a solver model.
"""
