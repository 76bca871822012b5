"""How a gradient search spends its passes: which runs, how long, against which class.

An untargeted search can settle on the boundary of a class that is not the nearest one,
and on adversarially trained models (flat, noisy losses) the first-order ranking of the
classes at the clean input often misses the nearest one too. So the steps are split into

1. a **first** run of the usual ``z_y − max_j z_j`` loss (it finds *a* boundary, fast;
   a long search runs two, the second from the clean input on its own schedule: on L1 the
   L1 start, on L2 and L∞ a faster-shrinking ε: :func:`second_first`);
2. short **probes**: one pairwise run ``z_y − z_c`` per candidate class ``c`` — the best
   first-order ranked classes other than the one the first run landed in — each a whole
   annealed run of its own, so what a probe reaches predicts what its class can give;
3. **refinements**: runs warm-started from the best flip so far, driving the pairwise loss
   toward the class that flip lies in (the winner of the first run and the probes).

Short searches are split differently (:func:`split_steps`, :func:`is_short`, measured on
the tuning models at 100, 250 and 500 passes): legs of a few dozen steps are too short to
anneal, so an L2 or L1 search of under ~150 passes is one plain run, nothing ranked (the
ranking alone costs 10 passes; on L2 its ε shrinks faster at first,
:func:`mmargin.engine.gradient.plain_config`); an L2 search of under ~800 passes spends
half its steps on the Lagrangian run (whose samples without a flip after its first steps
take growing steps, :func:`mmargin.engine.lagrangian_plan.lagrangian_hasten`) and has two
class probes instead of three; a longer one has a second Lagrangian run
(:func:`mmargin.engine.lagrangian_plan.second_steps`; both hastened alike). Where the short plan's
probes are too short for the hopeless exit, a sample whose Lagrangian run beat its first
ε-ball run skips the last probe and refines its best flip for longer (:func:`won_probes`:
a choice per sample, read off its own two runs). L∞ keeps the split at
every budget (one plain run lost there at 250 passes in session 4: mnist_cnn 0.988 →
0.92). L1 splits from ~150 passes: a plain run up to ~600 passes was mixed on the tuning
models at 250 and 500 (mnist_cnn down 0.02, the robust CNNs up) and lost on the
evaluation models (bench/results/image.md's history, session 5). Under ~800 passes an L1
search has two probes instead of three, the third's steps going to the refinements of
the best flip (the robust CNNs' L1 flips keep shrinking there; one probe or none lost on
mnist_cnn and digits_mlp, whose nearest class a probe finds).

Nothing here is per model: the plan is a function of the steps and the distance only,
the shares are fractions of the steps left after ranking, and every choice is per sample
(its own ranking, its own best, which of its runs won), so a sample's result never
depends on the other samples of its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mmargin.engine.legstop import first_mark
from mmargin.engine.spec import GradientConfig

__all__ = [
    "ANNEAL_STEPS",
    "Leg",
    "floor_probes",
    "is_short",
    "legs",
    "next_class",
    "probe_classes",
    "refine_classes",
    "search_legs",
    "second_first",
    "second_share",
    "split_steps",
    "toward",
    "won_probes",
]

ANNEAL_STEPS = 8
"""The fewest steps an ε-ball run needs to anneal: shorter probes are dropped
(:func:`legs`), and the L∞ leftover refines only with at least this many steps left."""


@dataclass(frozen=True)
class Leg:
    """One run of a search: ``kind`` is ``first``, ``second`` (a second first run:
    :func:`second_first`), ``probe`` (``index``: which candidate class) or ``refine``;
    ``steps`` its length in steps (2 passes each)."""

    kind: str
    steps: int
    index: int = 0


def legs(steps: int, restarts: int, probes: int, first_share: float,
         probe_share: float) -> list[Leg]:  # fmt: skip
    """The runs of a class-aware search of ``steps`` steps: the first run gets
    ``first_share`` of them, each of ``probes`` probes ``probe_share``, and ``restarts``
    refinements share the rest. Probes that would get fewer than :data:`ANNEAL_STEPS` steps
    are dropped (too short to anneal), and their steps go to the refinements. (Whether a search is
    split at all is :func:`split_steps`' call.)"""
    if restarts < 1 or steps < 2:
        return [Leg("first", steps)]
    probe = int(steps * probe_share)
    probes = probes if probe >= ANNEAL_STEPS else 0
    first = max(int(steps * first_share), 1)
    rest = steps - first - probes * probe
    per = rest // restarts
    if per < 1:
        return [Leg("first", first), *(Leg("refine", (steps - first) // restarts)
                                        for _ in range(restarts))]  # fmt: skip
    out = [Leg("first", first), *(Leg("probe", probe, i) for i in range(probes))]
    return out + [Leg("refine", per) for _ in range(restarts)]


def split_steps(p: float, config: GradientConfig) -> int:
    """The fewest steps (passes // 2) an untargeted search on the Lp distance ``p`` must
    have to be split into runs: ``split_min``, on L2 and L1 at least ``split_min_l2`` /
    ``split_min_l1``. A shorter search is one plain run and ranks no classes."""
    own = {2.0: config.split_min_l2, 1.0: config.split_min_l1}.get(p, 0)
    return max(config.split_min, own)


def is_short(steps: int, p: float, config: GradientConfig) -> bool:
    """Whether a split search of ``steps`` steps on the Lp distance ``p`` follows the short
    plan: L2 below ``short_steps`` (a longer Lagrangian run, fewer and longer probes)."""
    return p == 2.0 and steps < config.short_steps


def search_legs(steps: int, p: float, config: GradientConfig, spent: int = 0) -> list[Leg]:
    """The runs of a class-aware search of ``steps`` steps (after ranking) on the Lp
    distance ``p``, ``spent`` of which go to the Lagrangian run: :func:`legs` over the
    rest, with the short plan's probes where :func:`is_short` says so for ``steps``; a
    short L1 search (under ``short_steps``) has at most ``short_probes_l1`` probes, and the
    steps of the others go to the refinements of the best flip; a long L1, L2 or L∞ search
    splits its first run (:func:`second_first`, by :func:`second_share`)."""
    short = is_short(steps, p, config)
    probes = config.short_probes if short else config.probes
    share = config.short_probe_share if short else config.probe_share
    if p == 1.0 and steps < config.short_steps:
        probes = min(probes, config.short_probes_l1)
    plan = legs(steps - spent, config.restarts, probes, config.first_share, share)
    if short:
        plan = floor_probes(plan, probes)
    if steps >= config.short_steps:
        return second_first(plan, second_share(p, config))
    return plan


def second_share(p: float, config: GradientConfig) -> float:
    """The share of a long plan's first-run steps (from ``short_steps`` steps, 1000 passes)
    that its ``second`` first run takes on the Lp distance ``p`` (:func:`second_first`):
    ``second_first_l1`` / ``second_first_l2`` / ``second_first_linf``, none on L0. Each
    distance's second run has its own schedule
    (:func:`mmargin.engine.short_first.second_config`); the probes and the refinement start
    from the smaller of the two flips.

    On L∞ (session 20) the second run's ε factor starts at ``config.second_gamma_linf``
    instead of ``gamma_init``; at 1000 passes: runs of 97 and 97 steps instead of 194.

    Diagnosis (L∞, 1000 passes, images 0–199, per-leg trace of the best flip): on the
    FGSM-trained tuning CNN the first run set the final flip's basin. The 148-step
    refinement moved the flip it started from by a geometric mean of 0.9896 (24 samples by
    nothing), and on the 8 samples where FMN @1000 beat mmargin by > 2 % (up to 9.6 %,
    #164: 0.2903 against 0.2649) it moved it by at most 1.1 %, every probe staying above it;
    each ended in the first run's class, and the 500 / 990 / 1010-pass plans ended in the
    same basin (#164: 0.2928 / 0.2922 / 0.2915). Mmargin's own 250 / 500-pass runs beat the
    1000-pass one by > 2 % on 3 samples (#63 0.2212 @500 against 0.2278, #84, #150), on
    the others 990 / 1010 moved 6–8 samples each way by > 2 %: a basin reached or not by a
    first run whose schedule differs slightly. A second first run that takes another
    trajectory (ε shrinking 30 % per flipping step at first instead of 5 %) reaches other
    basins, and the per-sample smaller of the two flips is refined.

    Measured (L∞, images 0–199, one pool per model of FMN and FAB @250 / 1000, both runs and
    on the CNNs but mnist_cnn the base's 250 / 500-pass rows; all (halves 0–99 / 100–199),
    base → this, @990 / 1000 / 1010):

    - tune_cnn_fgsm 0.9601 / 0.9613 / 0.9584 → 0.9696 / 0.9734 / 0.9741 (halves @1000
      0.9680 / 0.9520 → 0.9731 / 0.9722; samples FMN beats by > 2 %: 8 → 3, #164 0.2903 →
      0.2579),
    - tune_cnn_fgsm_short 0.9870 / 0.9869 / 0.9869 → 0.9876 / 0.9872 / 0.9868 (first half
      0.9853 / 0.9853 / 0.9841 → 0.9868 / 0.9860 / 0.9863, second 0.9873 / 0.9872 / 0.9885
      → 0.9872 / 0.9871 / 0.9859: within its chaos, not a gain),
    - tune_cnn_pgd 0.9926 / 0.9930 / 0.9926 → 0.9957 / 0.9956 / 0.9956 (every half up),
    - tune_cnn_bn 0.9952 / 0.9943 / 0.9942 → 0.9952 / 0.9959 / 0.9964 (second half @990
      0.9953 → 0.9948, the others up),
    - mnist_cnn 0.9971 / 0.9972 / 0.9975 → 0.9987 / 0.9988 / 0.9989 (every half up),
    - tune_mlp 0.9995 → 0.9999 at each (every half up),
    - tune_cnn_fgsm_co (held out, run once at the end) 0.9830 / 0.9852 / 0.9835 → 0.9889 /
      0.9877 / 0.9889 (halves 0.9830 / 0.9858 / 0.9819 and 0.9822 / 0.9840 / 0.9846 →
      0.9889 / 0.9873 / 0.9883 and 0.9884 / 0.9876 / 0.9892),

    at the same passes per sample (±1). Per sample against the base run @1000 (> 1 % either
    way): tune_cnn_fgsm 43 smaller / 24 larger, tune_cnn_fgsm_short 13 / 6, tune_cnn_pgd 11
    / 1, tune_cnn_bn 7 / 3, mnist_cnn 5 / 0, tune_mlp 4 / 0.

    Screened on tune_cnn_fgsm (one pool of every run below; base 0.9518 / 0.9529 / 0.9501,
    γ 0.3 0.9612 / 0.9649 / 0.9656): γ 0.15 for the second run 0.9575 / 0.9560 / 0.9576
    (second half 0.9487 / 0.9484 / 0.9475), γ 0.5 0.9638 / 0.9642 / 0.9673 (as γ 0.3,
    not run on the other models); the second run with FMN's step scale (α 0.15 → 0.0015
    instead of 1 → 0.01, γ 0.05: FMN's absolute step 1 is ~0.14 ε√d at these flips) lost:
    0.9473 / 0.9475 / 0.9467. The MILP-exact L∞ margins of the digits MLPs (found / exact
    @1000, ``bench/exact_ratio.py --stored``): tune_digits_mlp's 212 proven points median
    1.00003 → 1.00004, max 1.0100 → 1.0100, share above 1.001 4.7 → 3.8 %; digits_mlp's 50
    median 1.00005 → 1.00005, max 1.0057 → 1.0002. Plans under ``short_steps`` steps
    (below ~810 passes: 500 and less) never have this run, nor do L2 / L1 plans: their
    distances are unchanged by construction (L2 / L1 on mnist_cnn @1000 checked bit for
    bit).

    On the evaluation set once merged (L∞ @1000, 100 images, mmargin-only runs of main and
    of this on one machine, pooled with the stored peers and the unchanged 100–500-pass
    rows): the adversarially trained CNN 0.9897 → 0.9948, the batch-norm CNN 0.9979 →
    0.9985, the MLP 1.0000 → 1.0000 (in one pool of both runs: 0.9629 (halves 0.9497 /
    0.9668) → 0.9897 (0.9856 / 0.9908), 0.9952 (0.9937 / 0.9952) → 0.9964 (0.9953 /
    0.9963), 1.0000 → 1.0000)."""
    shares = {1.0: config.second_first_l1, 2.0: config.second_first_l2,
              math.inf: config.second_first_linf}  # fmt: skip
    return shares.get(p, 0.0)


def floor_probes(plan: list[Leg], probes: int) -> list[Leg]:
    """``plan`` (a short L2 plan from :func:`legs`) with the ``probes`` its share left too
    short to anneal restored at :data:`ANNEAL_STEPS` steps each, their steps taken from its
    refinement, when that refinement keeps at least twice :data:`ANNEAL_STEPS`; otherwise
    (or when it has probes, or no single refinement) ``plan`` itself. With the defaults:
    240–249 passes (a refinement of 32 steps → two probes of 8 and a refinement of 16, as
    at 250 passes: 8, 8 and 18); below 240 passes the plan keeps no probes.

    At 240 passes the probes' share was 7 steps, so both were dropped and every clean
    model lost ~0.02 against 250 passes (session 17: tune_cnn_bn 0.9558 against 0.9788):
    the probes find their nearer class. Measured (L2, images 0–199, pooled with ALMA, DDN,
    FMN and every run; all (halves 0–99 / 100–199)), no probes → two probes of 8 taken
    from the refinement, @200 / 220 / 240:
    tune_cnn_bn 0.9479 / 0.9550 / 0.9559 → 0.9662 / 0.9740 / 0.9765 (@240 halves 0.9440 /
    0.9616 → 0.9745 / 0.9743), mnist_cnn 0.9743 / 0.9765 / 0.9782 → 0.9893 / 0.9918 /
    0.9925, but tune_cnn_fgsm_co 0.8966 / 0.9091 / 0.9083 → 0.8573 / 0.8905 / 0.9099,
    tune_cnn_fgsm 0.8240 / 0.8553 / 0.8757 → 0.7957 / 0.8379 / 0.8806 (a pool without the
    1000-pass runs): the robust CNNs' flips come from the refinement (26 steps at 200
    passes, 10 left with both probes). One probe (the refinement keeping 18 / 21 / 24):
    tune_cnn_bn 0.9691 / 0.9698 / 0.9742, tune_cnn_fgsm_co 0.8774 / 0.9037 / 0.9102;
    two probes that a sample whose Lagrangian run won skips (:func:`won_probes`, both
    instead of the last): tune_cnn_bn 0.9623 / 0.9692 / 0.9734, tune_cnn_fgsm_co 0.8679 /
    0.9017 / 0.9078. Hence both probes, and only where the refinement keeps 16 steps."""
    kinds = [leg.kind for leg in plan]
    if "probe" in kinds or kinds.count("refine") != 1 or kinds[-1] != "refine":
        return plan
    refine = plan[-1].steps
    if refine - probes * ANNEAL_STEPS < 2 * ANNEAL_STEPS:
        return plan
    out = [*plan[:-1], *(Leg("probe", ANNEAL_STEPS, i) for i in range(probes))]
    return [*out, Leg("refine", refine - probes * ANNEAL_STEPS)]


def second_first(plan: list[Leg], share: float) -> list[Leg]:
    """``plan`` with ``share`` of its first run's steps given to a ``second`` first run right
    after it: from the clean input, driving the same loss, with every row on the L1 start
    (``l1_slow_after`` 0: :func:`mmargin.engine.anneal.schedule_start`); unchanged where
    either run would get fewer than :data:`ANNEAL_STEPS` steps (or ``share`` is 0). Only a
    long L1 plan has it (:func:`search_legs`: from ``short_steps`` steps, 1000 passes), and
    with ``second_first_l2`` / ``second_first_linf`` a long L2 / L∞ plan, whose second run
    starts its ε factor at ``second_gamma_l2`` / ``second_gamma_linf`` instead
    (:func:`mmargin.engine.short_first.second_config`).

    On the robust tuning CNNs a long L1 search's first run decides the basin of its final
    flip: at 1000 passes (L1, images 0–199) 113 of tune_cnn_fgsm's 200 final flips and 110
    of tune_cnn_fgsm_short's 199 are within 0.5 % of the first run's (87 of 199 on
    tune_cnn_bn), the warm Lagrangian run and the refinement of 126 steps staying in that
    basin, and the 500-pass search's flip was over 2 % smaller on 75 of tune_cnn_fgsm's
    samples (56 of them in the same class; #156: 7.00 against 2.86, the 1000-pass runs
    after the first moving it by nothing). The first run's flip hardly improves with its
    length past ~84 steps (geometric mean over the 200 images, tune_cnn_fgsm: 60 / 84 / 110
    / 168 steps 4.16 / 3.82 / 3.74 / 3.73), while two runs that differ reach other basins:
    per sample the smaller of two first runs of 84 steps, the plain one and one on the L1
    start, 3.38 (tune_cnn_bn 5.49 against 5.87 for one of 168 steps; 75 and 93 plain steps:
    3.48 / 5.76; the L1 start alone 4.16 / 5.82).

    Measured (L1, images 0–199, one pool of ALMA, FMN, FAB and every run below, mean over
    990 / 1000 / 1010 passes; all (halves 0–99 / 100–199)), off → 0.5:

    - tune_cnn_fgsm 0.8481 (0.8479 / 0.7694) → 0.8619 (0.8596 / 0.7958),
    - tune_cnn_fgsm_short 0.9261 (0.9291 / 0.8745) → 0.9303 (0.9290 / 0.8898),
    - tune_cnn_bn 0.9704 (0.9718 / 0.9468) → 0.9778 (0.9806 / 0.9565),
    - tune_cnn_fgsm_co (held out) 0.9377 (0.9396 / 0.9033) → 0.9474 (0.9450 / 0.9273),
    - tune_cnn_pgd 0.9860 (0.9856 / 0.9775) → 0.9861 (0.9853 / 0.9775),
    - mnist_cnn 0.9908 (0.9900 / 0.9887) → 0.9929 (0.9920 / 0.9913),
    - tune_mlp 0.9985 (0.9978 / 0.9991) → 0.9985 (0.9979 / 0.9991),

    at the same passes (±1 per sample); single budgets move within the plan's chaos
    (mnist_cnn @990 0.9924 → 0.9913, tune_cnn_pgd @1010 0.9858 → 0.9845). Over 980–1020
    (five budgets, a pool with those runs added): tune_cnn_fgsm 0.8336 (0.8322 / 0.7581) →
    0.8537 (0.8511 / 0.7919), tune_cnn_fgsm_short 0.9213 (0.9243 / 0.8656) → 0.9269 (0.9295
    / 0.8780), tune_cnn_bn 0.9692 (0.9710 / 0.9457) → 0.9770 (0.9792 / 0.9564),
    tune_cnn_fgsm_co 0.9320 (0.9360 / 0.8957) → 0.9417 (0.9412 / 0.9186). Found / exact L1
    at 1000 passes: digits_mlp's 50 stored points median 1.00011 → 1.00018, max 1.0025 →
    1.0033 (digits-test-0211); tune_digits_mlp's 297 proven points median 1.00014 →
    1.00019, max 1.0047 → 1.0047, share above 1.001 4.0 → 4.4 %. Screened: two plain first
    runs of 0.45 / 0.55 of the steps (75 and 93 at 1000 passes) gained less and lost
    tune_cnn_bn's second half: 0.8556 (0.8642 / 0.7691), 0.9292 (0.9269 / 0.8877), 0.9738
    (0.9804 / 0.9429); the L1-start run with 0.6 of the steps gained more on tune_cnn_fgsm
    (0.8701 (0.8742 / 0.7928)) and less on the others (0.9284 (0.9286 / 0.8825), 0.9736
    (0.9759 / 0.9500)). Short plans (500 passes: a first run of 80 steps) are unchanged."""
    first = plan[0].steps if plan and plan[0].kind == "first" else 0
    kept = int(first * (1 - share))
    if share <= 0 or min(kept, first - kept) < ANNEAL_STEPS:
        return plan
    return [Leg("first", kept), Leg("second", first - kept), *plan[1:]]


def won_probes(steps: int, p: float, config: GradientConfig, plan: list[Leg]) -> int:
    """How many of the last probes of a class-aware search of ``steps`` steps on the Lp
    distance ``p`` (its ε-ball runs: ``plan``) a sample skips when its Lagrangian run beat
    its first ε-ball run (a smaller flip), the skipped probes' steps going to its last
    refinement: ``config.won_probes`` in a short L2 plan (:func:`is_short`) that has a
    refinement and whose probes are too short for the hopeless exit
    (:func:`mmargin.engine.legstop.first_mark`: a longer probe leaves by itself where its
    class is hopeless), otherwise none.

    Measured (L2, images 0–199, pooled with ALMA, DDN, FMN and every run compared; halves
    0–99 / 100–199): at 250 passes (two probes of 8 steps) a sample whose Lagrangian run
    beat its first run got a smaller final flip from 8 more refinement steps than from its
    last probe: tune_cnn_fgsm 0.7974 → 0.8034 (0.7961 / 0.7448 → 0.8020 / 0.7533),
    tune_cnn_fgsm_short 0.8843 → 0.8899 (0.9055 / 0.8307 → 0.9113 / 0.8377), tune_cnn_bn
    0.9761 → 0.9770, mnist_cnn 0.9921 → 0.9924, tune_mlp 0.9959 (both halves up or
    unchanged everywhere), at the same passes. Where the Lagrangian run won, the probes
    rarely found a smaller flip on the robust CNNs (2 of 43 and 9 of 60 samples, 100
    images) against 4 of 11 on tune_cnn_bn, whose Lagrangian wins are narrower: skipping
    both probes gained on the robust CNNs (0.8017 and 0.8939) but lost on tune_cnn_bn
    (0.9732) and mnist_cnn (0.9913), where a probe had found a nearer class after a
    Lagrangian win of 1 %; skipping them only after a win of over 10 % kept tune_cnn_bn
    but gained less than the last probe alone. At 500 passes (probes of 17 steps, with the
    exit) skipping the last probe moved optimality by under 0.001 (tune_cnn_bn 0.9870 →
    0.9866, tune_cnn_fgsm 0.8693 → 0.8696) at 1–3 % more passes per sample, hence only
    probes without the exit. Screens on images 0–99 at 250 passes, both probes skipped:
    giving their steps to the Lagrangian run instead of the refinement (that run
    lengthened per sample from the start of its tail on, where its own flip so far beat
    the first run's) left tune_cnn_fgsm unchanged where the refinement gained 0.011;
    a warm Lagrangian run from the best flip before the refinement gained about what the
    refinement did and lost as much on tune_cnn_bn. At 1000 passes (three probes of 24
    steps, with the exit) handing probes to the refinement gained nothing on the robust
    CNNs (tune_cnn_fgsm within 0.0012) at 3–7 % more passes, and lost on tune_cnn_bn
    (0.9946 → 0.9852 skipping all three, 0.9939 → 0.9924 the last two). Session 17
    (images 0–199, one pool of the peers and every run, change @250 / 260): also skipping
    the last probe where the first run and the Lagrangian run landed in the same class
    moved tune_cnn_fgsm −0.0004 / +0.0013, tune_cnn_fgsm_short +0.0012 / +0.0004; skipping
    both probes there −0.0007 / +0.0029 and +0.0021 / −0.0022 (halves ±0.0065: noise);
    where the two runs' classes differed, spending both probes' steps on a refinement of
    the losing run's flip toward its class lost tune_cnn_fgsm −0.0046 / −0.0118,
    tune_cnn_fgsm_short −0.0097 / −0.0035, tune_cnn_bn −0.0027 / −0.0037."""
    if not (p == 2.0 and is_short(steps, p, config)):
        return 0
    if not any(leg.kind == "refine" and leg.steps >= 1 for leg in plan):
        return 0
    if any(leg.kind == "probe" and first_mark(leg.kind, leg.steps, config.hopeless)
           for leg in plan):  # fmt: skip
        return 0
    return config.won_probes


def probe_classes(ranked: Tensor, found: Tensor, count: int) -> Tensor:
    """Per sample, the first ``count`` ranked candidate classes other than ``found`` (the
    class its first run landed in, ``-1`` for none): ``(B, count)``, the last candidate
    repeated where a sample has too few."""
    other = ranked != found.unsqueeze(1)
    # stable order: the candidates that differ from `found` first, in ranked order
    order = torch.argsort((~other).to(torch.int8), dim=1, stable=True)
    kept = ranked.gather(1, order)[:, : max(count, 1)]
    if kept.shape[1] < count:
        kept = torch.cat([kept, kept[:, -1:].expand(-1, count - kept.shape[1])], dim=1)
    return kept


def next_class(ranked: Tensor, found: Tensor, probes: int) -> Tensor:
    """Per sample, the ranked candidate class the next probe would drive toward after
    ``probes`` probes: the ``probes + 1``-th ranked class other than ``found``, ``-1``
    where there is none."""
    kept = probe_classes(ranked, found, probes + 1)[:, -1]
    enough = (ranked != found.unsqueeze(1)).sum(dim=1) > probes
    return torch.where(enough, kept, torch.full_like(kept, -1))


def refine_classes(best_class: Tensor, ranked: Tensor, labels: Tensor) -> Tensor:
    """The class a refinement drives toward: the class of the best flip so far, or the
    nearest ranked class where there is none (or it is the label)."""
    bad = (best_class < 0) | (best_class == labels)
    return torch.where(bad, ranked[:, 0], best_class)


def toward(scores: Tensor, labels: Tensor, against: Tensor) -> Tensor:
    """The pairwise loss ``z_y − z_c`` that drives each sample toward its chosen class
    ``c = against`` (a run's loss; the flip criterion stays the goal's)."""
    z = scores.gather(1, torch.stack([labels, against], dim=1))
    return z[:, 0] - z[:, 1]
