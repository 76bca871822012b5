"""Choosing the exact method for one sample: what the core's exact hook runs.

:func:`exact_margin` takes the model's :class:`~mmargin.exact.problem.ExactModel` and the
sample's :class:`~mmargin.exact.problem.FeatureConstraints` (both from hooks, so any
plugin's models and spaces take part) and picks:

- a **tree ensemble** → the tree MILP (:mod:`mmargin.exact.trees`): exact for L0, L1, L2
  and L∞ with bounds, integers and one-hot groups;
- **one affine layer** (a linear model) → when integer or one-hot features may change,
  the MILP with those columns integral (L1, L∞: exact); otherwise the closed form / LP /
  QP of :func:`~mmargin.exact.linear.linear_margin`, whose point — for L2 with discrete
  features — is then only a relaxation (``method`` ends in ``-relaxed``, ``optimal`` false
  unless the point already is a valid row);
- **ReLU networks** (layers or a traced graph, at most ``max_hidden`` units) → the ReLU
  MILP (:func:`~mmargin.exact.milp.net_margin`), integral where the space says so (L1,
  L∞); past the size limit, under L2, or when the solver stops at its time limit, a
  **certified lower bound** by bound propagation (:mod:`mmargin.exact.crown`, CROWN by
  default: ``limits.certify``), bisected on the radius (``method`` ``"crown"`` or
  ``"interval"``, no adversarial, ``margin = inf``).

The goal becomes linear conditions on the model's outputs through
:func:`~mmargin.exact.rules.flip_rule`; goals that are not linear there get ``None``.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from mmargin.exact.limits import LIMITS, ExactLimits
from mmargin.exact.linear import linear_margin
from mmargin.exact.milp import net_margin
from mmargin.exact.problem import ExactModel, FeatureConstraints
from mmargin.exact.rules import FlipRule, flip_rule
from mmargin.exact.trees import tree_ensemble_margin
from mmargin.exact.types import ExactMargin


def exact_margin(form: ExactModel | None, cons: FeatureConstraints, label: int,
                 target: int | None, upper_bound: float | None, goal: Any, *,
                 limits: ExactLimits = LIMITS) -> ExactMargin | None:  # fmt: skip
    """The exact margin of one sample, or ``None`` when no exact method applies.

    A row on which nothing may change has no flip (``margin = lower = inf``) whatever
    the model; otherwise ``form`` (``None``: a model no plugin describes) decides.
    """
    if not cons.free.any():
        return ExactMargin(math.inf, math.inf, None, None,
                           f"{cons.name}: no feature of this row may change", True)  # fmt: skip
    if form is None:
        return None
    if form.ensemble is not None:
        ens = form.ensemble
        if ens.n_leaves > limits.max_leaves:
            return None
        rule = flip_rule(form.head, ens.n_outputs, goal, label, target, limits=limits,
                         argmax_margin=limits.safety / 2)  # fmt: skip
        if rule is None:
            return None
        return tree_ensemble_margin(
            ens, cons.x, rule.alternatives, cons.p, lower=cons.lower, upper=cons.upper,
            free=cons.free, weights=cons.weights, integer=cons.integer, groups=cons.groups,
            group_costs=cons.group_costs, limits=limits,
        )  # fmt: skip
    if cons.p == 0:
        return None
    rule = flip_rule(form.head, form.n_outputs, goal, label, target, limits=limits)
    if rule is None:
        return None
    if form.layers is not None and len(form.layers) == 1:
        return _linear(form.layers[0], rule, cons, limits)
    net = form.layers if form.layers is not None else form.graph
    assert net is not None
    solvable = form.hidden_units <= limits.max_hidden and cons.p in (1.0, math.inf)
    if solvable and (cons.bounded or upper_bound is not None):
        method = "milp-integral" if cons.discrete_free else "milp"
        hint = None
        if upper_bound is not None and math.isfinite(upper_bound):
            hint = _certified(form, cons, label, target, goal, upper_bound, limits)
            if hint is not None and hint.lower >= upper_bound:  # the attack's flip is minimal
                return hint
        found = net_margin(net, rule, cons, upper_bound=upper_bound, method=method, limits=limits,
                           lower_hint=None if hint is None else hint.lower)  # fmt: skip
        if found.optimal:
            return found
        bound = _certified(form, cons, label, target, goal, found.margin, limits)
        if bound is not None and bound.lower > found.lower:
            return replace(found, lower=min(bound.lower, found.margin),
                           info={**found.info, "lower_from": 1.0})  # fmt: skip
        return found
    return _certified(form, cons, label, target, goal, upper_bound, limits)


def _certified(
    form: ExactModel, cons: FeatureConstraints, label: int, target: int | None, goal: Any,
    upper_bound: float | None, limits: ExactLimits,
) -> ExactMargin | None:  # fmt: skip
    """A certified lower bound by bound propagation (``limits.certify``), bisected up to
    ``upper_bound`` (else the largest distance in the box): an :class:`ExactMargin` with
    no adversarial, ``margin = inf`` and ``optimal = False``; ``None`` when there is nothing
    to bisect (an unbounded box and no attack margin) or certification is off."""
    from mmargin.exact.certify import certified_radius
    from mmargin.exact.crown import BoundConfig

    graph = form.network()
    if limits.certify == "none" or graph is None:
        return None
    if sum(n.size for n in graph.nodes) > limits.certify_entries:
        return None
    exact_rule = flip_rule(form.head, form.n_outputs, goal, label, target,
                           limits=replace(limits, safety=0.0))  # fmt: skip
    if exact_rule is None:
        return None
    if upper_bound is not None and math.isfinite(upper_bound):
        start = float(upper_bound)
    elif cons.bounded:
        start = cons.size(np.maximum(cons.upper - cons.x, cons.x - cons.lower))
    else:
        return None
    config = BoundConfig(method=limits.certify, crown_budget=limits.crown_budget,
                         steps=limits.bisection_steps, chunk=1)  # fmt: skip
    t0 = time.perf_counter()
    radius = certified_radius(graph, cons.x[None], [exact_rule], cons.p, lower=cons.lower,
                              upper=cons.upper, weights=cons.weights, start=np.array([start]),
                              config=config, device=form.info.get("device", "cpu"))  # fmt: skip
    info = {"certify_seconds": time.perf_counter() - t0, "bisection_start": start}
    return ExactMargin(math.inf, float(radius[0]), None, None, limits.certify, False, info)


def _linear(layer: tuple[np.ndarray, np.ndarray], rule: FlipRule, cons: FeatureConstraints,
            limits: ExactLimits) -> ExactMargin | None:  # fmt: skip
    """A linear model: integral MILP with free discrete features (L1 / L∞), else the
    closed form / LP / QP (a relaxation when discrete features are free)."""
    if cons.discrete_free and cons.p in (1.0, math.inf):
        return net_margin([layer], rule, cons, method="linear-milp", limits=limits)
    w, b = layer

    def solve(w: np.ndarray, b: np.ndarray, label: int, target: int | None) -> ExactMargin:
        return linear_margin(w, b, cons.x, label, cons.p, target=target, lower=cons.lower,
                             upper=cons.upper, mask=cons.free.astype(float),
                             weights=cons.weights)  # fmt: skip

    if rule.argmax is not None:
        found = solve(w, b, *rule.argmax)
    elif len(rule.alternatives) == 1 and rule.alternatives[0][0].shape[0] == 1:
        a, rhs = rule.alternatives[0]  # one half-space a @ (w x + b) >= rhs: "class 1 iff > 0"
        found = solve(a @ w, a @ b - rhs, 0, None)
        if found.adversarial is not None:
            found = ExactMargin(found.margin, found.lower, found.adversarial, rule.other,
                                found.method, found.optimal, found.info)  # fmt: skip
    else:
        return None
    return _as_bound(found, cons)


def _as_bound(found: ExactMargin, cons: FeatureConstraints) -> ExactMargin:
    """A relaxation's answer: exact only if its point is already a valid row, else its
    ``lower`` stays a proven bound and ``method`` says ``-relaxed``."""
    if found.adversarial is None or not cons.discrete_free:
        return found
    if cons.valid(np.asarray(found.adversarial).ravel()):
        return found
    return ExactMargin(found.margin, found.lower, found.adversarial, found.adv_label,
                       f"{found.method.split('-')[0]}-relaxed", False,
                       {**found.info, "relaxed": 1.0})  # fmt: skip
