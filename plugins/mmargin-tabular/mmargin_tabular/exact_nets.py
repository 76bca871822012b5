"""Exact margins of linear models and small ReLU MLPs under a schema (see :mod:`.exact`)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from mmargin.exact.linear import linear_margin
from mmargin.exact.milp import relu_net_margin
from mmargin.exact.types import ExactMargin
from mmargin_tabular.exact import MAX_HIDDEN, SAFETY, binary_side, discrete_free

Layers = list[tuple[np.ndarray, np.ndarray]]


def _valid(problem: dict[str, Any], adv: np.ndarray) -> bool:
    """Whether a relaxed solution already is a valid row (integers, one-hot blocks)."""
    ints = problem["integer"] & problem["free"]
    if np.any(np.abs(adv[ints] - np.round(adv[ints])) > 1e-6):
        return False
    for g in problem["groups"]:
        block = adv[g]
        off = np.minimum(np.abs(block), np.abs(block - 1))
        if np.any(off > 1e-6) or abs(block.sum() - 1) > 1e-6:
            return False
    return True


def _as_bound(found: ExactMargin, problem: dict[str, Any], method: str) -> ExactMargin:
    """A relaxation's answer: exact only if its point is already valid, else a lower bound."""
    if found.adversarial is None or not discrete_free(problem):
        return found
    if _valid(problem, np.asarray(found.adversarial).ravel()):
        return found
    return ExactMargin(found.margin, found.lower, found.adversarial, found.adv_label,
                       f"{method}-relaxed", False, {**found.info, "relaxed": 1.0})  # fmt: skip


def two_class_layers(layers: Layers, head: str, goal: Any, label: int,
                     target: int | None) -> tuple[Layers, int] | None:  # fmt: skip
    """Rewrite a two-class net so the flip is "one output crosses 0": the last layer becomes
    the log-odds (or raw score) of the decided class minus its threshold, moved by
    :data:`SAFETY` so that a solver's point is a flip also in the engine's float32 check.
    Returns the new layers and the label in the "class 1 iff output > 0" convention."""
    w, b = layers[-1]
    if head == "logit" and w.shape[0] == 1:
        z_w, z_b = np.vstack([np.zeros_like(w), w]), np.concatenate([[0.0], b])
    elif w.shape[0] == 2 and head in ("softmax", "logits"):
        z_w, z_b = w, b
    elif head == "decision" and w.shape[0] == 1:
        z_w, z_b = np.vstack([-w, w]), np.concatenate([-b, b])
    else:
        return None
    side = binary_side(goal, label, target, 2)
    if side is None:
        return None
    c, level, want = side
    safety = SAFETY * (1.0 + abs(level)) * (-1.0 if want else 1.0)  # cross by a hair more
    if head == "decision":  # the raw score of class c is column c
        last = (z_w[c][None], np.array([z_b[c] - level + safety]))
    else:  # log-odds of class c
        other = 1 - c
        last = ((z_w[c] - z_w[other])[None], np.array([z_b[c] - z_b[other] - level + safety]))
    return [*layers[:-1], last], 0 if want else 1


def linear_exact(layers: Layers, head: str, problem: dict[str, Any], distance: Any, goal: Any,
                 label: int, target: int | None) -> ExactMargin | None:  # fmt: skip
    """Exact linear margin: the integral MILP for binary decisions with free discrete
    columns (L1 / L∞), else ``linear_margin`` (relaxation when discrete columns are free)."""
    p = float(distance.p)
    if p == 0:
        return None
    kwargs = {"lower": problem["lower"], "upper": problem["upper"],
              "mask": problem["free"].astype(float), "weights": problem["weights"]}  # fmt: skip
    binary = two_class_layers(layers, head, goal, label, target)
    if binary is not None:
        (w, b), lab = binary[0][0], binary[1]
        if discrete_free(problem) and p in (1.0, math.inf):
            return _integral_halfspace(w[0], float(b[0]), problem, p, lab)
        return _as_bound(linear_margin(w, b, problem["x"], lab, p, **kwargs), problem, "linear")
    from mmargin.goals import Targeted, Untargeted

    if goal is not None and not isinstance(goal, (Untargeted, Targeted)):
        return None
    if head not in ("softmax", "ovr", "decision", "logits"):
        return None
    (w, b) = layers[0]
    found = linear_margin(w, b, problem["x"], label, p, target=target, **kwargs)
    return _as_bound(found, problem, "linear")


