"""A torch model as a small graph of supported operations: what the MILP and the bound
propagation read.

:func:`mmargin.exact.tracing.trace` runs :func:`torch.fx.symbolic_trace` on a module (any
``nn.Module`` subclass with a ``forward``, not only ``nn.Sequential``), propagates the
shape of one sample through it and keeps, in topological order, nodes of five kinds:

- ``input``: the flat sample;
- ``affine``: ``y = op(h) + bias`` for one :class:`Affine` operation — ``nn.Linear``,
  ``nn.Conv1d``/``nn.Conv2d``, average pooling, eval-mode batch normalisation and
  constant shifts / scalings (input normalisation, the adapter's mean / std) as a
  per-element ``scale``, and reshapes (``flatten``, ``view``, ``reshape``: the flat
  C-order vector does not change);
- ``relu``; ``add`` (residual sums of two nodes, signs allowed: ``a - b``);
- ``maxpool``: each output the maximum of a window of input positions
  (:attr:`Node.windows`).

Anything else (a sigmoid, a multiplication of two tensors, a concatenation, control flow
that fx cannot trace) raises :class:`UnsupportedModel` naming the operation. Parameters
are float64 copies; :meth:`Graph.forward` runs the graph in any dtype (float64 to re-check
a solver's point).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Affine",
    "Graph",
    "Node",
    "UnsupportedModel",
    "chain_layers",
    "graph_from_layers",
]


class UnsupportedModel(ValueError):
    """The model uses an operation the graph has no exact form for (named in the message)."""


@dataclass(frozen=True, eq=False)
class Affine:
    """One affine operation on a per-sample tensor of ``in_shape``.

    ``kind`` is ``linear`` / ``conv1d`` / ``conv2d`` (``weight``, ``bias``, ``params``:
    stride, padding, dilation, groups), ``avgpool`` (``params``: the pooling function's
    keyword arguments), ``scale`` (``y = weight * h + bias``, both broadcast to the
    sample) or ``reshape``.
    """

    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: Tensor | None = None
    bias: Tensor | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def apply(self, h: Tensor, *, bias: bool = True, absolute: bool = False) -> Tensor:
        """``op(h) (+ bias)`` on a batch ``(N, *in_shape)``; ``absolute``: the operation
        with ``|weight|`` (for interval arithmetic), never with a bias."""
        import torch.nn.functional as F

        w: Any = None if self.weight is None else self.weight.to(h)
        if absolute and w is not None:
            w = w.abs()
        b = None if (self.bias is None or not bias or absolute) else self.bias.to(h)
        n = h.shape[0]
        if self.kind == "reshape":
            return h.reshape(n, *self.out_shape)
        if self.kind == "scale":
            assert w is not None
            out = h * w
            return out + b if b is not None else out
        if self.kind == "linear":
            return F.linear(h, w, b)
        if self.kind == "conv1d":
            return F.conv1d(h, w, b, **self.params)
        if self.kind == "conv2d":
            return F.conv2d(h, w, b, **self.params)
        if self.kind == "avgpool":
            fn = self.params["fn"]
            return fn(h, **{k: v for k, v in self.params.items() if k != "fn"})
        raise AssertionError(self.kind)

    def matrix(self) -> np.ndarray:
        """The dense ``(out, in)`` matrix of the operation (without bias), float64."""
        import torch

        d = int(np.prod(self.in_shape))
        eye = torch.eye(d, dtype=torch.float64).reshape(d, *self.in_shape)
        with torch.no_grad():
            cols = self.apply(eye, bias=False).reshape(d, -1)
        return cols.T.numpy().copy()

    def offset(self) -> np.ndarray:
        """The flat bias ``op(0) + bias`` (float64)."""
        import torch

        with torch.no_grad():
            zero = torch.zeros(1, *self.in_shape, dtype=torch.float64)
            return self.apply(zero).reshape(-1).numpy().copy()


@dataclass(frozen=True, eq=False)
class Node:
    """One node: ``kind`` (input, affine, relu, add, maxpool), the indices of its
    ``inputs``, its per-sample ``shape``; ``op`` for affine nodes, ``signs`` of an add's
    inputs, ``windows`` (``(out, k)`` flat input positions, ``-1`` for padding) of a
    max-pool, ``name`` for messages."""

    kind: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    op: Affine | None = None
    signs: tuple[float, ...] = ()
    windows: np.ndarray | None = None
    name: str = ""

    @property
    def size(self) -> int:
        """Entries per sample."""
        return int(np.prod(self.shape))


@dataclass(frozen=True, eq=False)
class Graph:
    """Nodes in topological order (node 0 is the input, the last one the output)."""

    nodes: tuple[Node, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return self.nodes[0].shape

    @property
    def n_outputs(self) -> int:
        """Width of the output vector."""
        return self.nodes[-1].size

    @property
    def hidden_units(self) -> int:
        """ReLU units and max-pool outputs in all (what makes the MILP hard)."""
        return sum(n.size for n in self.nodes if n.kind in ("relu", "maxpool"))

    def forward(self, x: Tensor, *, until: int | None = None) -> list[Tensor]:
        """Every node's value on a batch ``x`` ``(N, *input_shape)`` (up to node ``until``)."""
        import torch

        vals: list[Tensor] = []
        last = len(self.nodes) if until is None else until + 1
        for node in self.nodes[:last]:
            if node.kind == "input":
                vals.append(x.reshape(x.shape[0], *node.shape))
            elif node.kind == "affine":
                assert node.op is not None
                vals.append(node.op.apply(vals[node.inputs[0]]))
            elif node.kind == "relu":
                vals.append(torch.relu(vals[node.inputs[0]]))
            elif node.kind == "add":
                parts = [s * vals[i] for s, i in zip(node.signs, node.inputs, strict=True)]
                vals.append(torch.stack(parts).sum(0))
            else:
                vals.append(maxpool(vals[node.inputs[0]], node))
        return vals

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Float64 outputs of the graph on one flat input."""
        import torch

        xt = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(1, *self.input_shape))
        with torch.no_grad():
            return self.forward(xt)[-1].reshape(-1).numpy().copy()


def maxpool(h: Tensor, node: Node) -> Tensor:
    """A max-pool node on a batch, from its window table."""
    import torch

    assert node.windows is not None
    flat = h.reshape(h.shape[0], -1)
    idx = torch.as_tensor(node.windows, device=h.device)
    pad = torch.full((h.shape[0], 1), -math.inf, dtype=h.dtype, device=h.device)
    vals = torch.cat([flat, pad], dim=1)[:, torch.where(idx < 0, flat.shape[1], idx)]
    return vals.max(dim=2).values.reshape(h.shape[0], *node.shape)


_CHAINS: weakref.WeakKeyDictionary[Graph, Any] = weakref.WeakKeyDictionary()


def chain_layers(graph: Graph) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """The graph as affine layers with a ReLU between them (consecutive affine operations
    merged), or ``None`` when it is not such a chain (adds, max-pools, a ReLU first) or a
    layer would have more than ``10**7`` entries. Cached per graph."""
    if graph not in _CHAINS:
        _CHAINS[graph] = _chain(graph)
    layers: list[tuple[np.ndarray, np.ndarray]] | None = _CHAINS[graph]
    return layers


def _chain(graph: Graph) -> list[tuple[np.ndarray, np.ndarray]] | None:
    kinds = [n.kind for n in graph.nodes[1:]]
    linear = all(n.inputs == (k,) for k, n in enumerate(graph.nodes[1:]))
    if not linear or not set(kinds) <= {"affine", "relu"} or kinds[0] != "affine":
        return None
    if any(n.kind == "affine" and n.size * graph.nodes[i].size > 10**7
           for i, n in enumerate(graph.nodes[1:])):  # fmt: skip
        return None
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    w: np.ndarray | None = None
    b: np.ndarray | None = None
    d = graph.nodes[0].size
    for k, node in enumerate(graph.nodes[1:], start=1):
        if node.inputs != (k - 1,):
            return None
        if node.kind == "affine":
            assert node.op is not None
            m, c = node.op.matrix(), node.op.offset()
            w, b = (m, c) if w is None or b is None else (m @ w, m @ b + c)
        elif node.kind == "relu" and w is not None and b is not None:
            layers.append((w, b))
            w = b = None
        else:
            return None
    if w is None or b is None:
        return None
    layers.append((w, b))
    return layers if layers[0][0].shape[1] == d else None


def graph_from_layers(layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> Graph:
    """Affine layers with a ReLU between them (:data:`mmargin.exact.nets.Layers`) as a graph
    on flat inputs."""
    import torch

    d = int(np.asarray(layers[0][0]).shape[1])
    nodes = [Node("input", (), (d,), name="input")]
    for k, (w, b) in enumerate(layers):
        wt = torch.as_tensor(np.asarray(w, dtype=np.float64))
        bt = torch.as_tensor(np.asarray(b, dtype=np.float64).ravel())
        op = Affine("linear", (wt.shape[1],), (wt.shape[0],), wt, bt)
        nodes.append(Node("affine", (len(nodes) - 1,), op.out_shape, op=op, name=f"layer{k + 1}"))
        if k < len(layers) - 1:
            nodes.append(Node("relu", (len(nodes) - 1,), op.out_shape, name=f"relu{k + 1}"))
    return Graph(tuple(nodes))
