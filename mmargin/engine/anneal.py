"""The cosine schedules of an ε-ball run (:mod:`.epsball`): its step share α and ε factor
γ at each step, per run or per row over the row's own length, with the L1 rows' own start
(:func:`schedule_start`), the switch of slow rows to it and their restart at a late first
flip."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.engine.spec import GradientConfig

__all__ = ["Anneal", "Extend", "Factor", "schedule_start"]


def _cosine(k: int, steps: int, start: float, end: float) -> float:
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * k / max(steps, 1)))


def schedule_start(p: float, config: GradientConfig) -> tuple[float, float]:
    """The first step share α and ε factor γ of an ε-ball run on the Lp distance ``p``:
    ``config.alpha_init_l1`` and ``config.gamma_init_l1`` on L1, otherwise
    ``config.alpha_init`` and ``config.gamma_init`` (both anneal to their ``_final``). With
    ``config.l1_slow_after`` > 0 an L1 run starts as the others do and only a row without
    a flip in the run after that many steps switches to the L1 start (``Anneal.switched``;
    on the cosine of the L1 start from that step on), and with ``config.l1_slow_kept`` > 0
    only if its loss (the margin to the flip) at the step before is still above that share
    of its loss at the run's first step (``Anneal.slow``): a row that closes in on its
    flip keeps its schedule. By default after 10 steps, α 0.5, γ 0.3, share 0.5 (below).

    On L1 the step length α·ε is an L2 length (:func:`mmargin.protocols.l2_scale`: the
    ball's widest point, one coordinate moved by ε), far longer than the L2 size of a
    flip spread over many coordinates in a box: with α = 1 each of a run's first steps
    replaced the perturbation by the box-clipped last gradient (on the FGSM-trained tuning
    CNN, 250 passes, a sample's L1 norm stayed at 7–14 while ε grew from 13 to 50 over 34
    steps; its first flip came at step 34 of 38). And with γ = 0.05 annealed to 0.001 a
    run of 38 steps can shrink ε by at most ~×0.4, so a first flip at several times the
    minimum stays there. At 250 passes the first run's median first flip came at step 26
    of 38 on both FGSM-trained CNNs (12 on tune_cnn_bn, 6 on mnist_cnn, 2 on tune_mlp,
    where 3.5 % of the samples had none by step 8).

    The L1 start for every row from the first step (α 0.5, γ 0.3; L1, images 0–199,
    pooled with ALMA, FMN, FAB and every run) gained much on the CNNs (tune_cnn_fgsm @250
    0.555 → 0.764, tune_cnn_fgsm_short 0.658 → 0.842, tune_cnn_bn and mnist_cnn up at
    250/500/1000) but lost on the MLPs, where the first flips come within 2 steps and the
    long steps find the nearer class: tune_mlp 0.9958 → 0.9940 @500, 0.9986 → 0.9968 @1000
    (its second half by 0.003–0.004 at every budget 240–1010: #100 ×1.29–1.39, #147, #136
    settled in a farther class), tune_digits_mlp found/exact L1 max 1.0028 → 1.0884, the
    linear oracle of ``tests/test_engine_oracles.py`` 1.068 (> 1.05). α alone (γ 0.05) or
    γ alone (0.2, α 1) lost on tune_cnn_bn @250 (γ alone 0.939 → 0.889); α 0.7 or 1 with
    γ 0.3 and the start on the first run only or on the other runs only still lost on
    tune_mlp. Switching only the slow rows, after 8 / 10 / 12 / 16 steps (tune_mlp @1000
    against 0.9988, tune_cnn_fgsm @250 against 0.6159, one pool): 0.9982 / 0.9988 / 0.9987
    / 0.9988 and 0.7485 / 0.7196 / 0.6903 / 0.6401 (the start for all rows: 0.8081).
    With the switch after 10 steps (one pool of every run; all (halves 0–99 / 100–199),
    before → after): tune_cnn_fgsm @250 / 500 / 1000 0.5459 / 0.7456 / 0.8407 → 0.6503 /
    0.8210 / 0.8809, tune_cnn_fgsm_short 0.6540 / 0.8120 / 0.9260 → 0.7828 / 0.8899 /
    0.9441 (every half up), tune_mlp 0.9858 / 0.9956 / 0.9985 → 0.9862 / 0.9957 / 0.9986
    (no half down), the digits MLPs' found / exact L1 unchanged (digits_mlp median 1.00011,
    max 1.0025; tune_digits_mlp --stored median 1.00013, max 1.0028); but tune_cnn_bn
    @1000 0.9756 (0.9783 / 0.9532) → 0.9715 (0.9688 / 0.9546) (@250 / 500 up: 0.9333 /
    0.9473 → 0.9454 / 0.9558) and mnist_cnn @250 0.9715 (0.9685 / 0.9667) → 0.9712 (0.9738
    / 0.9584) (@500 / 1000 up). Over three budgets the whole gains and one half still loses:
    tune_cnn_bn 990–1010 0.9674 (0.9695 / 0.9393) → 0.9687 (0.9666 / 0.9499), mnist_cnn
    240–260 0.9714 (0.9692 / 0.9653) → 0.9718 (0.9717 / 0.9624); tune_cnn_bn moved 41
    samples up and 46 down by over 1 % @1000.

    The loss test (``l1_slow_kept`` 0.5: a row switches only while its loss is above half
    its first-step loss, so a row that flips late but closes in keeps its long steps)
    keeps the robust CNNs' gains and drops those losses (one pool of every run, ALMA, FMN,
    FAB; before → after): tune_cnn_fgsm @250 / 500 / 1000 0.4799 / 0.6778 / 0.7779 →
    0.5759 / 0.7585 / 0.8236 (without the test 0.5817 / 0.7586 / 0.8226), tune_cnn_fgsm_short
    0.6532 / 0.8111 / 0.9249 → 0.7815 / 0.8908 / 0.9441 (every half up); mnist_cnn 0.9714
    (0.9684 / 0.9666) / 0.9814 / 0.9909 → 0.9734 (0.9721 / 0.9671) / 0.9831 / 0.9917
    (second halves up, first halves @500 / 1000 −0.0009 / −0.0008; 240 / 260 up);
    tune_cnn_bn 0.9298 / 0.9437 / 0.9719 (0.9744 / 0.9471) → 0.9341 / 0.9451 / 0.9717
    (0.9730 / 0.9488), at 990 / 1010 0.9647 / 0.9652 → 0.9679 / 0.9725 (every half up);
    tune_mlp bit-identical; the digits MLPs' found / exact L1 unchanged (digits_mlp median
    1.00011, max 1.0025; tune_digits_mlp --stored median 1.00013, max 1.0028). On the L2
    PGD-trained tune_cnn_pgd (its own pool of both settings' runs, no peers) it is mixed:
    @240 / 250 / 260 0.9357 / 0.9413 / 0.9429 → 0.9386 / 0.9355 / 0.9417 (mean 0.9400 →
    0.9386; its halves 0.9399 / 0.9032 → 0.9404 / 0.9056), @490 / 500 / 510 0.9661 /
    0.9673 / 0.9656 → 0.9699 / 0.9701 / 0.9681 but the second half 0.9473 / 0.9481 /
    0.9482 → 0.9475 / 0.9475 / 0.9462, @990 / 1000 / 1010 0.9839 / 0.9824 / 0.9848 →
    0.9845 / 0.9855 / 0.9870 (halves 0.9824 / 0.9727 → 0.9841 / 0.9792 as means).

    The restart (``l1_slow_restart``, session 15; ``Anneal.restarted``): at 100 passes an
    L1 search is one run of ~41 steps, and a switched row's ε grew ×1.27 per step (to ~17×
    its final flip on tune_cnn_fgsm_co) while its first flip came at step ~25, at ~4.5× the
    final norm, where the switch's cosine (γ ≤ 0.1) could no longer shrink it (there 44 of
    140 switched rows ended >10 % above the run without the switch; the evaluation set's
    FGSM CNN lost @100 0.511 → 0.354). A switched row whose first flip comes in the second
    half of its run restarts γ from ``gamma_init_l1`` there, annealed over its steps left.
    One pool of every run, ALMA, FMN, FAB; 200 images, all (halves 0–99 / 100–199), the
    switch alone → with the restart: tune_cnn_fgsm @100 / 250 / 500 / 1000 0.5697 /
    0.6314 / 0.8113 / 0.8751 → 0.6549 / 0.6620 / 0.8222 / 0.8777 (@1000 0.8749 / 0.8288 →
    0.8734 / 0.8321), tune_cnn_fgsm_short 0.7204 / 0.7966 / 0.9047 / 0.9564 → 0.8325 /
    0.8364 / 0.9149 / 0.9569 (@1000 0.9515 / 0.9293 → 0.9494 / 0.9333), tune_cnn_pgd
    0.8785 / 0.9396 / 0.9742 / 0.9896 → 0.8906 / 0.9434 / 0.9782 / 0.9918, tune_cnn_bn
    0.8691 / 0.9407 / 0.9518 / 0.9785 → 0.8736 / 0.9396 / 0.9564 / 0.9789 (@250 0.9379 /
    0.9032 → 0.9376 / 0.9001; over 240 / 250 / 260, its own pool, halves 0.9461 / 0.9100 →
    0.9453 / 0.9097), mnist_cnn 0.9471 / 0.9747 / 0.9845 / 0.9931 → 0.9473 / 0.9757 /
    0.9837 / 0.9931 (@500 0.9859 / 0.9769 → 0.9847 / 0.9769), @150 every half up or equal
    on every CNN, tune_mlp bit-identical (restarting every switched row already was), the
    digits MLP's found / exact L1 unchanged (median 1.00011, max 1.0025); the
    held-out tune_cnn_fgsm_co 0.7121 / 0.7950 / 0.9009 / 0.9429 → 0.7739 / 0.8303 / 0.9061
    / 0.9407 (@1000 0.9431 / 0.9133 → 0.9451 / 0.9066; over 990 / 1000 / 1010, its own
    pool, 0.9444 / 0.9142 → 0.9453 / 0.9109, the switch alone's second half spanning
    0.9041–0.9246 over those three budgets). Restarting every switched row's first flip
    gained more @100 (tune_cnn_fgsm 0.6844, tune_cnn_fgsm_co 0.7759) but lost
    tune_cnn_fgsm_co @500 0.9009 → 0.8990 (0.9041 / 0.8562 → 0.8978 / 0.8484) and
    mnist_cnn @100 / 150 (0.9409 → 0.9381, 0.9509 → 0.9463 on one half); capping ε after
    the flip at the best norm × (1 + γ) lost part of the gain (tune_cnn_fgsm @100, images
    0–99, 0.6964 → 0.6698)."""
    if p == 1.0:
        return config.alpha_init_l1, config.gamma_init_l1
    return config.alpha_init, config.gamma_init


Factor = float | Tensor
"""A schedule's value at one step: one number for every row, or one per row."""