def _integral_halfspace(a: np.ndarray, c0: float, problem: dict[str, Any], p: float,
                        label: int) -> ExactMargin:  # fmt: skip
    """min ‖w ⊙ δ‖ (L1 / L∞) with ``a·x' + c0`` crossing 0 away from ``label`` (class 1 iff
    ``> 0``), integer columns integral and one-hot blocks one-hot: a MILP (HiGHS)."""
    x, w, free = problem["x"], problem["weights"], problem["free"]
    d = x.size
    lo, hi = np.where(free, problem["lower"], x), np.where(free, problem["upper"], x)
    tol = 1e-9 * (1.0 + float(np.abs(a) @ np.abs(x)))  # the safety margin is in c0 already
    # variables: x' (d), dp (d), dm (d) [, t]
    n = 3 * d + (1 if p == math.inf else 0)
    cost = np.zeros(n)
    if p == math.inf:
        cost[-1] = 1.0
    else:
        cost[d : 2 * d] = w
        cost[2 * d : 3 * d] = w
    integrality = np.zeros(n)
    integrality[:d] = problem["integer"] | np.isin(np.arange(d), np.concatenate(
        [np.zeros(0, dtype=int), *problem["groups"]]))  # fmt: skip
    lb = np.concatenate([lo, np.zeros(2 * d), np.zeros(n - 3 * d)])
    ub = np.concatenate([hi, np.full(2 * d, np.inf), np.full(n - 3 * d, np.inf)])
    eye = sp.identity(d, format="csr")
    rows = [sp.hstack([eye, -eye, eye, sp.csr_matrix((d, n - 3 * d))])]  # x' − dp + dm = x
    lo_r, hi_r = [x], [x]
    sign = 1.0 if label == 0 else -1.0  # label 0: a·x' + c0 >= tol; label 1: <= −tol
    rows.append(sp.csr_matrix(np.concatenate([sign * a, np.zeros(n - d)])[None]))
    lo_r.append(np.array([tol - sign * c0]))
    hi_r.append(np.array([np.inf]))
    for g in problem["groups"]:
        row = np.zeros(n)
        row[g] = 1.0
        rows.append(sp.csr_matrix(row[None]))
        lo_r.append(np.array([1.0]))
        hi_r.append(np.array([1.0]))
    if p == math.inf:  # t >= w_j (dp_j + dm_j)
        wd = sp.diags(w)
        rows.append(sp.hstack([sp.csr_matrix((d, d)), wd, wd, -np.ones((d, 1))]).tocsr())
        lo_r.append(np.full(d, -np.inf))
        hi_r.append(np.zeros(d))
    res = milp(cost, integrality=integrality, bounds=Bounds(lb, ub),
               constraints=LinearConstraint(sp.vstack(rows).tocsr(), np.concatenate(lo_r),
                                            np.concatenate(hi_r)),
               options={"time_limit": 30.0, "mip_rel_gap": 1e-9})  # fmt: skip
    if res.status == 2:
        return ExactMargin(math.inf, math.inf, None, None, "linear-milp", True)
    if res.x is None:
        return ExactMargin(math.inf, 0.0, None, None, "linear-milp", False, {"time_limit_hit": 1.0})
    adv = np.where(integrality[:d] > 0, np.round(res.x[:d]), res.x[:d])
    adv = np.where(free, adv, x)
    delta = np.abs(adv - x) * w
    margin = float(delta.max() if p == math.inf else delta.sum())
    score = float(a @ adv + c0)
    flipped = score < 0 if label == 1 else score > 0
    if not flipped:
        return ExactMargin(math.inf, 0.0, None, None, "linear-milp", False, {"verify_failed": 1.0})
    dual = getattr(res, "mip_dual_bound", None)
    lower = margin if res.status == 0 else max(0.0, float(dual or 0.0))
    return ExactMargin(margin, min(lower, margin), adv, 1 - label, "linear-milp", res.status == 0)


