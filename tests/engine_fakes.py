"""Tiny problems for every engine strategy, with counters that are independent of the
engine's own (for the budget and batch-independence tests).

Loaded by path (``load()`` in the tests), so it needs no package layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.adapters import CallableAdapter, TorchAdapter
from mmargin.distances import lp
from mmargin.engine.gradient import gradient_search
from mmargin.engine.problem import Problem
from mmargin.engine.spec import DiscreteConfig, GradientConfig
from mmargin.engine.state import SearchState, Streams
from mmargin.goals import Untargeted
from mmargin.protocols import Edit, Encoding, ProblemBase, Ranking
from mmargin.spaces import ContinuousSpace, box


class _Backward(torch.autograd.Function):
    """Identity that counts, on its way back, the rows of each gradient reaching the input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, box: list[int]) -> Tensor:
        ctx.box = box
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        ctx.box[0] += int(grad.shape[0])
        return grad, None


class CountedNet(torch.nn.Module):
    """A module that counts forward rows and backward rows reaching its input."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.forward_rows = 0
        self.backward_rows = [0]

    @property
    def passes(self) -> int:
        return self.forward_rows + self.backward_rows[0]

    def forward(self, x: Tensor) -> Tensor:
        self.forward_rows += int(x.shape[0])
        if torch.is_grad_enabled() and x.requires_grad:
            x = _Backward.apply(x, self.backward_rows)
        out: Tensor = self.net(x)
        return out


def mlp(seed: int = 0, d: int = 6, k: int = 3) -> torch.nn.Module:
    """A small ReLU network (float32) whose classes all show up in the box [0, 1]^d."""
    torch.manual_seed(seed)
    first = torch.nn.Linear(d, 16)
    with torch.no_grad():
        first.weight.mul_(4.0)
        first.bias.copy_(-first.weight @ torch.full((d,), 0.5) + 0.1 * first.bias)
    return torch.nn.Sequential(first, torch.nn.ReLU(), torch.nn.Linear(16, k))


def random_linear(seed: int, d: int, k: int, n: int) -> tuple[torch.nn.Linear, Tensor]:
    """A bias-free linear classifier with Gaussian weights (``k`` classes on ``d`` inputs,
    from its own generator) and ``n`` points well inside the box [0, 1]^d: the exact
    minimal flips of a linear model are closed forms."""
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(d, k)
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=gen))
        model.bias.zero_()
    return model, 0.3 + 0.4 * torch.rand(n, d, generator=gen)


def linear_nearest(
    seed: int, d: int, k: int, n: int
) -> tuple[torch.nn.Linear, Tensor, Tensor, Tensor]:
    """A :func:`random_linear` model and points in float64, their labels and each point's
    highest-scoring other class (the class its L1 flips below drive toward)."""
    model, x = random_linear(seed, d=d, k=k, n=n)
    model, x = model.double(), x.double()
    with torch.no_grad():
        scores = model(x)
    labels = scores.argmax(dim=1)
    target = scores.clone().scatter_(1, labels[:, None], -torch.inf).argmax(dim=1)
    return model, x, labels, target


def knapsack_flip(model: torch.nn.Linear, x: Tensor, label: int, j: int,
                  past: float = 1.01) -> Tensor:  # fmt: skip
    """The closed-form L1 flip in [0, 1] of a linear model toward class ``j``, ``past``
    times the pairwise margin (1 % past the boundary by default; the fractional knapsack,
    best gain per unit first), as a ``(1, d)`` row."""
    w = model.weight.detach()
    with torch.no_grad():
        scores = model(x[None])[0]
    a = (w[label] - w[j]).numpy()
    need = float(scores[label] - scores[j]) * past
    room = np.where(a > 0, x.numpy(), 1 - x.numpy())
    delta = np.zeros_like(a)
    for i in np.argsort(-np.abs(a)):
        move = min(room[i], need / abs(a[i]))
        delta[i], need = -np.sign(a[i]) * move, need - abs(a[i]) * move
        if need <= 0:
            break
    return torch.from_numpy(delta)[None]


def far_box() -> ContinuousSpace:
    """A box out of reach of every flip of :func:`random_linear`'s points (a fresh one: a
    box caches its tensors), so the closed forms below hold."""
    return box(-1e3, 1e3)


def closed_form_flips(model: torch.nn.Linear, x: Tensor, labels: Tensor, dual: float) -> Tensor:
    """``(n, k)``: the smallest flip of each point of a bias-free linear model into each
    class, no box in reach: ``(z_y − z_j) / ‖w_y − w_j‖_q`` with ``q = dual`` the dual norm
    of the distance (2 for L2, 1 for L∞, inf for L1); inf for the point's own label."""
    with torch.no_grad():
        z = model(x)
    w = model.weight.detach()
    gaps = z.gather(1, labels[:, None]) - z  # (n, k): z_y − z_j
    dist = (w[labels][:, None, :] - w[None, :, :]).norm(p=dual, dim=2)  # ‖w_y − w_j‖_q
    ratio = gaps / dist.clamp(min=1e-12)
    ratio[torch.arange(len(x)), labels] = float("inf")
    return ratio


