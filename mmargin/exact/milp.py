"""Exact minimal L-inf / L1 margins of small ReLU networks by mixed-integer programming.

The network is a list of affine layers ``[(W1, b1), ..., (WL, bL)]`` with a ReLU after
every layer but the last (see :func:`extract_relu_layers` to get one from a torch
``nn.Sequential``).  :func:`relu_net_margin` encodes "``x + delta`` is misclassified" with
the standard big-M ReLU formulation, using interval bounds over the feasible input set
(optionally intersected with the ball of a known attack distance, which tightens them a
lot), and lets HiGHS (``scipy.optimize.milp``) minimise ``||delta||``.  Exact, but
exponential in the number of unstable ReLUs: meant for small nets and as a test oracle.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from mmargin.exact.linear import as_two_class, broadcast_flat, check_classes, lp_norm
from mmargin.exact.types import ExactMargin

Layers = list[tuple[np.ndarray, np.ndarray]]

_BALL_SLACK = 1e-6  # relative slack on the ``upper_bound`` ball
_FLIP_TOL = 1e-8  # strictness of the flip, relative to (1 + max |logit|)


def extract_relu_layers(module: Any) -> Layers | None:
    """Affine layers of a torch ``Linear -> ReLU -> Linear ...`` net, else ``None``.

    Accepts an ``nn.Sequential`` (nested ones are flattened) or a bare ``nn.Linear`` built
    only from ``nn.Flatten`` (default dims), ``nn.Linear`` and ``nn.ReLU``, alternating
    Linear/ReLU and ending with a Linear.  Returns float64 ``[(W, b), ...]`` copies.
    """
    from torch import nn

    flat: list[Any] = []

    def walk(m: Any) -> None:
        if type(m) is nn.Sequential:
            for child in m:
                walk(child)
        else:
            flat.append(m)

    if type(module) not in (nn.Sequential, nn.Linear):
        return None
    walk(module)
    layers: Layers = []
    expect_linear = True
    for m in flat:
        if type(m) is nn.Flatten:
            if m.start_dim != 1 or m.end_dim != -1:
                return None
        elif type(m) is nn.Linear and expect_linear:
            W = m.weight.detach().cpu().double().numpy().copy()
            b = (
                m.bias.detach().cpu().double().numpy().copy()
                if m.bias is not None
                else np.zeros(W.shape[0])
            )
            if layers and layers[-1][0].shape[0] != W.shape[1]:
                return None
            layers.append((W, b))
            expect_linear = False
        elif type(m) is nn.ReLU and not expect_linear:
            expect_linear = True
        else:
            return None
    return layers if layers and not expect_linear else None


def fold_affine_input(
    layers: Layers, mean: Any, std: Any, input_shape: tuple[int, ...] | None = None
) -> Layers:
    """Fold an input normalisation ``(x - mean) / std`` into the first layer.

    ``mean``/``std`` are scalars, flat per-feature arrays, or arrays broadcastable to
    ``input_shape`` (e.g. per-channel ``(C, 1, 1)`` for ``(C, H, W)`` inputs).  The result
    applied to raw ``x`` equals ``layers`` applied to the normalised input.  Inputs are
    not modified.
    """
    W1, b1 = (np.asarray(a, dtype=np.float64) for a in layers[0])
    d = W1.shape[1]
    shape = input_shape if input_shape is not None else (d,)

    def as_flat(v: Any, name: str) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float64)
        if arr.size == d and arr.ndim > 0:
            return arr.ravel()
        flat = broadcast_flat(arr, shape, 0.0, name)
        if flat.size != d:
            raise ValueError(f"{name} does not match the {d} input features")
        return flat

    m, s = as_flat(mean, "mean"), as_flat(std, "std")
    if not np.all(np.isfinite(s) & (s != 0)):
        raise ValueError("std must be finite and non-zero")
    W_new = W1 / s[None, :]
    b_new = b1.ravel() - W_new @ m
    rest = [(np.array(W, dtype=np.float64), np.array(b, dtype=np.float64)) for W, b in layers[1:]]
    return [(W_new, b_new), *rest]


def forward(layers: Layers, x: np.ndarray) -> np.ndarray:
    """Float64 logits of the ReLU net on one flat input."""
    h = np.asarray(x, dtype=np.float64).ravel()
    for i, (W, b) in enumerate(layers):
        h = W @ h + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def _is_flip(z: np.ndarray, label: int, target: int | None, binary: bool = False) -> bool:
    """Whether logits ``z`` are a flip (``binary``: ``z = [0, score]``, class 1 iff score > 0)."""
    if binary:
        return (1 if z[1] > z[0] else 0) != label
    others = np.delete(z, label if target is None else target)
    if target is None:
        return bool(np.max(others) > z[label])
    return bool(np.all(z[target] > others))


def _ibp(W: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, ...]:
    mid, rad = 0.5 * (lo + hi), 0.5 * (hi - lo)
    c = W @ mid + b
    r = np.abs(W) @ rad
    return c - r, c + r


class _Model:
    """Sparse MILP under construction: variables with bounds/costs, two-sided rows."""

    def __init__(self) -> None:
        self.lb: list[np.ndarray] = []
        self.ub: list[np.ndarray] = []
        self.cost: list[np.ndarray] = []
        self.integ: list[np.ndarray] = []
        self.n = 0
        self.trip: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.rlo: list[np.ndarray] = []
        self.rhi: list[np.ndarray] = []
        self.m = 0

    def var(self, lb: Any, ub: Any, n: int, cost: float = 0.0, integer: bool = False) -> np.ndarray:
        """Add ``n`` variables; returns their indices."""
        self.lb.append(np.broadcast_to(np.asarray(lb, dtype=np.float64), (n,)))
        self.ub.append(np.broadcast_to(np.asarray(ub, dtype=np.float64), (n,)))
        self.cost.append(np.full(n, cost))
        self.integ.append(np.full(n, 1 if integer else 0))
        self.n += n
        return np.arange(self.n - n, self.n)

    def rows(self, terms: list[tuple[Any, np.ndarray]], lo: Any, hi: Any) -> None:
        """Add rows ``lo <= sum_k M_k @ v[idx_k] <= hi``; a 1-D ``M_k`` means ``diag(M_k)``."""
        nrows = 0
        for mat, idx in terms:
            m = sp.coo_matrix(sp.diags(mat) if np.ndim(mat) == 1 else mat)
            nrows = m.shape[0]
            self.trip.append((m.row + self.m, idx[m.col], m.data))
        self.rlo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (nrows,)))
        self.rhi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (nrows,)))
        self.m += nrows

    def solve(self, time_limit: float) -> Any:
        """Run HiGHS; returns scipy's ``OptimizeResult``."""
        r, c, v = (np.concatenate([t[k] for t in self.trip]) for k in range(3))
        A = sp.csr_matrix((v, (r, c)), shape=(self.m, self.n))
        options = {
            "time_limit": max(float(time_limit), 1e-3),
            "mip_rel_gap": 1e-7,
            "disp": False,
            "mip_abs_gap": 1e-10,
            "mip_feasibility_tolerance": 1e-9,
            "primal_feasibility_tolerance": 1e-9,
        }
        with warnings.catch_warnings():  # options scipy does not know go to HiGHS verbatim
            warnings.filterwarnings("ignore", message="Unrecognized options")
            return milp(
                np.concatenate(self.cost),
                integrality=np.concatenate(self.integ),
                bounds=Bounds(np.concatenate(self.lb), np.concatenate(self.ub)),
                constraints=LinearConstraint(A, np.concatenate(self.rlo), np.concatenate(self.rhi)),
                options=options,
            )


