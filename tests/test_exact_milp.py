"""MILP margins of small ReLU nets checked by brute force, by sampling and against linear_margin."""

from __future__ import annotations

import math
import time
from itertools import pairwise, product

import numpy as np
import pytest
import torch
from torch import nn

from mmargin.exact.linear import linear_margin
from mmargin.exact.milp import (
    Layers,
    extract_relu_layers,
    fold_affine_input,
    forward,
    relu_net_margin,
)
from mmargin.exact.types import ExactMargin

torch.set_num_threads(1)
INF = math.inf


def _net(seed: int, sizes: list[int]) -> Layers:
    """Random ReLU net whose first-layer hyperplanes cut through the unit box."""
    rng = np.random.default_rng(seed)
    layers = [
        (3.0 * rng.normal(size=(o, i)) / math.sqrt(i), 0.1 * rng.normal(size=o))
        for i, o in pairwise(sizes)
    ]
    W1 = layers[0][0]
    layers[0] = (W1, -np.einsum("ij,ij->i", W1, rng.uniform(size=W1.shape)))
    return layers


def _batch_logits(layers: Layers, X: np.ndarray) -> np.ndarray:
    H = X
    for k, (W, b) in enumerate(layers):
        H = H @ W.T + b
        if k < len(layers) - 1:
            H = np.maximum(H, 0.0)
    return H


def _adv_mask(layers: Layers, X: np.ndarray, label: int, target: int | None = None) -> np.ndarray:
    Z = _batch_logits(layers, X)
    if target is not None:
        return np.all(Z[:, [target]] > np.delete(Z, target, axis=1), axis=1)
    return np.max(np.delete(Z, label, axis=1), axis=1) > Z[:, label]


def _check_adv(
    r: ExactMargin,
    layers: Layers,
    x: np.ndarray,
    label: int,
    p: float,
    target: int | None = None,
    lo: float = 0.0,
    hi: float = 1.0,
) -> None:
    assert r.adversarial is not None and r.adversarial.shape == x.shape
    assert _adv_mask(layers, r.adversarial.reshape(1, -1), label, target)[0]
    assert np.all(r.adversarial >= lo) and np.all(r.adversarial <= hi)
    delta = (r.adversarial - x).ravel()
    assert np.linalg.norm(delta, ord=p) == pytest.approx(r.margin, rel=1e-12)
    assert 0.0 <= r.lower <= r.margin <= r.lower * (1 + 1e-6) + 1e-9
    # scaling the flip back a little must undo it, or the margin was not minimal
    back = (x.ravel() + 0.999 * delta).reshape(1, -1)
    assert not _adv_mask(layers, back, label, target)[0]


def _grid_in_ball(x: np.ndarray, radius: float, p: float, n: int) -> np.ndarray:
    """A dense grid of the box [x - r, x + r] clipped to [0, 1], kept where ||d||_p < r."""
    axes = [np.linspace(max(xi - radius, 0.0), min(xi + radius, 1.0), n) for xi in x]
    G = np.array(list(product(*axes)))
    return G[np.linalg.norm(G - x, ord=p, axis=1) < radius]


def _tiny_case(seed: int, d: int, hidden: list[int], k: int) -> tuple[Layers, np.ndarray, int]:
    layers = _net(seed, [d, *hidden, k])
    x = np.random.default_rng(seed + 1).uniform(0.25, 0.75, size=d)
    return layers, x, int(np.argmax(forward(layers, x)))


