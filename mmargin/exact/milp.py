"""Exact minimal weighted L1 / L∞ margins of ReLU networks (and of linear models with
integer or one-hot features) by mixed-integer programming.

The network is a traced :class:`~mmargin.exact.graph.Graph` (any torch module of linear,
convolution, pooling, batch-norm, residual and ReLU operations) or a list of affine
layers ``[(W1, b1), ..., (WL, bL)]`` with a ReLU after every layer but the last.
:func:`net_margin` builds, with the shared blocks of :mod:`mmargin.exact.blocks`, "``x``
is in the constraint set and the goal's rule holds on the outputs" — big-M ReLUs and
max-pools from CROWN bounds (:mod:`mmargin.exact.crown`, never looser than intervals)
over the feasible set (intersected with the ball of a known attack distance, which
tightens them a lot), integer columns and one-hot groups integral — and lets HiGHS
minimise the weighted norm of the change.
Exact, but exponential in the number of unstable ReLUs: meant for small nets and as a
test oracle. :func:`relu_net_margin` is the arg-max special case on a plain box.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmargin.exact.blocks import network, perturbation, require_any_terms
from mmargin.exact.builder import MilpBuilder
from mmargin.exact.graph import Graph, graph_from_layers
from mmargin.exact.limits import LIMITS, ExactLimits
from mmargin.exact.linear import broadcast_flat
from mmargin.exact.nets import extract_relu_layers, fold_affine_input, forward
from mmargin.exact.problem import FeatureConstraints, Layers, feature_constraints
from mmargin.exact.rules import FlipRule, argmax_rule
from mmargin.exact.types import ExactMargin

__all__ = ["Layers", "extract_relu_layers", "fold_affine_input", "forward", "net_margin",
           "relu_net_margin"]  # fmt: skip


def _flip_conditions(model: MilpBuilder, graph: Graph, rule: FlipRule, x_idx: np.ndarray,
                     bounds: list[tuple[np.ndarray, np.ndarray]], tol: float) -> bool:  # fmt: skip
    """The network on block ``x_idx`` and the rule's alternatives on its outputs."""
    terms, const = network(model, graph, x_idx, bounds)
    lo, hi = bounds[-1]
    conditions = []
    for a, b in rule.alternatives:
        low = np.clip(a, 0, None) @ lo + np.clip(a, None, 0) @ hi - a @ const
        high = np.clip(a, 0, None) @ hi + np.clip(a, None, 0) @ lo - a @ const
        conditions.append(
            ([(sp.csr_matrix(a) @ m, i) for m, i in terms], b + tol - a @ const, low, high)
        )
    return require_any_terms(model, conditions)