class Anneal:
    """The cosine schedules of a run's ε factor γ and step share α: at step ``k``, ``1 + γ``
    (ε grows), ``1 − γ`` (ε shrinks) and α. Floats when every sample runs the run's
    ``steps``; with per-sample ``lengths``, one value per row over that row's own length,
    computed in double precision per distinct length and rounded once to the inputs' dtype,
    as a float is when it multiplies a tensor, so a row's numbers are exactly those of a run
    of its own length."""

    def __init__(self, steps: int, config: GradientConfig, lengths: Tensor | None,
                 like: Tensor, p: float) -> None:  # fmt: skip
        self.steps = steps
        self.config = config
        self.alpha, self.gamma = schedule_start(p, config)
        # L1 with ``l1_slow_after``: every row starts as on the other distances, and a row
        # without a flip in the run after that many steps switches to the L1 start
        self.after = config.l1_slow_after if p == 1.0 else 0
        if self.after:
            self.alpha, self.gamma = config.alpha_init, config.gamma_init
        self.like = like
        # with ``l1_slow_kept``: each row's loss at the run's first step and at the step
        # before the switch (full batch; rows not running keep the first)
        self.first_loss: Tensor | None = None
        self.last_loss: Tensor | None = None
        self.lengths: list[int] = []
        self.codes: Tensor | None = None  # each row's index into ``lengths``
        self.own = lengths  # each row's steps (None: the run's ``steps``)
        # with ``l1_slow_restart``: the step of each switched row's first flip (-1: none)
        self.flip_at: Tensor | None = None
        # rows (full batch) whose step share starts at ``soft_alpha`` instead (:meth:`soften`)
        self.soft: Tensor | None = None
        self.soft_alpha = self.alpha
        if lengths is not None:
            self.relength(lengths)

    def relength(self, lengths: Tensor) -> None:
        """Each row's own steps from now on (``lengths``): its schedules follow the cosine
        over that length (a row whose length grows mid-run takes its values there)."""
        self.own = lengths
        self.lengths = sorted(set(lengths.tolist()))
        where = torch.tensor(self.lengths, device=lengths.device, dtype=lengths.dtype)
        self.codes = torch.searchsorted(where, lengths)

    def _at(self, k: int, steps: int, start: tuple[float, float]) -> tuple[float, float, float]:
        c = self.config
        alpha, gamma = start
        gamma = _cosine(k, steps, gamma, c.gamma_final)
        return 1 + gamma, 1 - gamma, _cosine(k, steps, alpha, c.alpha_final)

    def note(self, k: int, idx: Tensor | slice, loss: Tensor) -> None:
        """Keep the rows ``idx``' ``loss`` at step ``k`` where the switch reads it: the
        run's first step and the one before ``after``."""
        if not self.after or not self.config.l1_slow_kept:
            return
        if k == 0:
            self.first_loss = torch.zeros(self.like.shape[0], dtype=loss.dtype,
                                          device=loss.device)  # fmt: skip
            self.first_loss[idx] = loss
        if k == self.after - 1 and self.first_loss is not None:
            self.last_loss = self.first_loss.clone()
            self.last_loss[idx] = loss

    def slow(self, found: Tensor) -> Tensor:
        """The rows that switch at step ``after``: no flip yet in this run and (with
        ``l1_slow_kept``) a loss still above that share of its loss at the first step."""
        rows = ~found
        kept = self.config.l1_slow_kept
        if kept and self.first_loss is not None and self.last_loss is not None:
            rows &= self.last_loss > self.first_loss * kept
        return rows

    def switched(self, k: int, idx: Tensor | slice, slow: Tensor | None,
                 values: tuple[Factor, Factor, Factor]) -> tuple[Factor, ...]:  # fmt: skip
        """``values`` (:meth:`at`) with the rows of ``slow`` (a mask over the rows ``idx``)
        on the L1 start's schedule instead."""
        if slow is None or not self.after:
            return values
        c = self.config
        other = self.at(k, idx, (c.alpha_init_l1, c.gamma_init_l1))
        like = self.like
        return tuple(
            torch.where(slow, torch.as_tensor(b, dtype=like.dtype, device=like.device),
                        torch.as_tensor(a, dtype=like.dtype, device=like.device))
            for a, b in zip(values, other, strict=True)
        )  # fmt: skip

    def far(self, rows: Tensor, kept: float) -> Tensor:
        """Of ``rows`` (full batch), those whose loss at the switch was still above ``kept``
        times their loss at the run's first step (0, or no losses kept: ``rows`` itself)."""
        first, last = self.first_loss, self.last_loss
        if not kept or first is None or last is None:
            return rows.clone()
        return rows & (last > first * kept)

    def soften(
        self, k: int, idx: Tensor | slice, values: tuple[Factor, Factor, Factor]
    ) -> tuple[Factor, Factor, Factor]:
        """``values`` (``1 + γ``, ``1 − γ``, α at step ``k`` for the rows ``idx``) with the
        rows of :attr:`soft` on a step share that starts at :attr:`soft_alpha` (their ε
        factor unchanged): a short L1 refinement's rows that its search's first run
        switched to the L1 start (:func:`mmargin.engine.soft_refine.refine_soft`)."""
        if self.soft is None:
            return values
        alpha = self.at(k, idx, (self.soft_alpha, self.gamma))[2]
        like = self.like
        rows = self.soft[idx]
        mixed = torch.where(
            rows,
            torch.as_tensor(alpha, dtype=like.dtype, device=like.device),
            torch.as_tensor(values[2], dtype=like.dtype, device=like.device),
        )
        return values[0], values[1], mixed

    def restarted(self, k: int, idx: Tensor | slice, slow: Tensor | None, was: Tensor,
                  now: Tensor, up: Factor, down: Factor) -> tuple[Factor, Factor]:  # fmt: skip
        """``up`` and ``down`` (``1 + γ``, ``1 − γ`` at step ``k`` for the rows ``idx``) with
        ``l1_slow_restart``: a switched row (``slow``, a mask over the rows ``idx``) whose
        first flip in this run (``now`` and not ``was`` found) came at step ``f`` in the
        second half of its run has its γ from ``gamma_init_l1`` at ``f`` annealed (cosine)
        to ``gamma_final`` over its steps left, so a first flip found late with a large ε
        still has the run's remaining steps to shrink it."""
        if slow is None or not self.after or not self.config.l1_slow_restart:
            return up, down
        like = self.like
        if self.flip_at is None:
            self.flip_at = torch.full((like.shape[0],), -1, dtype=torch.long, device=like.device)
        every = isinstance(idx, slice)
        flip = self.flip_at if every else self.flip_at[idx]
        flip = torch.where(slow & now & ~was & (flip < 0), k, flip)
        if every:
            self.flip_at = flip
        else:
            self.flip_at[idx] = flip
        steps = self.steps if self.own is None else (self.own if every else self.own[idx])
        # in double precision, rounded once to the inputs' dtype (as ``at``)
        share = (k - flip).clamp(min=0).double() / (steps - flip).clamp(min=1).double()
        c = self.config
        cosine = 1 + torch.cos(math.pi * share)
        gamma = (c.gamma_final + 0.5 * (c.gamma_init_l1 - c.gamma_final) * cosine).to(like.dtype)
        # only a first flip in the second half of the row's run, where the switch's own
        # cosine has fallen below half its start (an earlier one keeps the switch's γ)
        use = slow & (flip >= 0) & (2 * flip >= steps)
        up = torch.as_tensor(up, dtype=like.dtype, device=like.device)
        down = torch.as_tensor(down, dtype=like.dtype, device=like.device)
        return torch.where(use, 1 + gamma, up), torch.where(use, 1 - gamma, down)

    def at(self, k: int, idx: Tensor | slice,
           start: tuple[float, float] | None = None) -> tuple[Factor, Factor, Factor]:  # fmt: skip
        """``1 + γ``, ``1 − γ`` and α at step ``k`` for the rows ``idx``, on the schedule
        that starts at ``start`` (α, γ; the run's own by default)."""
        begin = (self.alpha, self.gamma) if start is None else start
        if self.codes is None:
            return self._at(k, self.steps, begin)
        table = [self._at(k, m, begin) for m in self.lengths]
        rows = torch.tensor(table, device=self.like.device, dtype=self.like.dtype)[self.codes[idx]]
        return rows[:, 0], rows[:, 1], rows[:, 2]