@pytest.mark.parametrize("p", [INF, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_tiny_2d_net_grid_brute_force(p: float, seed: int) -> None:
    layers, x, label = _tiny_case(seed, 2, [6], 3)
    r = relu_net_margin(layers, x, label, p)
    assert r.method == "milp"
    if r.margin == INF:  # then no point of the whole box may flip
        assert not _adv_mask(layers, _grid_in_ball(x, 2.0, INF, 201), label).any()
        return
    assert r.optimal
    _check_adv(r, layers, x, label, p)
    G = _grid_in_ball(x, 0.99 * r.margin, p, 301)
    assert len(G) > 1000 and not _adv_mask(layers, G, label).any()


@pytest.mark.parametrize("p", [INF, 1.0])
def test_two_hidden_layers_3d_sampling(p: float) -> None:
    for seed in range(3):
        layers, x, label = _tiny_case(10 + seed, 3, [8, 5], 4)
        r = relu_net_margin(layers, x, label, p)
        if r.margin == INF:
            continue
        _check_adv(r, layers, x, label, p)
        G = _grid_in_ball(x, 0.99 * r.margin, p, 41)
        rng = np.random.default_rng(seed)
        S = x + rng.uniform(-1, 1, size=(50_000, 3)) * 0.99 * r.margin
        S = S[
            (np.linalg.norm(S - x, ord=p, axis=1) < 0.99 * r.margin)
            & np.all((S >= 0) & (S <= 1), axis=1)
        ]
        assert not _adv_mask(layers, np.vstack([G, S]), label).any()
        # any flip found along a random ray is an upper bound the MILP must not exceed
        for u in rng.normal(size=(20, 3)):
            u /= np.linalg.norm(u, ord=p)
            ts = np.linspace(0.0, 2.0, 4001)
            pts = x + ts[:, None] * u
            inside = np.all((pts >= 0) & (pts <= 1), axis=1)
            hits = np.flatnonzero(inside & _adv_mask(layers, pts, label))
            if hits.size:
                assert r.margin <= ts[hits[0]] + 1e-9


@pytest.mark.parametrize("p", [INF, 1.0])
def test_targeted_tiny_net(p: float) -> None:
    layers, x, label = _tiny_case(21, 2, [8], 4)
    for target in (t for t in range(4) if t != label):
        r = relu_net_margin(layers, x, label, p, target=target)
        if r.margin == INF:
            assert not _adv_mask(layers, _grid_in_ball(x, 2.0, INF, 201), label, target).any()
            continue
        assert r.adv_label == target
        _check_adv(r, layers, x, label, p, target=target)
        G = _grid_in_ball(x, 0.99 * r.margin, p, 301)
        assert not _adv_mask(layers, G, label, target).any()


@pytest.mark.parametrize("p", [INF, 1.0])
def test_single_linear_layer_agrees_with_linear_margin(p: float) -> None:
    rng = np.random.default_rng(4)
    for _ in range(4):
        W, b, x = rng.normal(size=(4, 7)), rng.normal(size=4), rng.uniform(0.1, 0.9, size=7)
        label = int(np.argmax(W @ x + b))
        for target in (None, (label + 1) % 4):
            milp = relu_net_margin([(W, b)], x, label, p, target=target)
            lin = linear_margin(W, b, x, label, p, target=target, lower=0.0, upper=1.0)
            if lin.margin == INF:
                assert milp.margin == INF
                continue
            assert milp.margin == pytest.approx(lin.margin, rel=1e-5)
            assert milp.lower >= lin.lower * (1 - 1e-6)  # the MILP cannot beat the exact LP


def test_extract_relu_layers_matches_torch() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 5),
        nn.ReLU(),
        nn.Sequential(nn.Linear(5, 4), nn.ReLU()),
        nn.Linear(4, 3),
    ).double()
    layers = extract_relu_layers(net)
    assert layers is not None and [W.shape for W, _ in layers] == [(5, 6), (4, 5), (3, 4)]
    x = torch.rand(8, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        expected = net(x).numpy()
    got = np.stack([forward(layers, xi.numpy()) for xi in x])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    no_bias = nn.Sequential(nn.Linear(3, 2, bias=False))
    nb = extract_relu_layers(no_bias)
    assert nb is not None and np.array_equal(nb[0][1], np.zeros(2))


@pytest.mark.parametrize(
    "module",
    [
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.ReLU()),
        nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)),
        nn.Sequential(nn.ReLU(), nn.Linear(3, 2)),
        nn.Sequential(),
        nn.ReLU(),
    ],
)
def test_extract_relu_layers_rejects(module: nn.Module) -> None:
    assert extract_relu_layers(module) is None


def test_fold_affine_input() -> None:
    layers = _net(5, [12, 6, 3])
    rng = np.random.default_rng(0)
    mean, std = rng.uniform(0.2, 0.6, size=12), rng.uniform(0.5, 2.0, size=12)
    folded = fold_affine_input(layers, mean, std)
    for x in rng.uniform(size=(5, 12)):
        np.testing.assert_allclose(
            forward(folded, x), forward(layers, (x - mean) / std), rtol=1e-12, atol=1e-12
        )
    # per-channel statistics for (3, 2, 2) inputs
    m3, s3 = np.array([0.1, 0.5, 0.9]), np.array([0.3, 0.2, 0.4])
    folded3 = fold_affine_input(layers, m3.reshape(3, 1, 1), s3.reshape(3, 1, 1), (3, 2, 2))
    x3 = rng.uniform(size=(3, 2, 2))
    norm = (x3 - m3[:, None, None]) / s3[:, None, None]
    np.testing.assert_allclose(forward(folded3, x3), forward(layers, norm), rtol=1e-12)
    # scalar statistics: raw-space margins are std times normalised-space margins
    small = _net(6, [3, 6, 3])
    fs = fold_affine_input(small, 0.5, 0.25)
    x = np.array([0.3, 0.6, 0.45])
    label = int(np.argmax(forward(fs, x)))
    raw = relu_net_margin(fs, x, label, INF)
    normed = relu_net_margin(small, (x - 0.5) / 0.25, label, INF, lower=-2.0, upper=2.0)
    assert raw.margin == pytest.approx(0.25 * normed.margin, rel=1e-5)
    assert np.array_equal(layers[0][0], _net(5, [12, 6, 3])[0][0])  # inputs untouched