def exact_flip(model: torch.nn.Linear, x: Tensor, labels: Tensor, dual: float = 2.0) -> Tensor:
    """The smallest flip of each point (:func:`closed_form_flips`' nearest class)."""
    return closed_form_flips(model, x, labels, dual).min(dim=1).values


def linear_search(model: torch.nn.Linear, x: Tensor, config: GradientConfig,
                  norm: str = "l2", passes: int = 1000) -> SearchState:  # fmt: skip
    """The untargeted gradient search of ``model``'s points in :func:`far_box`, ``passes``
    passes per sample."""
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    streams = Streams.for_samples(0, [str(i) for i in range(len(x))])
    problem = Problem(model, far_box(), lp(norm), Untargeted(), x, labels)
    return gradient_search(problem, passes, config, streams, model.weight.shape[0])


def spy_runs(monkeypatch: Any, read: Callable[[GradientConfig], object]
             ) -> list[tuple[int, bool, bool, object]]:  # fmt: skip
    """Record every ε-ball run the gradient search makes (patched into
    :mod:`mmargin.engine.gradient`, each still run): its steps, whether it starts from the
    clean input, whether it drives no chosen class, and ``read`` of its settings."""
    import mmargin.engine.gradient as gradient
    from mmargin.engine.epsball import epsball_run

    calls: list[tuple[int, bool, bool, object]] = []

    def spy(*args: Any, **kw: Any) -> None:
        start, against = args[3], args[5] if len(args) > 5 else kw.get("against")
        calls.append((args[1], bool((start == 0).all()), against is None, read(args[2])))
        epsball_run(*args, **kw)

    monkeypatch.setattr(gradient, "epsball_run", spy)
    return calls