def _build(
    net: Layers,
    xf: np.ndarray,
    lo_in: np.ndarray,
    hi_in: np.ndarray,
    free: np.ndarray,
    label: int,
    target: int | None,
    p: float,
    radius: float | None,
    tol: float,
) -> tuple[_Model, np.ndarray, dict[str, float]] | None:
    """The MILP over inputs in ``[lo_in, hi_in]``; ``None`` when bounds rule out any flip."""
    if not (np.all(np.isfinite(lo_in)) and np.all(np.isfinite(hi_in))):
        raise ValueError(
            "relu_net_margin needs a bounded input set: finite lower/upper "
            "on every free coordinate, or an upper_bound"
        )
    model = _Model()
    xv = model.var(lo_in, hi_in, xf.size)
    fi = np.flatnonzero(free)
    nf, inf = fi.size, math.inf
    ones = np.ones(nf)
    if p == inf:
        t = model.var(0.0, inf if radius is None else radius, 1, cost=1.0)
        model.rows([(ones, xv[fi]), (-np.ones((nf, 1)), t)], -inf, xf[fi])
        model.rows([(ones, xv[fi]), (np.ones((nf, 1)), t)], xf[fi], inf)
    else:
        dp = model.var(0.0, hi_in[fi] - xf[fi], nf, cost=1.0)
        dm = model.var(0.0, xf[fi] - lo_in[fi], nf, cost=1.0)
        model.rows([(ones, xv[fi]), (-ones, dp), (ones, dm)], xf[fi], xf[fi])
        if radius is not None:
            model.rows([(np.ones((1, nf)), dp), (np.ones((1, nf)), dm)], -inf, radius)
    h_idx, h_lo, h_hi = xv, lo_in, hi_in
    n_bin = 0
    for W, b in net[:-1]:
        zl, zu = _ibp(W, b, h_lo, h_hi)
        act, dead = zl >= 0, zu <= 0
        a = model.var(np.where(act, zl, 0.0), np.where(dead, 0.0, zu), W.shape[0])
        ia, iu = np.flatnonzero(act), np.flatnonzero(~act & ~dead)
        if ia.size:
            model.rows([(np.ones(ia.size), a[ia]), (-W[ia], h_idx)], b[ia], b[ia])
        if iu.size:
            s = model.var(0.0, 1.0, iu.size, integer=True)
            n_bin += iu.size
            one = np.ones(iu.size)
            model.rows([(one, a[iu]), (-W[iu], h_idx)], b[iu], inf)
            model.rows([(one, a[iu]), (-zu[iu], s)], -inf, 0.0)
            model.rows([(one, a[iu]), (-W[iu], h_idx), (-zl[iu], s)], -inf, b[iu] - zl[iu])
        h_idx, h_lo, h_hi = a, np.maximum(zl, 0.0), np.maximum(zu, 0.0)
    WL, bL = net[-1]
    if target is None:
        others = np.array([j for j in range(WL.shape[0]) if j != label])
        D, db = WL[others] - WL[label], bL[others] - bL[label]
    else:
        others = np.array([j for j in range(WL.shape[0]) if j != target])
        D, db = WL[target] - WL[others], bL[target] - bL[others]
    dl, du = _ibp(D, db, h_lo, h_hi)
    reach = du >= tol
    if (target is None and not np.any(reach)) or (target is not None and not np.all(reach)):
        return None
    if target is not None or int(np.sum(reach)) == 1:
        keep = np.flatnonzero(reach)
        model.rows([(D[keep], h_idx)], tol - db[keep], inf)
    else:
        keep = np.flatnonzero(reach)
        sel = model.var(0.0, 1.0, keep.size, integer=True)
        n_bin += keep.size
        M = tol - dl[keep]
        model.rows([(np.ones((1, keep.size)), sel)], 1.0, 1.0)
        model.rows([(D[keep], h_idx), (-M, sel)], tol - M - db[keep], inf)
    return model, xv, {"n_binary": float(n_bin)}


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
    time_limit: float = 60.0,
) -> ExactMargin:
    """Exact minimal L-inf (``p=inf``) or L1 (``p=1``) flip of a ReLU net, by MILP.

    ``layers`` as from :func:`extract_relu_layers` (a last layer with one output is a
    binary model: class 1 iff score > 0).  The perturbed input stays in ``[lower, upper]``
    (broadcast to ``x``) and ``mask == 0`` coordinates are frozen.  ``upper_bound`` (e.g.
    an attack's distance) restricts the search to that ball, which tightens the big-M
    bounds; if no flip exists inside it the search is redone without it
    (``info["upper_bound_infeasible"] = 1``).  The flip is required to win by
    ``info["flip_tol"]`` in logit space; ``lower`` is HiGHS's proven dual bound for that
    problem.  On ``time_limit`` the best incumbent is returned with ``optimal=False``.
    """
    pn = float(p)
    if pn not in (1.0, math.inf):
        raise ValueError(f"relu_net_margin supports p = 1 or inf, got {p!r}")
    net = [
        (np.array(W, dtype=np.float64), np.array(b, dtype=np.float64).ravel()) for W, b in layers
    ]
    x_arr = np.asarray(x, dtype=np.float64)
    xf = x_arr.ravel()
    prev = xf.size
    for W, b in net:
        if W.ndim != 2 or W.shape[1] != prev or b.shape != (W.shape[0],):
            raise ValueError(f"layer shapes do not chain: W {W.shape}, b {b.shape}, in {prev}")
        prev = W.shape[0]
    WL, bL, binary = as_two_class(*net[-1])
    net[-1] = (WL, bL)
    n_cls = WL.shape[0]
    target = check_classes(n_cls, label, target, binary)
    lo_x = broadcast_flat(lower, x_arr.shape, -math.inf, "lower")
    hi_x = broadcast_flat(upper, x_arr.shape, math.inf, "upper")
    free = broadcast_flat(mask, x_arr.shape, 1.0, "mask") != 0
    slack = 1e-9 * (1.0 + np.abs(xf))
    if np.any(lo_x > xf + slack) or np.any(hi_x < xf - slack):
        raise ValueError("x lies outside the box [lower, upper]")
    free &= hi_x > lo_x
    lo_x = np.where(free, np.minimum(lo_x, xf), xf)
    hi_x = np.where(free, np.maximum(hi_x, xf), xf)
    z0 = forward(net, xf)
    if _is_flip(z0, label, target, binary):
        return ExactMargin(0.0, 0.0, x_arr.copy(), int(np.argmax(z0)), "milp", True)
    tol = _FLIP_TOL * (1.0 + float(np.max(np.abs(z0))))
    radius = None
    if upper_bound is not None and math.isfinite(upper_bound):
        radius = max(float(upper_bound), 0.0) * (1.0 + _BALL_SLACK) + 1e-12
    info: dict[str, float] = {"flip_tol": tol}
    t_start = time.perf_counter()
    while True:
        lo_in, hi_in = lo_x, hi_x
        if radius is not None:
            lo_in, hi_in = np.maximum(lo_x, xf - radius), np.minimum(hi_x, xf + radius)
        built = _build(net, xf, lo_in, hi_in, free, label, target, pn, radius, tol)
        res: Any = None
        if built is not None:
            model, xv, binfo = built
            info.update(binfo)
            res = model.solve(time_limit - (time.perf_counter() - t_start))
        if res is not None and res.status not in (0, 1, 2):
            raise RuntimeError(f"HiGHS failed on the margin MILP: {res.message}")
        infeasible = res is None or res.status == 2
        if infeasible and radius is not None:
            info["upper_bound_infeasible"] = 1.0
            if np.all(np.isfinite(lo_x)) and np.all(np.isfinite(hi_x)):
                radius = None
                continue
            return ExactMargin(math.inf, radius, None, None, "milp", False, info)
        break
    info["solve_time"] = time.perf_counter() - t_start
    if infeasible:
        return ExactMargin(math.inf, math.inf, None, None, "milp", True, info)
    info["nodes"] = float(res.get("mip_node_count") or 0)
    dual = res.get("mip_dual_bound")
    cap = math.inf if radius is None else radius
    if res.x is None:
        lower_b = min(float(dual), cap) if dual is not None and math.isfinite(dual) else 0.0
        info["time_limit_hit"] = 1.0
        return ExactMargin(math.inf, max(lower_b, 0.0), None, None, "milp", False, info)
    delta = np.where(free, res.x[xv] - xf, 0.0)
    for attempt in range(6):
        x_adv = np.clip(xf + delta * (1.0 + 1e-4) ** attempt, lo_x, hi_x)
        z = forward(net, x_adv)
        if _is_flip(z, label, target, binary):
            break
    else:
        info["verification_failed"] = 1.0
        return ExactMargin(math.inf, 0.0, None, None, "milp", False, info)
    info["scale_attempts"] = float(attempt)
    margin = lp_norm(x_adv - xf, pn)
    if dual is not None and math.isfinite(dual):
        lower_b = float(dual)
    else:
        lower_b = float(res.fun) if res.status == 0 else 0.0
    lower_b = max(min(lower_b, cap, margin), 0.0)
    adv_label = int(np.argmax(z))  # for binary nets argmax([0, score]) is the class too
    return ExactMargin(
        margin, lower_b, x_adv.reshape(x_arr.shape), adv_label, "milp", res.status == 0, info
    )
