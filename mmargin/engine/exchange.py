"""An L1 exchange of the best flip: linearised knapsack walks from other starts than the
best flip's own linearisation (other supports, the clean input, another class).

The knapsack polish (:mod:`mmargin.engine.polish`) walks to the minimal L1 flip of the
model's linearisation at the best flip; iterated, it stops where the linearisation at its
own flip proposes that same flip. On a piecewise-linear model that is a fixed point of the
flip's activation region, not the minimum: moving another coordinate switches units on
that raise the gains of the coordinates moved with it, so a flip on another support, in
another region, can be smaller although no linearisation at the found one sees it.
Measured on the tuning digits MLP (64-40-40-10) against MILP-exact L1 margins, 1000 passes:
of 299 points beyond the 50 stored ones, 7 were found ≥ 1.5 % above exact, and the five
of them looked into were such fixed points (digits-test-0410: 1.076 × exact, found support
{8, 38, 41}, exact {5, 38, 41, 53}, 7 of the 80 ReLUs apart; the linearisation at the found
flip proposes 1.076 again), one of them in another class (digits-test-1024: found class 7
at 1.156 ×, exact class 5; the knapsack toward 5 linearised at the found flip is 1.009 ×).
Three of the seven had no step left after their planned runs.

Each round is a walk of :data:`ROUND` steps: a linearisation of the pairwise loss toward a
class at its start, then steps that each move to the knapsack point of the current
linearisation (:func:`~mmargin.engine.polish.knapsack`, from the clean input, a little past
the linearised boundary, further after a step that did not flip; FAB's projection step for
L1, without its bias to the clean input) and linearise there. Every verified flip smaller
than the best is recorded. The rounds, in order (:data:`KINDS`), each from the flip the
exchange began with:

- ``drop`` (twice): the best flip without the coordinate that carries the most of its L1
  norm (then the second most), that coordinate's room set to 0 for the whole walk, toward
  the best flip's class;
- ``clean``: from the clean input toward the best flip's class;
- ``class``: toward the class whose linearised knapsack flip at the best flip is the
  smallest, among the first :data:`CHOICES` candidate classes of the search's ranking other
  than the best flip's (its one forward and :data:`CHOICES` backward passes at the best flip
  are the walk's first linearisation).

A ``keep`` round (linearised at the best flip: of its support only the coordinate with the
best gain per unit of L1 cost kept, the others left out for the whole walk) runs after the
polish on the steps still left (:mod:`mmargin.engine.leftover`): of the 349 MILP points it
changed one, the stored set's worst (digits-test-0119, 1.0201 × exact, found support
{18, 19, 26, 30}, exact {21, 30}: 1.0009 ×), and no other.

A ``next`` round (from the clean input toward the class the next probe would have driven
toward: the first ranked class after the first run's and the probed ones,
:func:`~mmargin.engine.passes.next_class`) runs on L1 *before* the polish, where a sample's
unspent steps pay for it and still leave the polish its fewest steps
(:mod:`mmargin.engine.leftover`; ``GradientConfig.next_class``). The probes cover the first
run's class and the nearest others by first-order distance at the clean input (three at
1000 passes, two under ~800), and on a ReLU net the nearest class can lie beyond them: on
the second tuning digits MLP (``tune_digits_mlp``, 64-48-24-10; 120 MILP points, 1000
passes) digits-test-0034 was found at 1.1025 × exact in class 1 (first run class 8, probes
1, 5, 2), the exact flip in class 4, ranked fifth (first-order 1.69 against 1.36 for class
1; its linearised knapsack flip 2.06 at the clean input and 3.14 at the found flip, so no
``class`` round would pick it), while four knapsack steps from the clean input toward it
reach 1.271 and the polish after it 1.0006 × exact. The sample had 16 unspent steps, all of
which the polish took before (finding nothing). With the round: max 1.1025 → 1.0028, median
1.00013 (unchanged), share above 1.001 5.8 → 5.0 %; the shipped digits_mlp's 50 stored
points unchanged (median 1.00011, max 1.0025). On 300 points of ``tune_digits_mlp`` (297
proven; the 180 after the first 120 solved only after the round was designed) it also took
digits-test-0749 from 1.0643 to 1.0004 × (the same case: class 7, ranked fifth, never
probed): max 1.1402 → 1.1402, share above 1.001 5.1 → 4.4 %, median 1.00014. The max,
digits-test-0499, is a flip in the right class on the wrong support ({8, 38} against the
exact {6, 38}); the ``clean`` round reaches 1.0014 × but the sample has no step left for
it. Walking ``clean`` before the polish as well (the polish of a sample with 16 steps left
keeping 4) fixed it but left two others above exact by 11 % and 1.8 % (digits-test-0853,
0442). On the MNIST tuning models (L1, 200 images, pooled with ALMA / FMN / FAB and every
run; 250 passes unchanged, no sample has the steps): at 1000 passes mnist_cnn 0.9937 →
0.9943, tune_mlp 0.9988 → 0.9990 (images 100–199 0.9988 → 0.9994), tune_cnn_fgsm 0.8848 →
0.8848 (990 / 1010: 0.8974 / 0.8951, both unchanged), tune_cnn_bn 0.9789 → 0.9787 (990 /
1010: 0.9715 → 0.9715, 0.9721 → 0.9720; the polish of a sample with 16 steps left has 10:
2–3 of its samples end 1–3 % higher), 2–6 more passes per sample; at 500 passes mnist_cnn
0.9840 → 0.9843, tune_mlp 0.9937 → 0.9960 (images 100–199 0.9906 → 0.9957), tune_cnn_bn
0.9526 → 0.9530, tune_cnn_fgsm unchanged (0.8422). Process CPU time of tune_mlp's L1 search
at 1000 passes (200 images, 4 alternating pairs in one process): median 3.73 → 3.77 s.

The rounds' point is the flip's support and region, not its last digit: the polish that
follows (and the driver's line search) take back the overshoot.

The rounds are independent walks from the same start, so all rounds of all samples walk
in one batch (a sample once per round it runs): one model call per step for all of them
(the ``class`` round's first linearisation apart), where one walk per round paid a
step's fixed cost once per round and step (on an MNIST MLP at 1000 passes 30 model calls
became 7); each step records its smaller flips round by round, in the rounds' order, so
the flips kept are those of one walk per round (``tests/test_exchange_l1.py``).

It runs on the steps a sample's runs left unspent (:mod:`mmargin.engine.leftover`), each
sample as many whole rounds as its own steps pay for (:func:`rounds_paid`), and records only
smaller verified flips, so it never makes a result worse nor spends a pass the budget does
not have: by default after the polish, on what the polish left.

With ``GradientConfig.exchange_reserve`` (off by default) a long L1 search keeps
:data:`RESERVE` steps of its last refinement for it and runs it before the polish
(:func:`reserved_steps`; the polish takes back the rounds' overshoot, the ``keep`` round
runs after it): on the digits MLP the samples whose runs spent every step were the tail.
Measured at 1000 passes (L1, found / exact against the MILP; stored 50 / 150 / 149 extra
points / 146 points not looked at while designing): max 1.0009 / 1.0052 / 1.0098 / 1.0829
and share above 1.001 0 / 3.3 / 2.0 / 3.4 % with the reserve, 1.0025 / 1.0267 / 1.1558 /
1.0829 and 2.0 / 4.7 / 4.7 / 6.2 % without (1.0201 / 1.0762 / 1.1558 / 1.0829 and 4.0 /
8.7 / 6.0 / 7.5 % before the exchange). But the shorter refinement costs on the
FGSM-short robust CNN (200 images, pooled with the peers and every run): optimality lower
at each of 980 / 990 / 1000 / 1010 / 1020 passes, mean 0.916 → 0.909 (images 100–199
0.858 → 0.844; per-sample geometric mean of the distances 1.0067 and 1.0056 at 990 and
1010), while tune_cnn_fgsm moved within its chaos (mean of 990–1010 0.8665 → 0.8654) and
mnist_cnn gained (0.9914 → 0.9924), so it is off by default. Taking the reserve out of
the L1 Lagrangian run instead (70 → 44 steps at 1000 passes) kept the digits figures and
lost too: tune_cnn_fgsm_short lower at each of the five budgets (mean 0.913 → 0.907 in a
pool with all these runs), tune_cnn_fgsm 0.861 → 0.853 (990–1010). Without it (the default) the
plan is unchanged: at 1000 passes mnist_cnn 0.9905 → 0.9909, tune_cnn_fgsm 0.8567 and
tune_cnn_fgsm_short 0.9247 → 0.9248, 500 and 250 passes unchanged (±0.0001).

A longer walk of FAB's own kind (session 15, not kept): from the clean input toward the
best flip's class, each step a mix of the knapsack projections onto the linearised boundary
from the current point and (weight ≤ 0.1) from the clean input, 5 % past it, a flip pulled
back to 0.9 of itself. At 1000 passes the worst samples of the robust CNNs (> 1.05 × the
pool best, 15–18 of images 0–99) are half in the best flip's class, where FAB's 90
iterations reach 1.2–1.7 × smaller flips on tune_cnn_fgsm_short. Offline, on the search's
final flips, per sample the smaller of the two: tune_cnn_fgsm_short 0.955 → 0.962 / 0.975
with 60 / 100 walk steps, tune_cnn_bn 0.983 → 0.986 (the walk alone 0.62 and 0.91: it needs
its length; with 30 steps nothing on the FGSM CNN; from the best flip it stays there). Its
60 steps taken from the last refinement (126 → 67) lost: 200 images @1000, tune_cnn_bn
0.9812 → 0.9812, tune_cnn_fgsm_short 0.9697 → 0.9676 (second half 0.9544 → 0.9490).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmargin.engine.lagrangian_plan import lagrangian_steps, second_steps
from mmargin.engine.passes import probe_classes, search_legs, toward
from mmargin.engine.polish import OVERSHOOT, POLISH_MIN_STEPS, knapsack, linearise, room
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState
from mmargin.protocols import ModelAdapter, Space

__all__ = [
    "CHOICES",
    "KINDS",
    "RESERVE",
    "ROUND",
    "exchange_run",
    "reserved_steps",
    "rounds_paid",
    "sparse_reserve",
]

ROUND = 6
"""Steps of one walk: its first linearisation and five knapsack steps (with four,
digits-test-0410 stayed at 1.076 × exact; five and eight reached it)."""
CHOICES = 4
"""Candidate classes the ``class`` round compares at the best flip."""
KINDS = ("drop", "drop", "clean", "class")
"""The rounds, in the order a sample runs them as far as its steps pay."""
COST = {"drop": ROUND, "clean": ROUND, "class": ROUND + CHOICES // 2, "keep": ROUND, "next": ROUND}
"""Each kind of round's steps (2 passes each): the ``class`` round's first linearisation
is one forward and ``CHOICES`` backward passes instead of one of each."""
COSTS = tuple(COST[kind] for kind in KINDS)
RESERVE = sum(COSTS)
"""Steps a long L1 search keeps for the exchange out of its last refinement
(:func:`reserved_steps`)."""

SPARSE_RESERVE = COST["next"] + RESERVE + POLISH_MIN_STEPS
"""Steps a sparse flip's sample has for the exchange (:func:`sparse_reserve`): the ``next``
round, the four rounds of :data:`KINDS` and the polish's fewest after them."""