def relu_flips(seed: int, n: int) -> tuple[torch.nn.Module, Tensor, Tensor, SearchState]:
    """A random float64 ReLU network (10 inputs, 3 classes), ``n`` inputs in the box
    [0, 1]^10, their labels and a state holding a random corner-of-the-box L1 flip of every
    input that has one (linearisations there miss, so an L1 polish takes many steps)."""
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    net = net.double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    x = 0.2 + 0.6 * torch.rand(n, 10, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        labels = net(x).argmax(dim=1)
    space, distance = box(0.0, 1.0), lp("l1")
    state = SearchState.empty(x)
    for _ in range(30):  # random corners of the box until most inputs have a flip
        corner = space.project(x, torch.randn(n, 10, generator=gen, dtype=torch.float64).sign())
        with torch.no_grad():
            scores = net(x + corner)
        new = (scores.argmax(dim=1) != labels) & ~torch.isfinite(state.best_norm)
        rows = new.nonzero().squeeze(1)
        state.record(rows, distance.norm(corner[rows]), corner[rows], scores[rows])
    return net, x, labels, state


def copy_state(state: SearchState, rows: slice = slice(None)) -> SearchState:
    """The rows ``rows`` of ``state`` (best flips and passes), copied."""
    return SearchState(state.best_delta[rows].clone(), state.best_norm[rows].clone(),
                       state.best_class[rows].clone(), state.queries[rows].clone())  # fmt: skip


def continuous_data(n: int, seed: int = 1, d: int = 6) -> np.ndarray:
    """Points inside the box [0, 1]^d."""
    return np.random.default_rng(seed).uniform(0.2, 0.8, size=(n, d)).astype(np.float32)


def labels_of(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.as_tensor(x)).argmax(dim=1).numpy()


def torch_adapter(net: torch.nn.Module) -> tuple[TorchAdapter, CountedNet]:
    counted = CountedNet(net)
    return TorchAdapter(counted), counted


class CountedCallable:
    """A black box over numpy rows that counts the rows it scores."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net, self.rows = net, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.rows += x.shape[0]
        with torch.no_grad():
            return self.net(torch.as_tensor(x, dtype=torch.float32)).numpy()


def black_box(net: torch.nn.Module) -> tuple[CallableAdapter, CountedCallable]:
    counted = CountedCallable(net)
    return CallableAdapter(counted), counted


# -- discrete: token substitutions --------------------------------------------------------
VOCAB = 30


def token_weights(seed: int = 3) -> np.ndarray:
    w = np.random.default_rng(seed).normal(size=VOCAB)
    w[0] = 0.0
    return w


def groups(seed: int = 4, size: int = 3) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(np.arange(1, VOCAB))
    out: list[list[int]] = [[0]] * VOCAB
    for start in range(0, len(order), size):
        group = [int(t) for t in order[start : start + size]]
        for t in group:
            out[t] = group
    return out


class TokenModel:
    """Bag-of-words scores over token tuples; counts every input it scores."""

    def __init__(self, w: np.ndarray, differentiable: bool = False) -> None:
        self.w, self.differentiable, self.device = w, differentiable, torch.device("cpu")
        self.rows = 0
        self.embedding = torch.as_tensor(
            np.stack([w, -w, np.zeros_like(w)], 1), dtype=torch.float32
        )

    def __call__(self, batch: Sequence[tuple[int, ...]]) -> Tensor:
        self.rows += len(batch)
        s = torch.tensor([float(sum(self.w[t] for t in x)) for x in batch], dtype=torch.float64)
        return torch.stack([torch.zeros_like(s), s], dim=1)

    def points(self, x: Tensor) -> Tensor:
        """Scores of embedded sequences ``(B, T, 3)``: the relaxed view of the same model."""
        self.rows += int(x.shape[0])
        s = x[..., 0].sum(dim=1)
        return torch.stack([torch.zeros_like(s), s], dim=1)


@dataclass
class TokenProblem(ProblemBase):
    tokens: tuple[int, ...]
    groups: Sequence[Sequence[int]]
    model: TokenModel
    ranked: bool = False

    def positions(self) -> list[int]:
        return list(range(len(self.tokens)))

    def candidates(self, position: int) -> list[Edit]:
        word = self.tokens[position]
        return [Edit(position, c, 1.0) for c in self.groups[word] if c != word]

    def apply(self, edits: Sequence[Edit]) -> tuple[int, ...]:
        out = list(self.tokens)
        for e in edits:
            out[e.position] = e.value
        return tuple(out)

    def neutral(self, position: int) -> Edit:
        return Edit(position, 0, 1.0)

    def rank(self, goal: Any, label: int, targets: Any, current: Sequence[Edit]) -> Ranking | None:
        if not self.ranked:
            return None
        tokens = self.apply(current)
        self.model([tokens])  # a forward and a backward pass, counted by the model
        self.model([tokens])
        sign = 1.0 if label == 1 else -1.0
        w = self.model.w
        importance = {p: float(sign * w[tokens[p]]) for p in self.positions()}
        return Ranking(importance=importance, queries=2)

    def size(self) -> float:
        return float(len(self.tokens))


@dataclass
class TokenSpace:
    groups: Sequence[Sequence[int]]
    search_config: DiscreteConfig | None = None
    ranked: bool = False
    name: str = "tokens"
    modality: str = "tokens"

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return [None if len(x) else "empty input" for x in inputs]

    def problem(self, model: Any, x: Any) -> TokenProblem:
        return TokenProblem(tuple(int(t) for t in x), self.groups, model, self.ranked)


@dataclass
class EditCount:
    name: str = "edits"

    def measure(self, x: Any, x_adv: Any, edits: Sequence[Edit]) -> float:
        return float(sum(e.cost for e in edits))


def token_cases(
    n: int, seed: int = 5, length: tuple[int, int] = (3, 7)
) -> tuple[np.ndarray, np.ndarray]:
    """Token tuples (an object array) and their labels under :func:`token_weights`."""
    w = token_weights()
    rng = np.random.default_rng(seed)
    cases: list[tuple[int, ...]] = []
    while len(cases) < n:
        t = tuple(int(v) for v in rng.integers(1, VOCAB, size=int(rng.integers(*length))))
        if abs(sum(w[i] for i in t)) > 1e-3:
            cases.append(t)
    x = np.empty(n, dtype=object)
    x[:] = cases
    return x, np.array([int(sum(w[i] for i in c) > 0) for c in cases])


# -- relaxed: the same tokens through an embedding ----------------------------------------
@dataclass
class _PointModel:
    model: TokenModel
    differentiable: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backward_rows: list[int] = field(default_factory=lambda: [0])

    def __call__(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            x = _Backward.apply(x, self.backward_rows)
        return self.model.points(x)


@dataclass
class RelaxedTokenSpace:
    """Tokens embedded as rows of the model's 3-dim embedding; decoded to the nearest."""

    name: str = "relaxed-tokens"
    modality: str = "tokens"
    point_models: list[_PointModel] = field(default_factory=list)

    def check(self, inputs: Sequence[Any]) -> list[str | None]:
        return [None if len(x) else "empty input" for x in inputs]

    def encode(self, model: Any, x: Any) -> Encoding:
        return Encoding(point=model.embedding[list(x)].numpy().astype(np.float32))

    def continuous_model(self, model: Any) -> _PointModel:
        self.point_models.append(_PointModel(model))
        return self.point_models[-1]

    def decode(
        self, model: Any, x: Any, encoding: Encoding, point: np.ndarray
    ) -> tuple[Any, dict[str, Any]]:
        dist = ((model.embedding.numpy()[None] - point[:, None]) ** 2).sum(-1)
        return tuple(int(t) for t in dist.argmin(axis=1)), {}

    @property
    def backward_rows(self) -> int:
        return sum(m.backward_rows[0] for m in self.point_models)


def leading_linear(lead: float, n: int = 6) -> tuple[Problem, Tensor]:
    """An L1 problem on ``n`` inputs of a three-class linear model in the unit box, class 0
    ahead at every input by ``lead`` per unit of input (far from the boundary for a large
    lead: no row flips within ``l1_slow_after`` steps)."""
    gen = torch.Generator().manual_seed(3)
    model = torch.nn.Linear(32, 3)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 32, generator=gen))
        model.bias.zero_()
        model.weight[0] += lead
    x = torch.rand(n, 32, generator=gen)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    assert bool((labels == 0).all())
    return Problem(model, box(0.0, 1.0), lp("l1"), Untargeted(), x, labels), x
