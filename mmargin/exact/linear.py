"""Exact minimal adversarial perturbations of linear (affine) classifiers.

A linear model scores ``z = W @ x.ravel() + b`` with ``W`` of shape ``(K, D)``.  For
``K >= 2`` the prediction is the arg-max of ``z``; ``K == 1`` is a *binary* model whose
single score means class 1 when ``z > 0`` and class 0 when ``z <= 0``.

:func:`linear_margin` returns the smallest ``||weights * delta||_p`` (``p`` in 1, 2, inf)
such that ``x + delta`` is misclassified (or lands in ``target``), optionally inside a box
and with frozen coordinates.  Without box/mask it is the textbook closed form; with them
the problem is an LP (``p`` in 1, inf, solved by HiGHS) or a convex QP (``p = 2``, solved
through its one-dimensional/low-dimensional dual, which also yields a proven lower bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog, minimize

from mmargin.exact.limits import LIMITS
from mmargin.exact.rules import check_classes
from mmargin.exact.types import ExactMargin

_REL_NUDGE = LIMITS.nudge_rel
_ABS_NUDGE = LIMITS.nudge_abs
_OPT_RTOL = LIMITS.qp_rel_gap
_HIGHS_OPTS = {"primal_feasibility_tolerance": LIMITS.lp_tol,
               "dual_feasibility_tolerance": LIMITS.lp_tol}  # fmt: skip


@dataclass
class _Problem:
    """Constraint set for ``delta``: box ``lo <= delta <= hi``, positive costs ``c``."""

    lo: np.ndarray
    hi: np.ndarray
    c: np.ndarray
    free: np.ndarray
    p: float

    @property
    def boxed(self) -> bool:
        """True when some bound on a free coordinate is finite."""
        f = self.free
        return bool(np.any(np.isfinite(self.lo[f])) or np.any(np.isfinite(self.hi[f])))


@dataclass
class _Sol:
    """One solved sub-problem: the point, its norm, a proven lower bound and how."""

    delta: np.ndarray
    value: float
    lower: float
    method: str
    optimal: bool


def check_norm(p: float) -> float:
    """Return ``p`` as 1.0, 2.0 or inf; raise ``ValueError`` for anything else."""
    try:
        pf = float(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be 1, 2 or inf, got {p!r}") from None
    if pf in (1.0, 2.0) or pf == math.inf:
        return pf
    raise ValueError(f"p must be 1, 2 or inf, got {p!r}")


def lp_norm(v: np.ndarray, p: float) -> float:
    """The ``p``-norm (1, 2 or inf) of a flat vector; 0 for an empty one."""
    if v.size == 0:
        return 0.0
    if p == 1.0:
        return float(np.sum(np.abs(v)))
    if p == 2.0:
        return float(np.linalg.norm(v))
    return float(np.max(np.abs(v)))


def _dual(p: float) -> float:
    return {1.0: math.inf, 2.0: 2.0}.get(p, 1.0)


def broadcast_flat(value: object, shape: tuple[int, ...], default: float, name: str) -> np.ndarray:
    """``value`` (``None`` -> ``default``) broadcast to ``shape``, as a flat float64 copy."""
    arr = np.asarray(default if value is None else value, dtype=np.float64)
    try:
        return np.broadcast_to(arr, shape).astype(np.float64).ravel()
    except ValueError:
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to {shape}") from None


def as_two_class(W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """A one-output (binary: class 1 iff score > 0) layer as two scores ``[0, z]``."""
    if W.shape[0] != 1:
        return W, b, False
    return np.vstack([np.zeros_like(W), W]), np.concatenate([[0.0], b]), True


def _status(z: np.ndarray, label: int, target: int | None, binary: bool) -> tuple[bool, int]:
    """Whether scores ``z`` count as a flip, and the predicted label."""
    if binary:
        pred = 1 if z[1] > z[0] else 0
        return pred != label, pred
    pred = int(np.argmax(z))
    others = np.delete(z, label if target is None else target)
    if target is None:
        return bool(np.max(others) > z[label]), pred
    return bool(np.all(z[target] > others)), pred


def _closed_form(a: np.ndarray, gp: float, prob: _Problem) -> tuple[np.ndarray | None, float]:
    """Minimiser of ``||c*delta||_p`` s.t. ``a @ delta >= gp`` ignoring the box, and its norm."""
    ap = np.where(prob.free, a / prob.c, 0.0)
    qn = lp_norm(ap, _dual(prob.p))
    if qn == 0.0:
        return None, math.inf
    if prob.p == 2.0:
        u = gp * ap / qn**2
    elif prob.p == math.inf:
        u = (gp / qn) * np.sign(ap)
    else:
        i = int(np.argmax(np.abs(ap)))
        u = np.zeros_like(ap)
        u[i] = gp / ap[i]
    return u / prob.c, gp / qn


def _row_lowers(A: np.ndarray, g: np.ndarray, prob: _Problem) -> np.ndarray:
    """Unconstrained (closed-form) distance to each half-space ``A[k] @ delta >= g[k]``."""
    ap = np.where(prob.free[None, :], A / prob.c[None, :], 0.0)
    q = _dual(prob.p)
    qn = np.array([lp_norm(r, q) for r in ap])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(qn > 0, np.maximum(g, 0.0) / qn, math.inf)


def _in_box(delta: np.ndarray, prob: _Problem) -> bool:
    slack = 1e-12 * (1.0 + np.abs(delta))
    return bool(np.all(delta >= prob.lo - slack) and np.all(delta <= prob.hi + slack))


def _lp(A: np.ndarray, gp: np.ndarray, g: np.ndarray, prob: _Problem) -> _Sol | None:
    """Exact L1/Linf minimum over ``A @ delta >= gp`` and the box; ``None`` if infeasible."""
    idx = np.flatnonzero(prob.free)
    n, m = idx.size, A.shape[0]
    Af, c, lo, hi = A[:, idx], prob.c[idx], prob.lo[idx], prob.hi[idx]
    if prob.p == math.inf:
        cost = np.zeros(n + 1)
        cost[n] = 1.0
        ones = sp.csr_matrix(np.ones((n, 1)))
        a_ub = sp.vstack(
            [
                sp.hstack([sp.csr_matrix(-Af), sp.csr_matrix((m, 1))]),
                sp.hstack([sp.diags(c), -ones]),
                sp.hstack([sp.diags(-c), -ones]),
            ]
        ).tocsc()
        b_ub = np.concatenate([-gp, np.zeros(2 * n)])
        bounds = np.vstack([np.column_stack([lo, hi]), [[0.0, np.inf]]])
    else:
        cost = np.concatenate([c, c])
        a_ub = sp.csc_matrix(np.hstack([-Af, Af]))
        b_ub = -gp
        bounds = np.vstack(
            [
                np.column_stack([np.zeros(n), np.maximum(hi, 0.0)]),
                np.column_stack([np.zeros(n), np.maximum(-lo, 0.0)]),
            ]
        )
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs", options=_HIGHS_OPTS)
    if res.status == 2:
        return None
    if res.status != 0 or res.x is None:
        raise RuntimeError(f"linprog failed on a linear-margin LP: {res.message}")
    d = res.x[:n] if prob.p == math.inf else res.x[:n] - res.x[n:]
    delta = np.zeros(A.shape[1])
    delta[idx] = d
    marg = getattr(res.ineqlin, "marginals", None)
    lower = float(res.fun)
    if marg is not None:  # LP value is convex in the rhs: v(g) >= v(gp) + marg . (gp - g)
        lower = float(res.fun) + float(np.dot(np.asarray(marg)[:m], gp - g))
    lower = max(lower, 0.0, float(np.max(_row_lowers(A, g, prob))))
    return _Sol(delta, lp_norm(prob.c * delta, prob.p), lower, "linear-lp", True)


def _l2_box(A: np.ndarray, gp: np.ndarray, g: np.ndarray, prob: _Problem) -> _Sol | None:
    """L2 minimum over ``A @ delta >= gp`` and the box, solved through the dual.

    For multipliers ``y >= 0`` the inner minimiser is ``clip(A.T y / c^2, lo, hi)`` and the
    dual value ``D(y)`` is a proven lower bound on half the squared margin, so the primal /
    dual gap certifies optimality (KKT) without trusting the solver.
    """
    idx = np.flatnonzero(prob.free)
    Af, c2, lo, hi = A[:, idx], prob.c[idx] ** 2, prob.lo[idx], prob.hi[idx]

    def primal(y: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip((Af.T @ y) / c2, lo, hi))

    def dual_value(y: np.ndarray, rhs: np.ndarray) -> float:
        d = primal(y)
        return float(0.5 * np.sum(c2 * d * d) - y @ (Af @ d - rhs))

    if A.shape[0] == 1:
        a, target = Af[0], float(gp[0])
        lam_lo = target / float(np.sum(a * a / c2))
        lam_hi = lam_lo
        for _ in range(2000):
            if a @ primal(np.array([lam_hi])) >= target:
                break
            lam_lo, lam_hi = lam_hi, 2.0 * lam_hi
        else:
            return None
        for _ in range(200):
            mid = 0.5 * (lam_lo + lam_hi)
            if mid <= lam_lo or mid >= lam_hi:
                break
            if a @ primal(np.array([mid])) >= target:
                lam_hi = mid
            else:
                lam_lo = mid
        y = np.array([lam_hi])
    else:
        res = minimize(
            lambda v: -dual_value(v, gp),
            np.zeros(A.shape[0]),
            jac=lambda v: Af @ primal(v) - gp,
            method="L-BFGS-B",
            bounds=[(0.0, None)] * A.shape[0],
            options={"maxiter": 10000, "ftol": 1e-16, "gtol": 1e-13},
        )
        y = np.asarray(res.x)
    d = primal(y)
    if not np.all(Af @ d > g) and idx.size <= 2000:  # polish an infeasible dual point
        cons = {"type": "ineq", "fun": lambda v: Af @ v - gp, "jac": lambda v: Af}
        res2 = minimize(
            lambda v: 0.5 * np.sum(c2 * v * v),
            d,
            jac=lambda v: c2 * v,
            method="SLSQP",
            constraints=[cons],
            bounds=[
                (lo_i if np.isfinite(lo_i) else None, hi_i if np.isfinite(hi_i) else None)
                for lo_i, hi_i in zip(lo, hi, strict=True)
            ],
            options={"maxiter": 1000, "ftol": 1e-15},
        )
        d = np.clip(np.asarray(res2.x), lo, hi)
    lower = max(math.sqrt(2.0 * max(dual_value(y, g), 0.0)), float(np.max(_row_lowers(A, g, prob))))
    if not np.all(Af @ d > g):  # fall back to any feasible point: the Linf LP's solution
        alt = _lp(A, gp, g, _Problem(prob.lo, prob.hi, prob.c, prob.free, math.inf))
        if alt is None:
            return None
        value = lp_norm(prob.c * alt.delta, 2.0)
        return _Sol(alt.delta, value, min(lower, value), "linear-qp", False)
    delta = np.zeros(A.shape[1])
    delta[idx] = d
    value = lp_norm(prob.c * delta, 2.0)
    optimal = value - lower <= _OPT_RTOL * value + 1e-300
    return _Sol(delta, value, min(lower, value), "linear-qp", optimal)


def _solve_rows(A: np.ndarray, g: np.ndarray, tol: np.ndarray, prob: _Problem) -> _Sol | None:
    """Minimum over the intersection of half-spaces ``A @ delta >= g`` (+ tol) and the box."""
    with np.errstate(invalid="ignore"):
        contrib = np.maximum(A * prob.lo, A * prob.hi)
    reach = np.where((A == 0) | ~prob.free, 0.0, contrib).sum(axis=1)
    if np.any(reach <= g):
        return None
    gp = np.minimum(g + tol, 0.5 * (g + reach))
    lowers = _row_lowers(A, g, prob)
    k = int(np.argmax(lowers))
    delta, _ = _closed_form(A[k], float(gp[k]), prob)
    if delta is not None and _in_box(delta, prob) and np.all(A @ delta >= g + 0.5 * (gp - g)):
        return _Sol(
            delta, lp_norm(prob.c * delta, prob.p), float(lowers[k]), "linear-closed-form", True
        )
    if prob.p == 2.0:
        return _l2_box(A, gp, g, prob)
    return _lp(A, gp, g, prob)


def _solve_union(A: np.ndarray, g: np.ndarray, tol: np.ndarray, prob: _Problem) -> _Sol | None:
    """Minimum over the union of half-spaces (untargeted): one sub-problem per row, pruned."""
    lowers = _row_lowers(A, g, prob)
    best: _Sol | None = None
    global_lower, optimal = math.inf, True
    for j in np.argsort(lowers, kind="stable"):
        if not math.isfinite(lowers[j]):
            break
        if best is not None and lowers[j] >= best.value:
            global_lower = min(global_lower, float(lowers[j]))
            break
        sol = _solve_rows(A[j : j + 1], g[j : j + 1], tol[j : j + 1], prob)
        if sol is None:
            continue
        global_lower = min(global_lower, sol.lower)
        if not sol.optimal:
            optimal = False
        if best is None or sol.value < best.value:
            best = sol
    if best is None:
        return None
    optimal = optimal or global_lower >= best.value * (1.0 - _OPT_RTOL)
    return _Sol(best.delta, best.value, min(global_lower, best.value), best.method, optimal)


def linear_margin(
    W: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    label: int,
    p: float,
    *,
    target: int | None = None,
    lower: np.ndarray | float | None = None,
    upper: np.ndarray | float | None = None,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> ExactMargin:
    """Exact smallest perturbation that flips an affine classifier at ``x``.

    ``W`` is ``(K, D)`` and ``b`` ``(K,)`` with ``D == x.size``; ``K == 1`` means a binary
    model (``z > 0`` is class 1, ``z <= 0`` class 0).  Untargeted: a flip is any class
    strictly beating ``label``; targeted: ``target`` strictly beats every other class.
    ``lower``/``upper`` bound the perturbed input (broadcast to ``x``), ``mask`` marks the
    coordinates that may change (1) or are frozen (0), ``weights`` are positive per-
    coordinate costs: the size is ``||weights * delta||_p`` with ``p`` in 1, 2, inf.

    The returned adversarial is pushed a relative ``1e-7`` past the decision boundary and
    checked in float64; ``margin`` is its own norm, ``lower`` the exact (proven) infimum.
    Already-misclassified inputs give margin 0; when no flip exists in the constraint set
    the margin is ``inf`` and ``adversarial`` is ``None``.  ``method`` is
    ``"linear-closed-form"``, ``"linear-lp"`` (p in 1, inf, HiGHS) or ``"linear-qp"`` (p = 2
    with active box or several target constraints; ``optimal`` only when the dual certifies
    it, else ``lower`` stays a valid bound and ``margin`` comes from a feasible point).
    """
    pn = check_norm(p)
    Wm = np.asarray(W, dtype=np.float64)
    bm = np.asarray(b, dtype=np.float64).ravel()
    x_arr = np.asarray(x, dtype=np.float64)
    xf = x_arr.ravel()
    if Wm.ndim != 2 or Wm.shape[1] != xf.size or bm.shape != (Wm.shape[0],):
        raise ValueError(f"W must be (K, {xf.size}) and b (K,), got {Wm.shape} and {bm.shape}")
    Wm, bm, binary = as_two_class(Wm, bm)
    n_cls = Wm.shape[0]
    target = check_classes(n_cls, label, target, binary)
    lo_x = broadcast_flat(lower, x_arr.shape, -math.inf, "lower")
    hi_x = broadcast_flat(upper, x_arr.shape, math.inf, "upper")
    free = broadcast_flat(mask, x_arr.shape, 1.0, "mask") != 0
    c = broadcast_flat(weights, x_arr.shape, 1.0, "weights")
    if not np.all(np.isfinite(c) & (c > 0)):
        raise ValueError("weights must be finite and strictly positive")
    slack = 1e-9 * (1.0 + np.abs(xf))
    if np.any(lo_x > xf + slack) or np.any(hi_x < xf - slack):
        raise ValueError("x lies outside the box [lower, upper]")
    free &= hi_x > lo_x
    lo_d = np.where(free, np.minimum(lo_x - xf, 0.0), 0.0)
    hi_d = np.where(free, np.maximum(hi_x - xf, 0.0), 0.0)
    prob = _Problem(lo_d, hi_d, c, free, pn)

    z = Wm @ xf + bm
    flipped, pred = _status(z, label, target, binary)
    if flipped:
        return ExactMargin(0.0, 0.0, x_arr.copy(), pred, "linear-closed-form", True)
    if target is None:
        others = np.array([j for j in range(n_cls) if j != label])
        A, g = Wm[others] - Wm[label], z[label] - z[others]
    else:
        others = np.array([j for j in range(n_cls) if j != target])
        A, g = Wm[target] - Wm[others], z[others] - z[target]
    base_tol = _REL_NUDGE * np.maximum(g, 0.0) + _ABS_NUDGE * (1.0 + float(np.max(np.abs(z))))
    sol: _Sol | None = None
    for attempt in range(4):
        tol = base_tol * 100.0**attempt
        sol = _solve_union(A, g, tol, prob) if target is None else _solve_rows(A, g, tol, prob)
        if sol is None:
            return ExactMargin(
                math.inf,
                math.inf,
                None,
                None,
                "linear-lp" if prob.boxed else "linear-closed-form",
                True,
            )
        x_adv = np.where(free, np.clip(xf + sol.delta, lo_x, hi_x), xf)
        flipped, pred = _status(Wm @ x_adv + bm, label, target, binary)
        if flipped:
            margin = lp_norm(c * (x_adv - xf), pn)
            info = {"attempts": float(attempt + 1)}
            return ExactMargin(
                margin,
                min(sol.lower, margin),
                x_adv.reshape(x_arr.shape),
                pred,
                sol.method,
                sol.optimal,
                info,
            )
    assert sol is not None
    return ExactMargin(
        math.inf, sol.lower, None, None, sol.method, False, {"verification_failed": 1.0}
    )