def reserved_steps(steps: int, p: float, config: GradientConfig) -> int:
    """Steps an untargeted class-aware search of ``steps`` steps on the Lp distance ``p``
    keeps for the exchange out of its last refinement: :data:`RESERVE` on L1 (with
    ``config.unspent_polish`` and ``config.exchange_reserve``) when that refinement is at
    least four times as long (1000 passes on a 10-class model: 120 steps), else none (a
    short refinement needs its length). Such a search runs the exchange before the polish;
    others the polish first."""
    if p != 1.0 or not (config.unspent_polish and config.exchange_reserve):
        return 0
    lagrange = lagrangian_steps(steps, p, config)
    second = second_steps(steps, p, config) if lagrange else 0
    plan = search_legs(steps, p, config, lagrange + second)
    long = bool(plan) and plan[-1].kind == "refine" and plan[-1].steps >= 4 * RESERVE
    return RESERVE if long else 0


def sparse_reserve(
    leg_steps: int, p: float, config: GradientConfig, state: SearchState, labels: Tensor,
    unspent: Tensor,
) -> Tensor | None:  # fmt: skip
    """Per sample, the steps an L1 search's last refinement (of ``leg_steps`` steps) keeps
    for the exchange: for a sample whose best flip before it moves at most
    ``config.exchange_sparse`` coordinates (0: off), what its ``unspent`` steps (those its
    runs so far left) lack of :data:`SPARSE_RESERVE`; none where the refinement is shorter
    than twice that (250 passes), or with ``exchange_reserve`` (which keeps steps for every
    sample). ``None`` where no sample keeps any.

    A flip on a few coordinates is the case the exchange is for: the exact L1 flips of a
    ReLU net in a box move a few coordinates, mostly to a bound, and the search's own can
    sit on another such support or in another class (:mod:`mmargin.engine.exchange`), which
    an ε-ball refinement, stepping along the flip's gradient, does not leave, while its last
    steps only polish the flip's last digits. Where the probes ran to their ends the
    exchange had no step. ``tune_digits_mlp``, L1 found / exact against the 297 proven MILP
    points of ``bench/results/exact_ratio_tune_digits_mlp_l1_300.json`` (median / max / share
    above 1.001 / above 1.02), without → with (``exchange_sparse`` 4): 500 passes 1.00027 /
    1.1408 / 10.8 % / 3.4 % → 1.00030 / 1.0879 / 5.1 % / 0.7 % (digits-test-0499, 0853:
    right class, support {8, 38} / {8, 6} against the exact {6, 38}; 0865, 0834, 0885; the
    two left, 0034 and 0749, flip in a class ranked past the probes); 1000 passes 1.00019 /
    1.0047 / 4.4 % / 0 → 1.00025 / 1.0028 / 4.7 % / 0. Reserving a flat :data:`RESERVE` +
    one round whatever the sample had unspent, and with no polish step after the rounds,
    gave 1.00019 / 1.0033 / 5.7 % at 1000 (the refinement's last digits lost). The
    evaluation digits MLP, run once the rule was merged (its 49 proven L1 points, 1000
    passes): max 1.0643 → 1.0084 (digits-test-0162, a sparse flip, 1.0643 → under 1.001),
    median 1.00012 both, share above 1.001 10 % → 6 %."""
    if p != 1.0 or config.exchange_sparse <= 0 or not config.unspent_polish:
        return None
    if leg_steps < 2 * SPARSE_RESERVE or config.exchange_reserve:
        return None
    support = (state.best_delta.flatten(1) != 0).sum(dim=1)
    sparse = state.flipped_away(labels, None) & (support <= config.exchange_sparse)
    if not bool(sparse.any()):
        return None
    need = (SPARSE_RESERVE - unspent).clamp(min=0)
    keep = torch.where(sparse, need, torch.zeros_like(need))
    return keep if bool(keep.any()) else None