def mlp_exact(layers: Layers, head: str, problem: dict[str, Any], distance: Any, goal: Any,
              label: int, target: int | None,
              upper_bound: float | None) -> ExactMargin | None:  # fmt: skip
    """ReLU MILP: integral under L1 when integer / categorical features are free (the core's
    big-M model with those inputs made integer and one-hot rows added), otherwise the
    core's ``relu_net_margin`` on the continuous problem (weights folded into layer one)."""
    from mmargin.goals import Targeted, Untargeted

    p = float(distance.p)
    if p not in (1.0, math.inf) or sum(w.shape[0] for w, _ in layers[:-1]) > MAX_HIDDEN:
        return None
    binary = two_class_layers(layers, head, goal, label, target)
    if binary is not None:
        net, lab, tgt = binary[0], binary[1], None
    elif goal is None or isinstance(goal, (Untargeted, Targeted)):
        net, lab, tgt = layers, label, target
    else:
        return None
    if p == 1.0 and discrete_free(problem) and tgt is None:
        return _integral_relu(net, problem, lab)
    wts = problem["weights"]
    w1, b1 = net[0]
    scaled = [(w1 / wts[None, :], b1), *net[1:]]  # inputs u = w ⊙ x
    x, free = problem["x"], problem["free"]
    lo, hi = problem["lower"] * wts, problem["upper"] * wts
    if not (np.all(np.isfinite(lo[free])) and np.all(np.isfinite(hi[free]))):
        return None
    u = x * wts
    box = {"lower": np.where(free, lo, u), "upper": np.where(free, hi, u), "mask": free * 1.0}
    with _quiet_stdout():  # HiGHS prints a debug line on some MIPs
        found = relu_net_margin(scaled, u, lab, p, target=tgt, upper_bound=upper_bound, **box)
    if found.adversarial is not None:
        adv = np.where(free, np.asarray(found.adversarial).ravel() / wts, x)
        found = ExactMargin(found.margin, found.lower, adv, found.adv_label, "milp",
                            found.optimal, found.info)  # fmt: skip
    return _as_bound(found, problem, "milp")


def _integral_relu(net: Layers, problem: dict[str, Any], label: int) -> ExactMargin:
    """Weighted-L1 flip of a ReLU net with integer columns integral and one-hot blocks
    one-hot, built on the core's MILP model (``mmargin.exact.milp._build``)."""
    from mmargin.exact.milp import _build, _is_flip, forward

    x, free, w = problem["x"], problem["free"], problem["weights"]
    lo, hi = np.where(free, problem["lower"], x), np.where(free, problem["upper"], x)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("an integral ReLU margin needs finite bounds on every feature")
    layers = [(np.array(wt, dtype=np.float64), np.array(bs, dtype=np.float64)) for wt, bs in net]
    binary = layers[-1][0].shape[0] == 1
    if binary:  # "class 1 iff output > 0" as two logits [0, z]
        wl, bl = layers[-1]
        layers[-1] = (np.vstack([np.zeros_like(wl), wl]), np.concatenate([[0.0], bl]))
    built = _build(layers, x, lo, hi, free, label, None, 1.0, None, 1e-9)
    if built is None:
        return ExactMargin(math.inf, math.inf, None, None, "milp-integral", True)
    model, xv, _ = built
    fi = np.flatnonzero(free)
    model.cost[1], model.cost[2] = w[fi].copy(), w[fi].copy()  # |δ⁺|, |δ⁻| at their cost
    model.integ[0] = (problem["integer"] | _in_groups(problem)).astype(int)
    for g in problem["groups"]:
        model.rows([(np.ones((1, len(g))), xv[g])], 1.0, 1.0)
    with _quiet_stdout():
        res = model.solve(30.0)
    if res.status == 2:
        return ExactMargin(math.inf, math.inf, None, None, "milp-integral", True)
    if res.x is None:
        return ExactMargin(math.inf, 0.0, None, None, "milp-integral", False)
    adv = np.where(model.integ[0] > 0, np.round(res.x[xv]), res.x[xv])
    adv = np.where(free, adv, x)
    if not _is_flip(forward(layers, adv), label, None):
        return ExactMargin(math.inf, 0.0, None, None, "milp-integral", False, {"verify": 0.0})
    margin = float(np.sum(np.abs(adv - x) * w))
    dual = res.get("mip_dual_bound")
    lower = margin if res.status == 0 else max(0.0, float(dual or 0.0))
    return ExactMargin(margin, min(lower, margin), adv, None, "milp-integral", res.status == 0)


def _in_groups(problem: dict[str, Any]) -> np.ndarray:
    out = np.zeros(problem["x"].size, dtype=bool)
    for g in problem["groups"]:
        out[g] = True
    return out


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 (native code writes there directly) for a block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
