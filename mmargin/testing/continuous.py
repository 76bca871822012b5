"""Conformance checks for continuous spaces and distances.

Each ``check_*`` function takes the object and what it needs, and raises
:class:`~mmargin.testing.cases.ConformanceError` with a message saying what broke. The
checks try random perturbations with a fixed seed, so a failure reproduces.
:func:`check_space` and :func:`check_distance` run all of a kind at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.protocols import Distance, Space
from mmargin.testing.contract import ConformanceError, require_protocol

SEED = 1234
"""Seed of every random draw the checks make."""


def _fail(what: Any, message: str) -> None:
    raise ConformanceError(f"{type(what).__name__} {getattr(what, 'name', '')!r}: {message}")


def _batch(x: Any) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def _scale(x: Tensor, scale: float | None) -> float:
    if scale is not None:
        return float(scale)
    spread = float(x.max() - x.min()) if x.numel() else 0.0
    return spread if spread > 0 else 1.0


def _noise(like: Tensor, seed: int = SEED) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(like.shape, generator=gen, dtype=like.dtype)


def _frozen(space: Any, x: Tensor) -> Tensor | None:
    """1 where the space declares a coordinate frozen (a ``ContinuousSpace`` mask)."""
    from mmargin.spaces import ContinuousSpace

    if not isinstance(space, ContinuousSpace) or space.mask is None:
        return None
    mask = torch.as_tensor(np.broadcast_to(space.mask, x.shape[1:]).copy(), dtype=x.dtype)
    return (mask == 0).expand_as(x)


def _valid(space: Any, points: Tensor, what: str) -> None:
    problems = space.check(points.detach().cpu().numpy())
    bad = [(i, p) for i, p in enumerate(problems) if p is not None]
    if bad:
        i, p = bad[0]
        _fail(space, f"{what}: {len(bad)} of {len(problems)} results fail check(); row {i}: {p}")


def _in_box(space: Any, points: Tensor, what: str) -> None:
    """``points`` inside the space's box (a ``ContinuousSpace``: its relaxation, before
    ``finalize`` rounds integers or one-hot blocks), else they must pass ``check``."""
    from mmargin.spaces import ContinuousSpace

    if not isinstance(space, ContinuousSpace):
        _valid(space, points, what)
        return
    shape = tuple(points.shape[1:])
    lower = torch.as_tensor(np.broadcast_to(np.asarray(space.lower, np.float64), shape).copy())
    upper = torch.as_tensor(np.broadcast_to(np.asarray(space.upper, np.float64), shape).copy())
    p = points.detach().double().cpu()
    tol = 1e-5 * (1 + torch.maximum(lower.abs(), upper.abs()).nan_to_num(posinf=0, neginf=0))
    out = (p < lower - tol) | (p > upper + tol) | ~torch.isfinite(p)
    if bool(out.any()):
        rows = out.flatten(1).any(dim=1).nonzero().squeeze(1).tolist()
        _fail(space, f"{what}: rows {rows} leave the box [lower, upper]")


def _close(a: Tensor, b: Tensor, atol: float) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


# -- spaces -------------------------------------------------------------------------------
def check_space_accepts_inputs(space: Any, x: Any, scale: float | None = None) -> None:
    """The space implements the ``Space`` protocol (``kind = "continuous"``); ``check``
    returns one entry per sample, ``None`` for every valid input."""
    require_protocol(space, Space)
    if space.kind != "continuous":
        _fail(space, f"a continuous space must say kind = 'continuous', got {space.kind!r}")
    problems = space.check(np.asarray(x))
    if len(problems) != len(x):
        _fail(space, f"check() returned {len(problems)} entries for {len(x)} inputs")
    _valid(space, _batch(x), "valid inputs")


def check_space_flags_bad_sample(space: Any, x: Any, scale: float | None = None) -> None:
    """One NaN input is flagged on its own row; the other rows stay fine (no raise)."""
    bad = np.array(x, dtype=np.float32, copy=True)
    bad.reshape(len(bad), -1)[0, 0] = np.nan
    problems = space.check(bad)
    if problems[0] is None:
        _fail(space, "check() accepted an input holding NaN")
    if any(p is not None for p in problems[1:]):
        _fail(space, "one NaN input made check() reject the other, valid, inputs")


def check_space_project_zero(space: Any, x: Any, scale: float | None = None) -> None:
    """A zero perturbation of a valid input stays zero."""
    xt = _batch(x)
    out = space.project(xt, torch.zeros_like(xt))
    if tuple(out.shape) != tuple(xt.shape):
        _fail(space, f"project() returned shape {tuple(out.shape)} for {tuple(xt.shape)}")
    err = _close(out, torch.zeros_like(out), 0)
    if err > 1e-5 * _scale(xt, scale):
        _fail(space, f"project(x, 0) moved a valid input by {err:g}")


def check_space_project_valid(space: Any, x: Any, scale: float | None = None) -> None:
    """``x + project(x, δ)`` stays in the box for large random δ (``finalize`` then makes it
    pass ``check``: see :func:`check_space_finalize`); frozen coordinates stay."""
    xt = _batch(x)
    delta = _noise(xt) * 3 * _scale(xt, scale)
    out = space.project(xt, delta)
    if not bool(torch.isfinite(out).all()):
        _fail(space, "project() returned NaN/inf")
    _in_box(space, xt + out, "x + project(x, delta)")
    frozen = _frozen(space, xt)
    if frozen is not None and bool(frozen.any()) and float(out[frozen].abs().max()) > 0:
        _fail(space, "project() changed a coordinate the mask freezes")


def check_space_project_idempotent(space: Any, x: Any, scale: float | None = None) -> None:
    """Projecting a projected perturbation changes nothing (up to float rounding)."""
    xt = _batch(x)
    size = _scale(xt, scale)
    once = space.project(xt, _noise(xt) * size)
    twice = space.project(xt, once)
    err = _close(once, twice, 0)
    if err > 1e-4 * size:
        _fail(space, f"project() is not idempotent: a second projection moved δ by {err:g}")


def check_space_finalize(space: Any, x: Any, scale: float | None = None) -> None:
    """``finalize`` returns a valid point and is idempotent (the engine calls it twice)."""
    xt = _batch(x)
    size = _scale(xt, scale)
    cand = xt + space.project(xt, _noise(xt) * size)
    once = space.finalize(xt, cand)
    _valid(space, once, "finalize(x, candidate)")
    err = _close(once, space.finalize(xt, once), 0)
    if err > 1e-5 * size:
        _fail(space, f"finalize() is not idempotent: a second call moved the point by {err:g}")
    err = _close(space.finalize(xt, xt), xt, 0)
    if err > 1e-5 * size:
        _fail(space, f"finalize(x, x) moved a valid input by {err:g}")


def check_space_free_gradient(space: Any, x: Any, scale: float | None = None) -> None:
    """At points pushed onto the bounds, a descent step along ``-free_gradient`` never
    points out of the box (at a lower bound it may only rise, at an upper one only fall);
    frozen coordinates get no gradient."""
    from mmargin.spaces import ContinuousSpace

    xt = _batch(x)
    size = _scale(xt, scale)
    on_bounds = space.project(xt, torch.sign(_noise(xt)) * 10 * size)
    grad = _noise(xt, SEED + 1)
    free = space.free_gradient(xt, on_bounds, grad)
    if tuple(free.shape) != tuple(xt.shape) or not bool(torch.isfinite(free).all()):
        _fail(space, "free_gradient() must return a finite tensor shaped like x")
    frozen = _frozen(space, xt)
    if frozen is not None and bool(frozen.any()) and float(free[frozen].abs().max()) > 0:
        _fail(space, "free_gradient() left gradient on a frozen coordinate")
    peak = float(free.abs().max())
    if peak == 0:
        return
    if not isinstance(space, ContinuousSpace):  # no bounds to read: a tiny step must stay valid
        _valid(space, xt + on_bounds - free * (1e-6 * size / peak), "a step along -free_gradient")
        return
    shape = tuple(xt.shape[1:])
    lower = torch.as_tensor(np.broadcast_to(np.asarray(space.lower, np.float32), shape).copy())
    upper = torch.as_tensor(np.broadcast_to(np.asarray(space.upper, np.float32), shape).copy())
    point = xt + on_bounds
    out = ((point <= lower) & (free > 0)) | ((point >= upper) & (free < 0))
    if bool(out.any()):
        _fail(
            space,
            f"free_gradient() lets a descent step leave the box at {int(out.sum())} "
            f"coordinates that sit on a bound",
        )


def check_space_free_dims(space: Any, x: Any, scale: float | None = None) -> None:
    """``free_dims`` is one count per sample in ``[1, numel]``."""
    xt = _batch(x)
    dims = space.free_dims(xt)
    if tuple(dims.shape) != (len(xt),):
        _fail(space, f"free_dims() returned shape {tuple(dims.shape)}, expected ({len(xt)},)")
    numel = xt[0].numel()
    if not bool(((dims >= 1) & (dims <= numel)).all()):
        _fail(space, f"free_dims() must be in [1, {numel}], got {dims.tolist()}")


def check_space_random(space: Any, x: Any, scale: float | None = None) -> None:
    """``random`` gives unit-L2 directions shaped like x, seeded, frozen coordinates zero."""
    xt = _batch(x)
    one = space.random(xt, torch.Generator().manual_seed(SEED))
    two = space.random(xt, torch.Generator().manual_seed(SEED))
    if tuple(one.shape) != tuple(xt.shape) or not bool(torch.isfinite(one).all()):
        _fail(space, "random() must return a finite tensor shaped like x")
    if not torch.equal(one, two):
        _fail(space, "random() with two generators of the same seed gave different draws")
    norms = one.flatten(1).norm(dim=1)
    if not bool(torch.allclose(norms, torch.ones_like(norms), atol=1e-4)):
        _fail(space, f"random() directions must have unit L2 norm, got {norms.tolist()}")
    frozen = _frozen(space, xt)
    if frozen is not None and bool(frozen.any()) and float(one[frozen].abs().max()) > 0:
        _fail(space, "random() moves a coordinate the mask freezes")


SPACE_CHECKS = (
    check_space_accepts_inputs,
    check_space_flags_bad_sample,
    check_space_project_zero,
    check_space_project_valid,
    check_space_project_idempotent,
    check_space_finalize,
    check_space_free_gradient,
    check_space_free_dims,
    check_space_random,
)


def check_space(space: Any, x: Any, scale: float | None = None) -> None:
    """Run every continuous-space check on ``space`` with valid inputs ``x``."""
    for check in SPACE_CHECKS:
        check(space, x, scale)


# -- distances ----------------------------------------------------------------------------
def _deltas(shape: tuple[int, ...], n: int = 16, seed: int = SEED) -> Tensor:
    """Random perturbations of varied scale, some sparse, one zero."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn((n, *shape), generator=gen, dtype=torch.float64)
    d = d * torch.logspace(-2, 2, n, dtype=torch.float64).view(-1, *([1] * len(shape)))
    keep = torch.rand((n, *shape), generator=gen, dtype=torch.float64) < 0.5
    d[n // 2 :] = d[n // 2 :] * keep[n // 2 :]
    d[0] = 0
    return d.float()


def _is_l0(distance: Any) -> bool:
    return float(getattr(distance, "p", math.nan)) == 0.0


def _lp_reference(distance: Any) -> Any:
    """numpy's definition of an :class:`~mmargin.distances.LpDistance`, else ``None``."""
    from mmargin.distances import LpDistance

    if type(distance) is not LpDistance:  # a subclass may redefine norm: give a reference
        return None
    w = None if distance.weights is None else distance.weights.double().numpy()

    def reference(d: np.ndarray) -> np.ndarray:
        u = d.astype(np.float64) * (1.0 if w is None else w)
        flat = u.reshape(len(u), -1)
        if distance.p == 0:
            return (flat != 0).sum(axis=1).astype(np.float64)
        return np.linalg.norm(flat, ord=distance.p, axis=1)

    return reference


def check_distance_norm(distance: Any, shape: tuple[int, ...], reference: Any = None) -> None:
    """The ``Distance`` protocol; ``norm`` matches the definition (numpy for Lp, or the
    case's ``reference``), is 0 at 0, non-negative, absolutely homogeneous (L0:
    scale-invariant) and subadditive."""
    require_protocol(distance, Distance)
    d = _deltas(shape)
    norms = distance.norm(d)
    if tuple(norms.shape) != (len(d),):
        _fail(distance, f"norm() returned shape {tuple(norms.shape)}, expected ({len(d)},)")
    if float(norms[0]) != 0.0 or bool((norms < 0).any()):
        _fail(distance, "norm() must be 0 for a zero perturbation and never negative")
    ref = reference or _lp_reference(distance)
    if ref is not None:
        want = np.asarray(ref(d.numpy()), dtype=np.float64)
        got = norms.double().numpy()
        if not np.allclose(got, want, rtol=1e-4, atol=1e-6):
            i = int(np.argmax(np.abs(got - want)))
            _fail(distance, f"norm() = {got[i]:g} but the definition gives {want[i]:g}")
    for a in (-3.0, 0.5, 7.0):
        scaled = distance.norm(d * a)
        want_t = norms if _is_l0(distance) else norms * abs(a)
        if not bool(torch.allclose(scaled, want_t, rtol=1e-4, atol=1e-6)):
            _fail(distance, f"norm(a·δ) != |a|·norm(δ) for a = {a}")
    e = _deltas(shape, seed=SEED + 7)
    if bool((distance.norm(d + e) > (norms + distance.norm(e)) * (1 + 1e-5) + 1e-6).any()):
        _fail(distance, "norm() breaks the triangle inequality: ‖δ+ε‖ > ‖δ‖ + ‖ε‖")


def _support_direction(g: Tensor, p: float) -> Tensor:
    """A unit-``Lp`` maximiser of ``<g, u>`` (rows of a flattened batch)."""
    if p == math.inf:
        return torch.sign(g)
    if p == 2.0:
        return g / g.norm(dim=1, keepdim=True).clamp(min=1e-30)
    top = g.abs().argmax(dim=1, keepdim=True)
    return torch.zeros_like(g).scatter(1, top, g.gather(1, top).sign())


def check_distance_dual_norm(distance: Any, shape: tuple[int, ...], reference: Any = None) -> None:
    """Hölder: ``|<g, δ>| <= ‖δ‖ · ‖g‖_*`` on random pairs, tight at the maximiser built
    from the distance's ``p`` (``weights`` of a weighted Lp taken into account)."""
    if _is_l0(distance):
        return  # L0's dual norm is the search's heuristic (L∞'s), not a true dual
    d, g = _deltas(shape).double(), _deltas(shape, seed=SEED + 3).double()
    dual = distance.dual_norm(g.float()).double()
    if tuple(dual.shape) != (len(g),) or bool((dual < 0).any()):
        _fail(distance, "dual_norm() must be one non-negative value per sample")
    inner = (d * g).flatten(1).sum(dim=1).abs()
    bound = distance.norm(d.float()).double() * dual
    if bool((inner > bound * (1 + 1e-4) + 1e-6).any()):
        i = int((inner - bound).argmax())
        _fail(
            distance,
            f"Hölder fails: |<g, δ>| = {float(inner[i]):g} > ‖δ‖·‖g‖_* = {float(bound[i]):g}",
        )
    p = float(getattr(distance, "p", math.nan))
    if p not in (1.0, 2.0, math.inf):
        return
    weights = getattr(distance, "weights", None)
    w = 1.0 if weights is None else weights.double().reshape(1, -1)
    gf = g.flatten(1)[1:]
    u = _support_direction(gf / w, p)
    best = (u / w).float().view(-1, *shape)
    size = distance.norm(best).double().clamp(min=1e-30)
    value = (best.double().flatten(1) * gf).sum(dim=1) / size
    gap = value - dual[1:]
    tol = 1e-3 * dual[1:].abs() + 1e-6
    if bool((gap > tol).any()):
        i = int(gap.argmax())
        _fail(
            distance,
            f"Hölder fails at the maximiser: <g, δ>/‖δ‖ = {float(value[i]):g} > "
            f"dual_norm(g) = {float(dual[1 + i]):g} (dual norm too small)",
        )
    if bool((gap < -tol).any()):
        i = int(gap.argmin())
        _fail(
            distance,
            f"dual_norm() is not tight: the maximiser reaches <g, δ>/‖δ‖ = {float(value[i]):g} "
            f"but dual_norm(g) = {float(dual[1 + i]):g} (dual norm too large)",
        )


def check_distance_project(distance: Any, shape: tuple[int, ...], reference: Any = None) -> None:
    """``project(δ, ε)`` lands in the ε-ball, leaves points inside it alone, and is
    idempotent."""
    d = _deltas(shape)
    norms = distance.norm(d)
    eps = torch.where(torch.arange(len(d)) % 2 == 0, norms * 0.5, norms * 2.0 + 1.0)
    out = distance.project(d, eps)
    if tuple(out.shape) != tuple(d.shape) or not bool(torch.isfinite(out).all()):
        _fail(distance, "project() must return a finite tensor shaped like δ")
    size = distance.norm(out)
    if bool((size > eps * (1 + 1e-5) + 1e-6).any()):
        i = int((size - eps).argmax())
        _fail(distance, f"project(δ, ε={float(eps[i]):g}) has norm {float(size[i]):g} > ε")
    inside = norms <= eps
    if bool(inside.any()) and _close(out[inside], d[inside], 0) > 1e-5 * (1 + float(d.abs().max())):
        _fail(distance, "project() moved a perturbation that was already inside the ball")
    again = distance.project(out, eps)
    if _close(again, out, 0) > 1e-4 * (1 + float(out.abs().max())):
        _fail(distance, "project() is not idempotent")


DISTANCE_CHECKS = (
    check_distance_norm,
    check_distance_dual_norm,
    check_distance_project,
)


def check_distance(distance: Any, shape: tuple[int, ...] = (6,), reference: Any = None) -> None:
    """Run every continuous-distance check on ``distance`` for samples of ``shape``."""
    for check in DISTANCE_CHECKS:
        check(distance, shape, reference)