def rounds_paid(lengths: Tensor, kinds: tuple[str, ...] = KINDS) -> Tensor:
    """How many of the rounds ``kinds``, in order, ``lengths`` steps pay for (per sample)."""
    paid = torch.zeros_like(lengths)
    total = 0
    for cost in (COST[kind] for kind in kinds):
        total += cost
        paid += (lengths >= total).to(paid.dtype)
    return paid


def _nearest_class(
    model: ModelAdapter, space: Space, x: Tensor, labels: Tensor, delta: Tensor,
    candidates: Tensor, weights: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """At ``x + delta``: per sample the class of ``candidates`` (``(B, K)``) whose
    linearised knapsack flip is the smallest (one unreachable is never chosen unless all
    are), the pairwise loss toward it and its gradient. One forward, ``K`` backward passes."""
    d = delta.detach().clone().requires_grad_(True)
    scores = model(x + d)
    k = candidates.shape[1]
    costs, losses, grads = [], [], []
    for j in range(k):
        loss = toward(scores, labels, candidates[:, j])
        (grad,) = torch.autograd.grad(loss.sum(), d, retain_graph=j < k - 1)
        grad = torch.nan_to_num(grad)
        g = grad.flatten(1)
        clean = loss.detach() - (g * d.detach().flatten(1)).sum(dim=1)
        step = knapsack(room(space, x, grad), g, weights, clean)
        reach = -(g * step).sum(dim=1) >= clean * (1 - 1e-6)
        cost = (step.abs() * weights).sum(dim=1)
        costs.append(torch.where(reach, cost, torch.full_like(cost, torch.inf)))
        losses.append(loss.detach())
        grads.append(grad)
    pick = torch.stack(costs, dim=1).argmin(dim=1)
    rows = torch.arange(x.shape[0], device=x.device)
    return (candidates[rows, pick], torch.stack(losses, dim=1)[rows, pick],
            torch.stack(grads, dim=1)[rows, pick])  # fmt: skip


def exchange_run(
    problem: Problem,
    state: SearchState,
    weights: Tensor,
    lengths: Tensor,
    ranked: Tensor | None = None,
    only: Tensor | None = None,
    kinds: tuple[str, ...] = KINDS,
    untried: Tensor | None = None,
) -> None:
    """The exchange rounds on every sample's best flip, each sample as many of
    :data:`KINDS` as its ``lengths`` steps pay for (:func:`rounds_paid`); ``weights`` each
    coordinate's L1 cost per unit; ``ranked`` the search's candidate classes per sample,
    nearest first (without them no ``class`` round); ``only`` the samples to consider (all
    by default); ``untried`` per sample the class a ``next`` round walks toward (``-1``:
    none; without it no ``next`` round). Each smaller verified flip is recorded in
    ``state``."""
    chosen = state.flipped_away(problem.labels, only)
    flat_w = weights.flatten(1)
    cost = (state.best_delta.flatten(1).abs() * flat_w).detach()
    support = (cost > 0).sum(dim=1)
    rounds = torch.where(chosen, rounds_paid(lengths, kinds), torch.zeros_like(lengths))
    if not bool((rounds > 0).any()):
        return
    # every round starts from the flip the exchange began with, toward its class
    start = state.best_delta.clone()
    start_class = state.best_class.clone()
    order = cost.argsort(dim=1, descending=True)  # the coordinates carrying most first
    walks: list[tuple[str, Tensor, int]] = []  # each round's kind, rows, coordinates dropped
    drops = 0
    for r, kind in enumerate(kinds):
        run = rounds > r
        if kind == "drop":
            run &= support > drops  # a coordinate to leave out
        elif kind == "keep":
            run &= support > 1  # coordinates to leave out, one to keep
        elif kind == "class" and ranked is None:
            continue
        elif kind == "next":
            if untried is None:
                continue
            run &= (untried >= 0) & (untried != start_class)
        rows = run.nonzero().squeeze(1)
        if kind == "drop":
            drops += 1
        if rows.numel():
            walks.append((kind, rows, drops))
    if walks:
        _walk(problem, state, walks, start, start_class, order, cost, flat_w, ranked, untried)


def _walk(
    problem: Problem, state: SearchState, walks: list[tuple[str, Tensor, int]], start: Tensor,
    start_class: Tensor, order: Tensor, cost: Tensor, flat_w: Tensor, ranked: Tensor | None,
    untried: Tensor | None = None,
) -> None:  # fmt: skip
    """Every round of :func:`exchange_run` (``walks``: kind, rows, coordinates dropped so
    far) in one batch of all their rows, a sample once per round it runs: one model call
    per step for all of them (the ``class`` round's first linearisation apart), where one
    walk per round paid a step's fixed cost once per round. Each row's arithmetic is its
    own; each step's smaller flips are recorded round by round, in the rounds' order."""
    model, space, distance, x = problem.model, problem.space, problem.distance, problem.x
    rows = torch.cat([w[1] for w in walks])
    ends = torch.tensor([w[1].numel() for w in walks]).cumsum(0).tolist()
    spans = list(zip([0, *ends[:-1]], ends, strict=True))
    n = rows.numel()
    sub = problem.rows(rows)
    xi, ci = sub.x, start_class[rows]
    keep = torch.ones(n, flat_w.shape[1], dtype=x.dtype, device=x.device)
    clean_rows, class_rows, keep_rows = [], [], []
    for (kind, own, drops), (a, b) in zip(walks, spans, strict=True):
        if kind == "drop":
            keep[torch.arange(a, b, device=x.device), order[own, drops - 1]] = 0.0
        elif kind in ("clean", "next"):
            clean_rows.append(torch.arange(a, b, device=x.device))
            if kind == "next" and untried is not None:
                ci[a:b] = untried[own]
        elif kind == "class":
            class_rows.append(torch.arange(a, b, device=x.device))
        elif kind == "keep":
            keep_rows.append(torch.arange(a, b, device=x.device))
    base = space.project(xi, start[rows] * keep.view_as(xi))
    if clean_rows:
        base[torch.cat(clean_rows)] = 0.0
    loss = torch.empty(n, dtype=x.dtype, device=x.device)
    grad = torch.empty_like(xi)
    chosen = torch.cat(class_rows) if class_rows else None
    plain = torch.ones(n, dtype=torch.bool, device=x.device)
    if chosen is not None and ranked is not None:
        plain[chosen] = False
        others = probe_classes(ranked[rows[chosen]], ci[chosen], CHOICES)
        picked = sub.rows(chosen)
        c_ci, c_loss, c_grad = _nearest_class(model, space, picked.x, picked.labels,
                                              base[chosen], others, flat_w)  # fmt: skip
        ci[chosen], loss[chosen], grad[chosen] = c_ci, c_loss, c_grad
        paid = torch.full_like(rows[chosen], 1 + others.shape[1])  # one forward, K backward
        state.queries.index_add_(0, rows[chosen], paid)
    lin = plain.nonzero().squeeze(1)
    if lin.numel():
        _, p_loss, p_grad = linearise(sub.rows(lin), ci[lin], base[lin])
        loss[lin], grad[lin] = p_loss, p_grad
        state.queries.index_add_(0, rows[lin], torch.full_like(rows[lin], 2))
    if keep_rows:
        # linearised at the best flip: of its support, keep only the coordinate with the
        # best gain per unit of L1 cost, leave out the others, walk from there
        kept = torch.cat(keep_rows)
        used = cost[rows[kept]] > 0
        gain = grad[kept].flatten(1).abs() / flat_w
        gain = torch.where(used, gain, torch.full_like(gain, -1.0))
        only = (~used).to(x.dtype)
        only[torch.arange(kept.numel(), device=x.device), gain.argmax(dim=1)] = 1.0
        keep[kept] = only
    keep = keep.view_as(xi)
    twice = torch.full_like(rows, 2)
    over = torch.full((n,), OVERSHOOT, dtype=x.dtype, device=x.device)
    for _ in range(ROUND - 1):
        g = grad.flatten(1)
        clean = loss - (g * base.flatten(1)).sum(dim=1)  # the linearised loss at x
        step = knapsack(room(space, xi, grad, keep), g, flat_w, clean * (1 + over))
        base = space.project(xi, step.view_as(xi))
        scores, loss, grad = linearise(sub, ci, base)
        state.queries.index_add_(0, rows, twice)
        norms = distance.norm(base)
        adv = sub.is_adversarial(scores)
        better = adv & (norms < state.best_norm[rows])
        if bool(better.any()):  # round by round: a sample's later rounds see its new best
            for a, b in spans:
                won = better[a:b] & (norms[a:b] < state.best_norm[rows[a:b]])
                if bool(won.any()):
                    state.record(rows[a:b][won], norms[a:b][won], base[a:b][won],
                                 scores[a:b][won])  # fmt: skip
        over = torch.where(adv, over, (2 * over).clamp(max=1.0))