class Extend:
    """The rows of a run that the switch to the L1 start (``Anneal.slow``) picked, that
    still have no flip in the run at step ``at`` (not before the switch) and whose loss
    there is still above ``kept`` times their loss at the run's first step (0: no such
    test; the losses the switch reads, ``Anneal.note``) run ``steps`` more steps than the
    others: from there on their schedules follow the cosine over their longer length
    (:meth:`Anneal.relength`). After the run ``rows`` holds which did (``None``: no row
    was switched)."""

    def __init__(self, steps: int, at: int = 0, kept: float = 0.0) -> None:
        self.steps = steps
        self.at = at
        self.kept = kept
        self.rows: Tensor | None = None

    def grow(self, k: int, after: int, rows: Tensor, own: Tensor, anneal: Anneal) -> Tensor:
        """Before step ``k`` of a run that switches at step ``after``: at the step this
        extension reads (``at``, not before ``after``), the rows ``rows`` take ``steps``
        more steps; ``own``, the rows' lengths, as they are from then on."""
        if k != max(self.at, after) or self.rows is not None:
            return own
        first, last = anneal.first_loss, anneal.last_loss
        if self.kept and first is not None and last is not None:
            rows = rows & (last > first * self.kept)
        self.rows = rows
        own = torch.where(rows, own + self.steps, own)
        anneal.relength(own)
        return own
