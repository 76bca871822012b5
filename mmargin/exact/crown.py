"""Certified bounds by linear bound propagation over a traced :class:`~mmargin.exact.graph.Graph`.

Two methods, batched over samples (torch, any device):

- ``interval``: interval arithmetic node by node (exact for the affine part before the
  first ReLU, whose Jacobian is cached per graph);
- ``crown``: the backward linear relaxation of CROWN (Zhang et al., NeurIPS 2018): each
  ReLU between its two linear bounds (the lower slope 0 or 1, whichever is closer), each
  max-pool between one of its inputs and the largest upper bound of its window; a linear
  function of the output is carried back to the input and minimised over the input set.
  Pre-activation bounds come from the same backward pass (tighter) where its cost —
  twice the layer's units times the entries of the graph up to it — fits
  :attr:`BoundConfig.crown_budget`, else from intervals; every bound is the tighter of
  the two, and the affine part before the first ReLU is always exact.

The input set (:class:`Region`) is a weighted ``Lp`` ball around ``x0`` (p = 1, 2 or inf)
intersected with a box: ``‖w ⊙ (x - x0)‖_p <= eps`` and ``lo <= x <= hi``. A linear
function is minimised over it as the larger of its minimum over the box (clipped to the
ball's own box) and over the ball (``-eps ‖Λ / w‖_q`` from the dual norm) — both sound.

:func:`mmargin.exact.certify.certified_radius` bisects ``eps`` over these bounds to the
largest certified radius of every sample.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmargin.exact.graph import Graph

if TYPE_CHECKING:
    from torch import Tensor


__all__ = ["METHODS", "BoundConfig", "Propagator", "Region", "propagator"]

METHODS = ("alpha-crown", "crown", "interval")
"""Bound methods, tightest first (``alpha-crown``: CROWN with the lower slopes of the last
backward pass optimised, ``alpha_steps`` Adam steps per bound)."""


@dataclass(frozen=True)
class BoundConfig:
    """How bounds are computed: ``method`` (one of :data:`METHODS`), ``crown_budget``
    (the largest backward pass — specification rows times graph entries — spent on one
    layer's pre-activation bounds; larger layers get interval bounds),
    ``alpha_steps`` (Adam steps of ``alpha-crown`` per bound),
    ``prefix_entries`` (the largest cached Jacobian ``units × inputs`` of the affine part
    before the first ReLU), ``steps`` (bisection steps on ``eps``) and
    ``chunk`` (samples per batch)."""

    method: str = "crown"
    crown_budget: int = 1_000_000
    alpha_steps: int = 20
    prefix_entries: int = 20_000_000
    steps: int = 12
    chunk: int = 16


@dataclass
class Region:
    """A batch of input sets: flat centres ``x0`` ``(B, d)``, box ``lo``/``hi`` ``(B, d)``,
    radii ``eps`` ``(B,)`` of the weighted ``p``-ball (``w`` ``(d,)``)."""

    x0: Tensor
    lo: Tensor
    hi: Tensor
    eps: Tensor
    p: float
    w: Tensor

    def box(self) -> tuple[Tensor, Tensor]:
        """The box of the region: ``[lo, hi]`` ∩ ``x0 ± eps / w``."""
        import torch

        reach = self.eps[:, None] / self.w[None]
        return torch.maximum(self.lo, self.x0 - reach), torch.minimum(self.hi, self.x0 + reach)

    def minimum(self, lam: Tensor, const: Tensor) -> Tensor:
        """A lower bound of ``lam @ x + const`` over the region (``lam`` ``(B, S, d)``)."""
        import torch

        lo, hi = self.box()
        box = (lam.clamp(min=0) * lo[:, None] + lam.clamp(max=0) * hi[:, None]).sum(-1)
        if self.p == math.inf:
            return box + const
        q = 2.0 if self.p == 2 else math.inf
        dual = torch.linalg.vector_norm(lam / self.w, ord=q, dim=-1)
        ball = (lam * self.x0[:, None]).sum(-1) - self.eps[:, None] * dual
        return torch.maximum(box, ball) + const

    def affine_range(self, prefix: Prefix) -> tuple[Tensor, Tensor]:
        """Exact-per-unit bounds ``(B, n)`` of ``J @ x + c`` over the region (the tighter of
        the box and the ball), by matrix products with the cached ``J``."""
        import torch

        lo, hi = self.box()
        centre = ((lo + hi) / 2) @ prefix.jt + prefix.c
        rad = ((hi - lo) / 2) @ prefix.abs_jt
        low, high = centre - rad, centre + rad
        if self.p == math.inf:
            return low, high
        ball = self.x0 @ prefix.jt + prefix.c
        reach = self.eps[:, None] * prefix.dual(self.p, self.w)[None]
        return torch.maximum(low, ball - reach), torch.minimum(high, ball + reach)


@dataclass
class Prefix:
    """A node before any ReLU as ``J @ x + c``: ``jt = J.T`` ``(d, n)``, ``abs_jt = |J|.T``,
    and the rows' dual norms per norm and weights (cached)."""

    jt: Tensor
    abs_jt: Tensor
    c: Tensor
    _duals: dict[Any, Tensor] = field(default_factory=dict)

    def dual(self, p: float, w: Tensor) -> Tensor:
        """``‖J_i / w‖_q`` per unit (``q`` the dual of ``p``)."""
        import torch

        key = (p, w.cpu().numpy().tobytes())
        if key not in self._duals:
            q = 2.0 if p == 2 else math.inf
            self._duals[key] = torch.linalg.vector_norm(self.jt / w[:, None], ord=q, dim=0)
        return self._duals[key]


Bounds = list[tuple["Tensor", "Tensor"]]
"""Per node: lower and upper bounds ``(B, *shape)``."""


class Propagator:
    """Bounds on one graph: per-node interval and CROWN bounds over a :class:`Region`.

    Holds the graph's offsets, window tables and the cached Jacobians of its affine prefix
    on one device in one dtype (float64 by default)."""

    def __init__(self, graph: Graph, device: Any = "cpu", dtype: Any = None) -> None:
        import torch

        self.graph = graph
        self.device = torch.device(device)
        self.dtype = dtype or torch.float64
        self._offsets: dict[int, Tensor] = {}
        self._windows: dict[int, Tensor] = {}
        self._prefix: dict[int, Prefix | None] = {}
        nodes = graph.nodes
        self.affine_prefix = [False] * len(nodes)
        self.pre_activation = [False] * len(nodes)
        self.upstream = np.cumsum([n.size for n in nodes]).tolist()
        for k, n in enumerate(nodes):
            if n.kind == "input":
                self.affine_prefix[k] = True
            elif n.kind in ("affine", "add"):
                self.affine_prefix[k] = all(self.affine_prefix[i] for i in n.inputs)
            if n.kind in ("relu", "maxpool"):
                self.pre_activation[n.inputs[0]] = True

    # -- cached constants ------------------------------------------------------------------
    def offset(self, k: int) -> Tensor:
        """Flat bias of affine node ``k``."""
        import torch

        if k not in self._offsets:
            op = self.graph.nodes[k].op
            assert op is not None
            self._offsets[k] = torch.as_tensor(op.offset(), dtype=self.dtype, device=self.device)
        return self._offsets[k]

    def windows(self, k: int) -> Tensor:
        """Window table of max-pool node ``k`` (padding pointing at an extra slot)."""
        import torch

        if k not in self._windows:
            node = self.graph.nodes[k]
            assert node.windows is not None
            n_in = self.graph.nodes[node.inputs[0]].size
            w = np.where(node.windows < 0, n_in, node.windows)
            self._windows[k] = torch.as_tensor(w, dtype=torch.long, device=self.device)
        return self._windows[k]

    def prefix(self, k: int) -> Prefix | None:
        """Node ``k`` (before any ReLU) as ``J @ x + c``, from one forward pass of the
        unit inputs (``None`` when ``J`` would be larger than ``prefix_entries`` allows)."""
        import torch

        if k not in self._prefix:
            n, d = self.graph.nodes[k].size, self.graph.nodes[0].size
            if n * d > BoundConfig.prefix_entries:
                self._prefix[k] = None
            else:
                basis = torch.cat([torch.zeros(1, d), torch.eye(d)]).to(self.device, self.dtype)
                with torch.no_grad():
                    out = self.graph.forward(basis.reshape(d + 1, *self.graph.input_shape),
                                             until=k)[k].reshape(d + 1, n)  # fmt: skip
                jt = (out[1:] - out[:1]).contiguous()
                self._prefix[k] = Prefix(jt, jt.abs(), out[0].clone())
        return self._prefix[k]

    # -- the backward pass -------------------------------------------------------------------
    def backward(self, target: int, spec: Tensor, bounds: Bounds,
                 alphas: dict[int, Tensor] | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Carry ``spec @ node[target]`` (``spec`` ``(B, S, size)``) back to the input:
        ``(Λ (B, S, d), c (B, S))`` with ``spec @ node >= Λ @ x + c`` on the region whose
        node ``bounds`` are given (ReLUs and max-pools relaxed with them). ``alphas``: the
        lower slopes ``(B, S, units)`` (clamped to ``[0, 1]``) of the unstable units of ReLU
        nodes, by node index (α-CROWN), instead of CROWN's 0-or-1 choice."""
        import torch

        nodes = self.graph.nodes
        b, s = spec.shape[0], spec.shape[1]
        acc: dict[int, Tensor] = {target: spec.reshape(b, s, -1)}
        const = torch.zeros(b, s, dtype=self.dtype, device=self.device)
        for k in range(target, 0, -1):
            a = acc.pop(k, None)
            if a is None:
                continue
            node = nodes[k]
            if node.kind == "affine":
                const = const + a @ self.offset(k)
                self._push(acc, node.inputs[0], self._transpose(k, a))
            elif node.kind == "add":
                for sign, i in zip(node.signs, node.inputs, strict=True):
                    self._push(acc, i, sign * a)
            elif node.kind == "relu":
                lo, up = (t.reshape(t.shape[0], -1) for t in bounds[node.inputs[0]])
                slope_up, icpt_up, slope_lo = relu_relaxation(lo, up)
                pos, neg = a.clamp(min=0), a.clamp(max=0)
                const = const + (neg * icpt_up[:, None]).sum(-1)
                lower: Tensor = slope_lo[:, None]
                if alphas is not None and k in alphas:
                    unstable = ((lo < 0) & (up > 0))[:, None]
                    lower = torch.where(unstable, alphas[k].clamp(0, 1), lower)
                self._push(acc, node.inputs[0], pos * lower + neg * slope_up[:, None])
            else:
                a_in, c = self._maxpool_back(k, a, bounds)
                const = const + c
                self._push(acc, node.inputs[0], a_in)
        lam = acc.pop(0, torch.zeros(b, s, nodes[0].size, dtype=self.dtype, device=self.device))
        return lam, const

    @staticmethod
    def _push(acc: dict[int, Tensor], k: int, a: Tensor) -> None:
        acc[k] = acc[k] + a if k in acc else a

    def _transpose(self, k: int, a: Tensor) -> Tensor:
        """``a @ W`` for affine node ``k`` (``a`` ``(B, S, out)`` → ``(B, S, in)``)."""
        import torch

        op = self.graph.nodes[k].op
        assert op is not None
        b, s = a.shape[0], a.shape[1]
        if op.kind == "reshape":
            return a
        if op.kind == "scale":
            assert op.weight is not None
            return a * op.weight.to(a).reshape(-1)
        if op.kind == "linear" and len(op.in_shape) == 1:
            assert op.weight is not None
            return a @ op.weight.to(a)
        if op.kind in ("conv1d", "conv2d") and not isinstance(op.params["padding"], str):
            assert op.weight is not None
            from torch.nn import grad as conv_grad

            grad_fn = conv_grad.conv1d_input if op.kind == "conv1d" else conv_grad.conv2d_input
            g = grad_fn((b * s, *op.in_shape), op.weight.to(a), a.reshape(b * s, *op.out_shape),
                        **op.params)  # fmt: skip
            return g.reshape(b, s, -1)
        with torch.enable_grad():
            h = torch.zeros(b * s, *op.in_shape, dtype=a.dtype, device=a.device,
                            requires_grad=True)  # fmt: skip
            out = op.apply(h, bias=False)
            (grad,) = torch.autograd.grad(out, h, a.reshape(out.shape))
        return grad.reshape(b, s, -1)

    def _maxpool_back(self, k: int, a: Tensor, bounds: Bounds) -> tuple[Tensor, Tensor]:
        """Relax max-pool node ``k``: below by the input with the largest lower bound,
        above by it too when it dominates its window, else by the window's largest upper
        bound."""
        import torch

        node = self.graph.nodes[k]
        src = node.inputs[0]
        lo, up = (t.reshape(t.shape[0], -1) for t in bounds[src])
        pick, dominant, top = maxpool_relaxation(lo, up, self.windows(k))
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        linear = pos + neg * dominant[:, None]
        const = (neg * torch.where(dominant, 0.0, top)[:, None]).sum(-1)
        a_in = torch.zeros(a.shape[0], a.shape[1], lo.shape[1], dtype=a.dtype, device=a.device)
        a_in.scatter_add_(2, pick[:, None].expand_as(linear), linear)
        return a_in, const

    # -- bounds of every node -------------------------------------------------------------
    def bounds(self, region: Region, method: str = "crown", crown_budget: int = 1_000_000,
               until: int | None = None, output: bool = False) -> Bounds:  # fmt: skip
        """Lower and upper bounds of every node (up to ``until``) over ``region``; with
        ``output`` the last node's by a backward pass too (else by intervals)."""
        import torch

        out: Bounds = []
        nodes = self.graph.nodes
        last = len(nodes) if until is None else until + 1
        for k, node in enumerate(nodes[:last]):
            b = region.x0.shape[0]
            if node.kind == "input":
                lo, hi = region.box()
                out.append((lo.reshape(b, *node.shape), hi.reshape(b, *node.shape)))
                continue
            lo, up = self._interval(k, out)
            exact = self.prefix(k) if self.affine_prefix[k] else None
            if exact is not None:
                low, high = region.affine_range(exact)
                lo, up = low.reshape(lo.shape), high.reshape(up.shape)
            elif (method == "crown" and 2 * node.size * self.upstream[k] <= crown_budget
                  and not self.affine_prefix[k]
                  and (self.pre_activation[k] or (output and k == len(nodes) - 1))):  # fmt: skip
                lo, up = self._crown_unstable(k, region, out, lo, up)
            out.append((lo, torch.maximum(up, lo)))
        return out

    def _crown_unstable(self, k: int, region: Region, out: Bounds, lo: Tensor,
                        up: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Tighten node ``k``'s bounds by a backward pass, for the units whose interval
        bounds straddle 0 in some sample (the others' relaxation is already exact)."""
        import torch

        b = lo.shape[0]
        lo_f, up_f = lo.reshape(b, -1).clone(), up.reshape(b, -1).clone()
        idx = ((lo_f < 0) & (up_f > 0)).any(0).nonzero().squeeze(1)
        if idx.numel() == 0:
            return lo, up
        m = idx.numel()
        sel = torch.zeros(m, lo_f.shape[1], dtype=self.dtype, device=self.device)
        sel[torch.arange(m, device=self.device), idx] = 1.0
        lam, c = self.backward(k, torch.cat([sel, -sel])[None].expand(b, -1, -1), out)
        low = region.minimum(lam, c)
        lo_f[:, idx] = torch.maximum(lo_f[:, idx], low[:, :m])
        up_f[:, idx] = torch.minimum(up_f[:, idx], -low[:, m:])
        return lo_f.reshape(lo.shape), up_f.reshape(up.shape)

    def _interval(self, k: int, out: Bounds) -> tuple[Tensor, Tensor]:
        """Interval bounds of node ``k`` from its inputs' bounds."""
        import torch

        node = self.graph.nodes[k]
        ins = [out[i] for i in node.inputs]
        if node.kind == "affine":
            op = node.op
            assert op is not None
            lo, up = ins[0]
            mid, rad = (lo + up) / 2, (up - lo) / 2
            centre = op.apply(mid)
            return centre - op.apply(rad, absolute=True), centre + op.apply(rad, absolute=True)
        if node.kind == "add":
            los = [s * (lo if s > 0 else up) for s, (lo, up) in zip(node.signs, ins, strict=True)]
            ups = [s * (up if s > 0 else lo) for s, (lo, up) in zip(node.signs, ins, strict=True)]
            return sum(los[1:], los[0]), sum(ups[1:], ups[0])
        if node.kind == "relu":
            return ins[0][0].clamp(min=0), ins[0][1].clamp(min=0)
        lo, up = ins[0]
        b = lo.shape[0]
        win = self.windows(k)
        pad = torch.full((b, 1), -math.inf, dtype=lo.dtype, device=lo.device)
        lo_w = torch.cat([lo.reshape(b, -1), pad], 1)[:, win].max(-1).values
        up_w = torch.cat([up.reshape(b, -1), pad], 1)[:, win].max(-1).values
        return lo_w.reshape(b, *node.shape), up_w.reshape(b, *node.shape)

    # -- the flip rule ------------------------------------------------------------------------
    def certified(self, region: Region, rows: Tensor, rhs: Tensor, groups: Sequence[Sequence[int]],
                  config: BoundConfig) -> Tensor:  # fmt: skip
        """Per sample: whether no alternative can hold anywhere in ``region``. ``rows``
        ``(B, S, n_out)`` / ``rhs`` ``(B, S)``: the rules' rows ``rows @ F >= rhs``;
        ``groups``: the row indices of each alternative (an alternative is ruled out when
        one of its rows cannot hold)."""
        import torch

        last = len(self.graph.nodes) - 1
        inner = "crown" if config.method == "alpha-crown" else config.method
        bounds = self.bounds(region, inner, config.crown_budget, until=last - 1)
        if config.method == "alpha-crown":
            highest = -self._alpha_lower(last, -rows, bounds, region, config.alpha_steps)
        elif config.method == "crown":
            lam, c = self.backward(last, -rows, bounds)
            highest = -region.minimum(lam, c)
        else:
            lo, up = self._interval(last, bounds)
            highest = (rows.clamp(min=0) * up[:, None] + rows.clamp(max=0) * lo[:, None]).sum(-1)
            exact = self.prefix(last) if self.affine_prefix[last] else None
            if exact is not None:
                lam = -rows @ exact.jt.T
                highest = torch.minimum(highest, -region.minimum(lam, -(rows @ exact.c)))
        blocked = highest < rhs
        out = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
        for g in groups:
            out &= blocked[:, list(g)].any(dim=1)
        return out

    def _alpha_lower(self, target: int, spec: Tensor, bounds: Bounds, region: Region,
                     steps: int) -> Tensor:  # fmt: skip
        """Lower bounds of ``spec @ node[target]`` with the ReLUs' lower slopes optimised by
        Adam (α-CROWN, intermediate bounds fixed), starting from CROWN's; every step's
        bound is sound, the best per row is kept."""
        import torch

        alphas: dict[int, Tensor] = {}
        s = spec.shape[1]
        for k, node in enumerate(self.graph.nodes[: target + 1]):
            if node.kind == "relu":
                lo, up = (t.reshape(t.shape[0], -1) for t in bounds[node.inputs[0]])
                start = relu_relaxation(lo, up)[2][:, None].expand(-1, s, -1)
                alphas[k] = start.clone().requires_grad_(True)
        with torch.enable_grad():
            opt = torch.optim.Adam(list(alphas.values()), lr=0.1)
            best = None
            for _ in range(max(steps, 1)):
                lam, c = self.backward(target, spec, bounds, alphas)
                low = region.minimum(lam, c)
                best = low.detach() if best is None else torch.maximum(best, low.detach())
                opt.zero_grad()
                (-low.sum()).backward()
                opt.step()
        assert best is not None
        return best


_PROPAGATORS: weakref.WeakKeyDictionary[Graph, dict[str, Propagator]] = \
    weakref.WeakKeyDictionary()  # fmt: skip


def propagator(graph: Graph, device: Any = "cpu") -> Propagator:
    """The :class:`Propagator` of ``graph`` on ``device`` (cached with the graph, so the
    Jacobian of its affine prefix is computed once)."""
    per_graph = _PROPAGATORS.setdefault(graph, {})
    key = str(device)
    if key not in per_graph:
        per_graph[key] = Propagator(graph, device)
    return per_graph[key]


def relu_relaxation(lo: Tensor, up: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CROWN's linear bounds of ``relu`` on ``[lo, up]``: upper slope and intercept, and
    the lower slope (1 for active units, 0 for dead ones, for unstable ones 1 when
    ``up >= -lo``)."""
    import torch

    active, dead = lo >= 0, up <= 0
    unstable = ~active & ~dead
    width = torch.where(unstable, up - lo, torch.ones_like(up))
    slope_up = torch.where(active, 1.0, torch.where(dead, 0.0, up / width))
    icpt_up = torch.where(unstable, -lo * up / width, torch.zeros_like(up))
    slope_lo = torch.where(active, 1.0, torch.where(dead, 0.0, (up >= -lo).to(up.dtype)))
    return slope_up, icpt_up, slope_lo


def maxpool_relaxation(lo: Tensor, up: Tensor, windows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per window: the input with the largest lower bound (``pick``), whether it dominates
    (its lower bound at least every other upper bound) and the largest upper bound."""
    import torch

    b = lo.shape[0]
    pad = torch.full((b, 1), -math.inf, dtype=lo.dtype, device=lo.device)
    lo_w = torch.cat([lo, pad], 1)[:, windows]
    up_w = torch.cat([up, pad], 1)[:, windows]
    best = lo_w.argmax(-1)
    pick = windows[None].expand(b, -1, -1).gather(2, best[..., None])[..., 0]
    others = up_w.scatter(2, best[..., None], -math.inf).max(-1).values
    dominant = lo_w.gather(2, best[..., None])[..., 0] >= others
    return pick, dominant, up_w.max(-1).values