def network_bounds(graph: Graph, cons: FeatureConstraints, lo: np.ndarray, hi: np.ndarray,
                   radius: float | None) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Flat lower / upper bounds of every node of ``graph`` over the box ``[lo, hi]``
    (intersected with the ball of ``radius`` in the constraints' norm): CROWN bounds for
    every layer, never looser than intervals."""
    import torch

    from mmargin.exact.crown import Region, propagator

    prop = propagator(graph)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float64)[None])

    eps = math.inf if radius is None else radius
    p = cons.p if radius is not None else math.inf
    region = Region(t(cons.x), t(lo), t(hi), torch.tensor([eps], dtype=torch.float64), p,
                    torch.as_tensor(cons.weights, dtype=torch.float64))  # fmt: skip
    with torch.no_grad():
        found = prop.bounds(region, "crown", crown_budget=1 << 60, output=True)
    return [(a[0].reshape(-1).numpy().copy(), b[0].reshape(-1).numpy().copy()) for a, b in found]


def net_margin(
    net: Layers | Graph,
    rule: FlipRule,
    cons: FeatureConstraints,
    *,
    upper_bound: float | None = None,
    method: str = "milp",
    time_limit: float | None = None,
    limits: ExactLimits = LIMITS,
    lower_hint: float | None = None,
) -> ExactMargin:
    """Exact minimal weighted L1 / L∞ flip of a ReLU net (one layer: a linear model).

    ``net`` is a traced graph or affine layers with ReLUs between them; ``rule`` says
    what a flip is on the outputs; ``cons`` gives the box, the
    mask, integer columns and one-hot groups (exact: integral in the MILP), the weights
    and ``p`` (1 or inf). ``upper_bound`` (e.g. an attack's distance) restricts the search
    to that ball, which tightens the big-M bounds; if no flip exists inside it the search
    is redone without it (``info["upper_bound_infeasible"] = 1``). A flip must win by
    ``info["flip_tol"]``; ``lower`` is HiGHS's proven bound. On the time limit the best
    incumbent is returned with ``optimal = False``. ``lower_hint`` (a certified radius,
    e.g. from :mod:`mmargin.exact.crown`) is a proven lower bound on the margin, added as
    a row: it closes the gap the LP relaxation leaves.
    """
    if cons.p not in (1.0, math.inf):
        raise ValueError(f"the ReLU MILP supports p = 1 or inf, got {cons.p!r}")
    graph = net if isinstance(net, Graph) else graph_from_layers(net)
    xf, lo_x, hi_x = cons.x, cons.lower, cons.upper
    z0 = graph.logits(xf)
    if rule.holds(z0):
        return ExactMargin(0.0, 0.0, xf.copy(), rule.adv_label(z0), method, True)
    if not cons.free.any():
        return ExactMargin(math.inf, math.inf, None, None, method, True)
    tol = limits.flip_tol * (1.0 + float(np.max(np.abs(z0))))
    radius = None
    if upper_bound is not None and math.isfinite(upper_bound):
        radius = max(float(upper_bound), 0.0) * (1.0 + limits.ball_slack) + 1e-12
    if radius is None and not cons.bounded:
        raise ValueError("relu_net_margin needs a bounded input set: finite lower/upper "
                         "on every free coordinate, or an upper_bound")  # fmt: skip
    info: dict[str, float] = {"flip_tol": tol}
    limit = limits.time_limit if time_limit is None else time_limit
    t_start = time.perf_counter()
    while True:
        lo_in, hi_in = lo_x, hi_x
        if radius is not None:
            reach = radius / cons.weights
            lo_in, hi_in = np.maximum(lo_x, xf - reach), np.minimum(hi_x, xf + reach)
        model = MilpBuilder()
        xv = perturbation(model, cons, lo_in, hi_in, radius)
        if lower_hint is not None and lower_hint > 0:
            _at_least(model, cons, lower_hint * (1 - 1e-6))
        bounds = network_bounds(graph, cons, lo_in, hi_in, radius)
        reachable = _flip_conditions(model, graph, rule, xv, bounds, tol)
        info["n_binary"] = float(sum(model.block(n).size for n in model.blocks
                                     if n.endswith((".s", ".select"))))  # fmt: skip
        res = None
        if reachable:
            res = model.solve(limit - (time.perf_counter() - t_start), limits)
        if res is not None and res.status not in (0, 1, 2):
            raise RuntimeError(f"HiGHS failed on the margin MILP: {res.message}")
        infeasible = res is None or res.status == 2
        if infeasible and radius is not None:
            info["upper_bound_infeasible"] = 1.0
            if cons.bounded:
                radius = None
                continue
            return ExactMargin(math.inf, radius, None, None, method, False, info)
        break
    info["solve_time"] = time.perf_counter() - t_start
    if infeasible:
        return ExactMargin(math.inf, math.inf, None, None, method, True, info)
    assert res is not None
    info["nodes"] = float(res.nodes)
    cap = math.inf if radius is None else radius
    if res.x is None:
        info["time_limit_hit"] = 1.0
        lower_b = min(max(res.bound or 0.0, lower_hint or 0.0), cap)
        return ExactMargin(math.inf, max(lower_b, 0.0), None, None, method, False, info)
    x_adv, z = _verified_point(graph, rule, cons, res["x"])
    if x_adv is None:
        info["verification_failed"] = 1.0
        return ExactMargin(math.inf, 0.0, None, None, method, False, info)
    margin = cons.size(x_adv - xf)
    lower_b = max(res.bound if res.bound is not None else 0.0, lower_hint or 0.0)
    lower_b = max(min(lower_b, cap, margin), 0.0)
    return ExactMargin(margin, lower_b, x_adv, rule.adv_label(z), method, res.status == 0, info)


def _at_least(model: MilpBuilder, cons: FeatureConstraints, size: float) -> None:
    """Row: the weighted norm of the change (block ``t`` for L∞, ``dp``/``dm`` for L1) is
    at least ``size``."""
    if cons.p == math.inf:
        model.rows("hint", [(np.ones((1, 1)), model.block("t"))], size, math.inf)
    else:
        w = cons.weights[cons.free][None]
        model.rows("hint", [(w, model.block("dp")), (w, model.block("dm"))], size, math.inf)


def _verified_point(graph: Graph, rule: FlipRule, cons: FeatureConstraints,
                    solved: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:  # fmt: skip
    """The solver's row re-checked in float64: integer / one-hot columns rounded (one
    try), else the change scaled out by up to ``(1 + 1e-4)^5`` until it flips."""
    xf = cons.x
    delta = np.where(cons.free, solved - xf, 0.0)
    if cons.discrete_free:
        discrete = (cons.integer | cons.in_groups) & cons.free
        adv = np.where(discrete, np.round(xf + delta), xf + delta)
        z = graph.logits(adv)
        return (adv, z) if rule.holds(z) else (None, z)
    z = graph.logits(xf)
    for attempt in range(6):
        adv = np.clip(xf + delta * (1.0 + 1e-4) ** attempt, cons.lower, cons.upper)
        z = graph.logits(adv)
        if rule.holds(z):
            return adv, z
    return None, z


def relu_net_margin(
    layers: Layers,
    x: np.ndarray,
    label: int,
    p: float,
    *,
    target: int | None = None,
    lower: Any = 0.0,
    upper: Any = 1.0,
    mask: np.ndarray | None = None,
    upper_bound: float | None = None,
    time_limit: float | None = None,
) -> ExactMargin:
    """Exact minimal L-inf (``p=inf``) or L1 (``p=1``) arg-max flip of a ReLU net, by MILP.

    ``layers`` as from :func:`extract_relu_layers` (a last layer with one output is a
    binary model: class 1 iff score > 0).  The perturbed input stays in ``[lower, upper]``
    (broadcast to ``x``) and ``mask == 0`` coordinates are frozen.  ``upper_bound`` and
    the time limit (default :data:`mmargin.exact.limits.LIMITS`) as in :func:`net_margin`,
    which this wraps; the adversarial has the shape of ``x``.
    """
    pn = float(p)
    if pn not in (1.0, math.inf):
        raise ValueError(f"relu_net_margin supports p = 1 or inf, got {p!r}")
    net = [
        (np.array(W, dtype=np.float64), np.array(b, dtype=np.float64).ravel()) for W, b in layers
    ]
    x_arr = np.asarray(x, dtype=np.float64)
    prev = x_arr.size
    for W, b in net:
        if W.ndim != 2 or W.shape[1] != prev or b.shape != (W.shape[0],):
            raise ValueError(f"layer shapes do not chain: W {W.shape}, b {b.shape}, in {prev}")
        prev = W.shape[0]
    rule = argmax_rule(net[-1][0].shape[0], label, target)
    lo_x = broadcast_flat(lower, x_arr.shape, -math.inf, "lower")
    hi_x = broadcast_flat(upper, x_arr.shape, math.inf, "upper")
    xf = x_arr.ravel()
    slack = 1e-9 * (1.0 + np.abs(xf))
    if np.any(lo_x > xf + slack) or np.any(hi_x < xf - slack):
        raise ValueError("x lies outside the box [lower, upper]")
    free = broadcast_flat(mask, x_arr.shape, 1.0, "mask") != 0
    cons = feature_constraints(xf, pn, lower=lo_x, upper=hi_x, free=free)
    found = net_margin(net, rule, cons, upper_bound=upper_bound, time_limit=time_limit)
    if found.adversarial is None:
        return found
    return ExactMargin(found.margin, found.lower, found.adversarial.reshape(x_arr.shape),
                       found.adv_label, found.method, found.optimal, found.info)  # fmt: skip
