"""Exact linear margins checked against independent oracles (textbook formulas, linprog, SLSQP)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog, minimize

from mmargin.exact.linear import linear_margin
from mmargin.exact.types import ExactMargin

INF = math.inf
NORMS = [1.0, 2.0, INF]


def _norm(v: np.ndarray, p: float) -> float:
    return float(np.linalg.norm(np.ravel(v), ord=p))


def _is_adv(
    W: np.ndarray, b: np.ndarray, x: np.ndarray, label: int, target: int | None = None
) -> bool:
    z = W @ np.ravel(x) + b
    if W.shape[0] == 1:
        return (1 if z[0] > 0 else 0) != label
    if target is not None:
        return bool(np.all(z[target] > np.delete(z, target)))
    return bool(np.max(np.delete(z, label)) > z[label])


def _oracle_lp(
    A: np.ndarray, g: np.ndarray, p: float, lo: np.ndarray, hi: np.ndarray, c: np.ndarray
) -> float:
    """min ||c*d||_p (p = 1 or inf) s.t. A d >= g, lo <= d <= hi, via an epigraph LP."""
    m, n = A.shape
    if p == INF:  # vars d, t: |c_i d_i| <= t
        cost = np.r_[np.zeros(n), 1.0]
        rows = np.vstack(
            [
                np.c_[np.diag(c), -np.ones(n)],
                np.c_[-np.diag(c), -np.ones(n)],
                np.c_[-A, np.zeros(m)],
            ]
        )
        rhs = np.r_[np.zeros(2 * n), -g]
        bounds = [*zip(lo, hi, strict=True), (0, None)]
    else:  # vars d, s: s_i >= |c_i d_i|
        cost = np.r_[np.zeros(n), np.ones(n)]
        rows = np.vstack(
            [
                np.c_[np.diag(c), -np.eye(n)],
                np.c_[-np.diag(c), -np.eye(n)],
                np.c_[-A, np.zeros((m, n))],
            ]
        )
        rhs = np.r_[np.zeros(2 * n), -g]
        bounds = [*zip(lo, hi, strict=True), *[(0, None)] * n]
    res = linprog(cost, A_ub=rows, b_ub=rhs, bounds=bounds, method="highs")
    return INF if res.status == 2 else float(res.fun)


def _oracle_l2(
    A: np.ndarray, g: np.ndarray, lo: np.ndarray, hi: np.ndarray, c: np.ndarray
) -> float:
    """Same with p = 2 through SLSQP (approximate, ~1e-7)."""
    cons = {"type": "ineq", "fun": lambda d: A @ d - g, "jac": lambda d: A}
    best = INF
    for start in (np.zeros(A.shape[1]), np.clip(A[0] * g[0] / (A[0] @ A[0]), lo, hi)):
        res = minimize(
            lambda d: float(np.sum((c * d) ** 2)),
            start,
            jac=lambda d: 2 * c * c * d,
            method="SLSQP",
            constraints=[cons],
            bounds=list(zip(lo, hi, strict=True)),
            options={"ftol": 1e-14, "maxiter": 500},
        )
        if res.success and np.all(A @ res.x >= g - 1e-8):
            best = min(best, float(np.sqrt(res.fun)))
    return best


def _oracle(
    W: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    label: int,
    p: float,
    *,
    target: int | None = None,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    c: np.ndarray | None = None,
) -> float:
    """Brute force: min over competing classes (untargeted) or one joint problem (targeted)."""
    D = x.size
    c = np.ones(D) if c is None else c
    lo = np.full(D, -INF) if lo is None else lo - x
    hi = np.full(D, INF) if hi is None else hi - x
    if mask is not None:
        lo, hi = np.where(mask, lo, 0.0), np.where(mask, hi, 0.0)
    z = W @ x + b
    if target is not None:
        others = [k for k in range(W.shape[0]) if k != target]
        problems = [(W[target] - W[others], z[others] - z[target])]
    else:
        problems = [
            ((W[j] - W[label])[None], np.array([z[label] - z[j]]))
            for j in range(W.shape[0])
            if j != label
        ]
    vals = [
        _oracle_l2(A, g, lo, hi, c) if p == 2 else _oracle_lp(A, g, p, lo, hi, c)
        for A, g in problems
    ]
    return min(vals)


def _check_result(
    r: ExactMargin,
    W: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    label: int,
    p: float,
    *,
    target: int | None = None,
    c: np.ndarray | None = None,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> None:
    """The adversarial is adversarial, in the box, has norm == margin, and is minimal."""
    c = np.ones(x.size) if c is None else c
    assert r.adversarial is not None and r.adversarial.shape == x.shape
    assert _is_adv(W, b, r.adversarial, label, target)
    delta = r.adversarial - x
    assert _norm(c * delta, p) == pytest.approx(r.margin, rel=1e-12, abs=1e-15)
    assert r.lower <= r.margin
    if lo is not None:
        assert np.all(r.adversarial >= lo) and np.all(r.adversarial <= hi)
    if mask is not None:
        assert np.all(delta[~mask] == 0.0)
    assert not _is_adv(W, b, x + 0.999 * delta, label, target)  # minimality


def _close(r: ExactMargin, expected: float) -> None:
    """``lower`` is the exact minimum; ``margin`` exceeds it only by the boundary nudge."""
    assert r.lower == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert expected * (1 - 1e-7) <= r.margin <= expected * (1 + 1e-5) + 1e-12


def _problem(seed: int, D: int, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(seed)
    W, b, x = rng.normal(size=(K, D)), rng.normal(size=K), rng.uniform(0.1, 0.9, size=D)
    return W, b, x, int(np.argmax(W @ x + b))


@pytest.mark.parametrize("p", NORMS)
@pytest.mark.parametrize(("D", "K"), [(2, 2), (5, 3), (20, 6), (50, 10)])
def test_unconstrained_matches_pairwise_oracle(p: float, D: int, K: int) -> None:
    for seed in range(3):
        W, b, x, label = _problem(100 * D + seed, D, K)
        r = linear_margin(W, b, x, label, p)
        z = W @ x + b
        q = {1.0: INF, 2.0: 2.0, INF: 1.0}[p]
        textbook = min(
            (z[label] - z[j]) / np.linalg.norm(W[label] - W[j], ord=q)
            for j in range(K)
            if j != label
        )
        assert r.method == "linear-closed-form" and r.optimal
        assert r.lower == pytest.approx(textbook, rel=1e-12)
        assert r.margin == pytest.approx(textbook, rel=1e-5)
        if p != 2:
            assert r.margin == pytest.approx(_oracle(W, b, x, label, p), rel=1e-5)
        _check_result(r, W, b, x, label, p)
        assert r.adv_label == int(np.argmax(W @ r.adversarial + b)) != label


@pytest.mark.parametrize("p", NORMS)
def test_boxed_matches_solver_oracle(p: float) -> None:
    used_solver = 0
    for seed in range(8):
        W, b, x, label = _problem(seed, 6, 4)
        lo, hi = np.full(6, 0.0), np.full(6, 1.0)
        r = linear_margin(W, b, x, label, p, lower=0.0, upper=1.0)
        expected = _oracle(W, b, x, label, p, lo=lo, hi=hi)
        if expected == INF:
            assert r.margin == INF and r.adversarial is None
            continue
        used_solver += r.method != "linear-closed-form"
        assert r.optimal
        _close(r, expected)
        _check_result(r, W, b, x, label, p, lo=lo, hi=hi)
    assert used_solver > 0  # the box was active at least once


@pytest.mark.parametrize("p", NORMS)
@pytest.mark.parametrize("boxed", [False, True])
def test_targeted_matches_joint_oracle(p: float, boxed: bool) -> None:
    for seed in range(6):
        W, b, x, label = _problem(50 + seed, 5, 4)
        target = (label + 1 + seed % 3) % 4
        bound = 1.0 if boxed else None
        r = linear_margin(
            W, b, x, label, p, target=target, lower=None if bound is None else 0.0, upper=bound
        )
        lo, hi = (np.zeros(5), np.ones(5)) if boxed else (None, None)
        expected = _oracle(W, b, x, label, p, target=target, lo=lo, hi=hi)
        if expected == INF:
            assert r.margin == INF and r.adversarial is None and r.adv_label is None
            continue
        assert r.optimal and r.adv_label == target
        _close(r, expected)
        _check_result(r, W, b, x, label, p, target=target, lo=lo, hi=hi)


@pytest.mark.parametrize("p", NORMS)
def test_mask_and_weights(p: float) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        W, b, x, label = _problem(int(rng.integers(1 << 30)), 8, 3)
        mask = rng.random(8) < 0.6
        mask[0] = True
        c = rng.uniform(0.5, 3.0, size=8)
        r = linear_margin(
            W, b, x, label, p, mask=mask.astype(float), weights=c, lower=0.0, upper=1.0
        )
        expected = _oracle(W, b, x, label, p, lo=np.zeros(8), hi=np.ones(8), mask=mask, c=c)
        if expected == INF:
            assert r.margin == INF
            continue
        _close(r, expected)
        _check_result(r, W, b, x, label, p, c=c, mask=mask, lo=np.zeros(8), hi=np.ones(8))


@pytest.mark.parametrize("p", NORMS)
def test_binary_single_row(p: float) -> None:
    rng = np.random.default_rng(3)
    w, b0, x = rng.normal(size=(1, 4)), rng.normal(size=1), rng.uniform(size=4)
    s = float(w[0] @ x + b0[0])
    label = 1 if s > 0 else 0
    q = {1.0: INF, 2.0: 2.0, INF: 1.0}[p]
    r = linear_margin(w, b0, x, label, p)
    assert r.margin == pytest.approx(abs(s) / np.linalg.norm(w[0], ord=q), rel=1e-5)
    assert r.adv_label == 1 - label
    _check_result(r, w, b0, x, label, p)
    # the same model written with two rows gives the same answer
    two = linear_margin(np.vstack([np.zeros(4), w[0]]), np.r_[0.0, b0], x, label, p)
    assert two.margin == pytest.approx(r.margin, rel=1e-9)
    # the wrong label is already "flipped"
    wrong = linear_margin(w, b0, x, 1 - label, p)
    assert wrong.margin == 0.0 and wrong.adv_label == label


def test_binary_score_exactly_zero_is_class_zero() -> None:
    w, b0, x = np.array([[1.0, -1.0]]), np.array([0.0]), np.array([0.5, 0.5])
    assert linear_margin(w, b0, x, 1, 2.0).margin == 0.0  # z == 0 means class 0
    r = linear_margin(w, b0, x, 0, 2.0)
    assert r.adversarial is not None and r.adv_label == 1 and 0.0 < r.margin < 1e-6
    assert float(w[0] @ r.adversarial) > 0.0


def test_already_misclassified_and_shapes() -> None:
    W, b, x, label = _problem(11, 12, 3)
    x_img = x.reshape(3, 2, 2)
    wrong = (label + 1) % 3
    r = linear_margin(W, b, x_img, wrong, 2.0)
    assert r.margin == 0.0 and r.lower == 0.0 and r.optimal
    assert r.adversarial is not None and np.array_equal(r.adversarial, x_img)
    r2 = linear_margin(W, b, x_img, label, INF)
    assert r2.adversarial is not None and r2.adversarial.shape == (3, 2, 2)


def test_no_flip_possible() -> None:
    W, b, x, label = _problem(5, 4, 3)
    r = linear_margin(W, b, x, label, INF, mask=np.zeros(4))
    assert r.margin == INF and r.lower == INF and r.adversarial is None and r.adv_label is None
    # a class whose score row equals the label's (shifted down) can never win
    W2, b2 = np.vstack([W[label], W[label]]), np.array([1.0, 0.0])
    r2 = linear_margin(W2, b2, x, 0, 1.0)
    assert r2.margin == INF and r2.adversarial is None


def test_inputs_not_mutated_and_errors() -> None:
    W, b, x, label = _problem(9, 5, 3)
    copies = (W.copy(), b.copy(), x.copy())
    linear_margin(W, b, x, label, 1.0, lower=0.0, upper=1.0)
    assert all(np.array_equal(u, v) for u, v in zip((W, b, x), copies, strict=True))
    with pytest.raises(ValueError, match="p must be"):
        linear_margin(W, b, x, label, 3.0)
    with pytest.raises(ValueError, match="W must be"):
        linear_margin(W[:, :4], b, x, label, 2.0)
    with pytest.raises(ValueError, match="outside the box"):
        linear_margin(W, b, x + 2.0, label, 2.0, upper=1.0)
    with pytest.raises(ValueError, match="weights"):
        linear_margin(W, b, x, label, 2.0, weights=np.zeros(5))
    with pytest.raises(ValueError, match="target"):
        linear_margin(W, b, x, label, 2.0, target=label)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    p=st.sampled_from(NORMS),
    D=st.integers(1, 6),
    K=st.integers(1, 5),
    targeted=st.booleans(),
)
def test_property_valid_and_minimal(seed: int, p: float, D: int, K: int, targeted: bool) -> None:
    rng = np.random.default_rng(seed)
    W, b, x = rng.normal(size=(K, D)), rng.normal(size=K), rng.uniform(0.0, 1.0, size=D)
    z = W @ x + b
    label = (1 if z[0] > 0 else 0) if K == 1 else int(np.argmax(z))
    target = (label + 1) % max(K, 2) if targeted and K > 2 else None
    r = linear_margin(W, b, x, label, p, target=target, lower=0.0, upper=1.0)
    if r.margin == INF:
        assert r.adversarial is None
        return
    _check_result(r, W, b, x, label, p, target=target, lo=np.zeros(D), hi=np.ones(D))
    assert r.optimal and r.margin <= r.lower * (1 + 1e-4) + 1e-12