@pytest.mark.parametrize("p", [INF, 1.0])
def test_upper_bound_gives_same_margin(p: float) -> None:
    layers, x, label = _tiny_case(31, 3, [8, 8], 3)
    free = relu_net_margin(layers, x, label, p)
    assert free.margin < INF
    for factor in (1.0, 1.3, 3.0):
        r = relu_net_margin(layers, x, label, p, upper_bound=factor * free.margin)
        assert r.margin == pytest.approx(free.margin, rel=1e-6)
        assert "upper_bound_infeasible" not in r.info and r.optimal
    wrong = relu_net_margin(layers, x, label, p, upper_bound=0.5 * free.margin)
    assert wrong.info.get("upper_bound_infeasible") == 1.0
    assert wrong.margin == pytest.approx(free.margin, rel=1e-6)


@pytest.mark.parametrize("p", [INF, 1.0])
def test_mlp_64_16_10_is_fast_and_valid(p: float) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).double()
    layers = extract_relu_layers(net)
    assert layers is not None
    x = np.random.default_rng(0).uniform(size=(8, 8))
    with torch.no_grad():
        label = int(net(torch.from_numpy(x.reshape(1, -1))).argmax())
    t0 = time.perf_counter()
    r = relu_net_margin(layers, x, label, p, time_limit=30.0)
    elapsed = time.perf_counter() - t0
    assert r.optimal and elapsed < 10.0
    _check_adv(r, layers, x, label, p)
    assert r.adversarial is not None
    with torch.no_grad():
        assert int(net(torch.from_numpy(r.adversarial.reshape(1, -1))).argmax()) != label
    rng = np.random.default_rng(1)
    d = rng.uniform(-1, 1, size=(4000, 64))
    d *= (0.99 * r.margin / np.linalg.norm(d, ord=p, axis=1))[:, None]
    S = np.clip(x.reshape(1, -1) + d, 0.0, 1.0)
    assert not _adv_mask(layers, S, label).any()


def test_edge_cases() -> None:
    layers, x, label = _tiny_case(41, 3, [5], 3)
    copies = [(W.copy(), b.copy()) for W, b in layers], x.copy()
    wrong = relu_net_margin(layers, x, (label + 1) % 3, INF)
    assert wrong.margin == 0.0 and wrong.optimal and wrong.adversarial is not None
    assert np.array_equal(wrong.adversarial, x)
    frozen = relu_net_margin(layers, x, label, 1.0, mask=np.zeros(3))
    assert frozen.margin == INF and frozen.adversarial is None
    partial = relu_net_margin(layers, x, label, INF, mask=np.array([1.0, 0.0, 1.0]))
    if partial.margin < INF:
        assert partial.adversarial is not None and partial.adversarial[1] == x[1]
    assert all(
        np.array_equal(W, W0) and np.array_equal(b, b0)
        for (W, b), (W0, b0) in zip(layers, copies[0], strict=True)
    )
    assert np.array_equal(x, copies[1])
    with pytest.raises(ValueError, match="p = 1 or inf"):
        relu_net_margin(layers, x, label, 2.0)
    with pytest.raises(ValueError, match="bounded input set"):
        relu_net_margin(layers, x, label, INF, lower=-INF, upper=INF)
    # binary model: a single output, class 1 iff score > 0
    rng = np.random.default_rng(2)
    binary = [
        (rng.normal(size=(4, 2)), rng.normal(size=4)),
        (rng.normal(size=(1, 4)), np.array([0.1])),
    ]
    xb = np.array([0.5, 0.5])
    lab = 1 if forward(binary, xb)[0] > 0 else 0
    rb = relu_net_margin(binary, xb, lab, INF)
    if rb.margin < INF:
        assert rb.adversarial is not None and rb.adv_label == 1 - lab
        assert (1 if forward(binary, rb.adversarial)[0] > 0 else 0) == 1 - lab


def test_binary_net_score_exactly_zero() -> None:
    layers = [
        (np.array([[1.0, 0.0], [0.0, 1.0]]), np.zeros(2)),
        (np.array([[1.0, -1.0]]), np.zeros(1)),
    ]
    x = np.array([0.5, 0.5])  # score 0: class 0
    assert relu_net_margin(layers, x, 1, INF).margin == 0.0
    r = relu_net_margin(layers, x, 0, INF)
    assert r.adversarial is not None and r.adv_label == 1 and 0.0 < r.margin < 1e-4
    assert forward(layers, r.adversarial)[0] > 0.0


def test_time_limit_returns_consistent_result() -> None:
    # 89 unstable ReLUs under interval bounds: far too many to close in 0.2 s
    layers, x, label = _tiny_case(51, 20, [40, 40], 10)
    t0 = time.perf_counter()
    r = relu_net_margin(layers, x, label, INF, time_limit=0.2)
    assert time.perf_counter() - t0 < 3.0
    assert not r.optimal and 0.0 <= r.lower <= r.margin
    if r.adversarial is None:  # no incumbent yet: "unknown", flagged, not "no flip"
        assert r.margin == INF and r.info["time_limit_hit"] == 1.0
    else:
        assert _adv_mask(layers, r.adversarial.reshape(1, -1), label)[0]
