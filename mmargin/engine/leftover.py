"""The steps a sample's runs left unspent: a second Lagrangian run (L2), a polish (L1), a
refinement toward the runner-up class (L∞, off by default).

A class probe lets a sample leave early once the probe's class is hopeless
(:mod:`mmargin.engine.legstop`), so on adversarially trained models a 1000-pass L2 search
spent ~865 of its passes per sample. Their final flips come almost always from the
Lagrangian run, and which basin that run settles in depends on its path: a second run
from the clean input with a larger first step (``GradientConfig.unspent_lr``, twice the
first run's) reaches other flips. So after the planned runs, every sample that has a
flip and at least :data:`SECOND_MIN_STEPS` steps left runs that second run for exactly the
steps it has left. (Since a long L2 search plans a second Lagrangian run of its own,
:func:`mmargin.engine.lagrangian_plan.second_steps`, its probes are shorter: at 1000 passes on
10 classes three probes of 24 steps leave at most 3 × 17 = 51 steps unspent, fewer than
:data:`SECOND_MIN_STEPS`; longer searches still reach this run.)

Measured on the robust tuning models (L2, 1000 passes, 100 images, pooled with
ALMA/FMN/FAB/DDN/C&W/DeepFool): tune_cnn_fgsm 0.929 → 0.950, tune_cnn_fgsm_short 0.983 →
0.987 (both halves of 50 up; on images 100–199, 0.950 → 0.955 and 0.962 → 0.968);
mnist_cnn's distances are unchanged. It cost passes: ~990 per sample instead of ~865 on
the robust models and 915 on mnist_cnn (since :data:`SECOND_MIN_STEPS`: 983 / 975 and
964, same flips). The same steps warm-started from the best flip gained
≤ 0.002, a second run with the first run's step size 0.005, and taking the second run's
steps out of the first run's (same passes) lost. Searches whose runs spend every step
(250 passes: the probes are too short to leave) are unchanged.

The plan stays a function of the steps and the distance; the lengths are each sample's
own (its queries). On L2 all samples share one batched run in which each decays over its
own length and leaves when its steps are done (``lagrangian_run(lengths=...)``): the same
flips, bit for bit, as one run per distinct length, which on small groups paid the step's
fixed cost once per group (7–9 groups of one run's length on the tuning models; a LeNet
Lagrangian step costs ~4 ms at batch 1 against ~0.25 ms per row at batch 200). Per-sample
arithmetic throughout, so a sample's result never depends on the rest of its batch.

On L1 the unspent steps go to the knapsack polish of the best flip
(:mod:`mmargin.engine.polish`; ``GradientConfig.unspent_polish``). Its first version took
5 % of every long L1 search's steps from the other runs; that shortened every run, and on
the robust tuning models the L1 search is chaotic in its run lengths (single samples moved
0.19×–2.7×), so the paired gain of the polish itself (per-sample geometric mean 0.985 on
both robust CNNs, 0.995 on mnist_cnn) was lost in the reshuffle (tune_cnn_fgsm_short,
images 100–199: 0.972 → 0.920). Spending only the unspent steps leaves every planned run
as it was, and the polish records only smaller verified flips, so no sample's best flip
from the search gets larger (the driver's final line search starts from it, and on one of
50 MILP-checked points of the evaluation digits MLP ended 0.03 % higher); it reaches the
samples whose probes left early, at most ``POLISH_MAX_STEPS`` steps each, in one batched
polish like L2's run (``polish_run(lengths=...)``; bit-identical to one polish per distinct
length: at 500 passes 3 lengths, the leftover's time 0.58–0.82× on the tuning models).

Before the polish (``GradientConfig.next_class``, on by default) a sample whose unspent
steps pay for it and still leave the polish its fewest (``POLISH_MIN_STEPS``) walks from the
clean input toward the class the next probe would have taken (the exchange's ``next``
round): the probes reach the first run's class and two or three more, ranked by
first-order distance at the clean input, and on a ReLU net the nearest class can be ranked further.

The polish stops at a fixed point of its linearisation, which on a piecewise-linear model
can be several % above the exact minimum; the L1 exchange (:mod:`mmargin.engine.exchange`)
walks from other starts (another support, the clean input, another class) on the steps
the polish left. With ``GradientConfig.exchange_reserve`` (off by default: it cost on the
FGSM-short robust CNN, see the exchange's module) a long L1 search
(:func:`~mmargin.engine.exchange.reserved_steps`: 1000 passes on 10 classes) keeps its
four rounds' steps out of its last refinement and runs them first, then the polish, then
the exchange's ``keep`` round on what is left. With ``GradientConfig.exchange_sparse`` (4 by
default) a sample whose flip moves few coordinates tops its unspent steps up to the rounds' (out of
its last refinement, :func:`~mmargin.engine.exchange.sparse_reserve`) and runs them the
same way: ``next``, the four rounds, the polish on its fewest steps, ``keep``.

On L∞ (``GradientConfig.unspent_refine``, off by default) the unspent steps go to one more
ε-ball refinement of the best flip, driving the pairwise loss toward the runner-up class:
the nearest ranked class other than the best flip's, again in one batched run
(``epsball_run(lengths=...)``; the same distances and passes as the one run per distinct
count it replaced on tune_cnn_fgsm and mnist_cnn, 200 images, @500 with 3–5 counts and
@1000 with 9). The probes pick the class the refinement drives toward, and an exit can drop
the right one: on the audio keyword spotter (8000-sample waveforms, bench/run_audio.sh) the
first probe of 9 of 111 clips was still over 1.5× the best norm at 30 % of its steps and
left, although by its end it beat the first run, so the refinement went toward the farther
class and those clips ended 0.8–1.9 dB louder (median dB_x −68.28 → −67.91, 806
passes/clip). With this run: −68.27, 19 clips quieter by > 0.1 dB and none louder, 999
passes/clip. Refining toward the best flip's own class instead gained ≤ 0.05 dB. Off by
default because on the MNIST tuning models (L∞ @1000, 200 images pooled with FMN and FAB)
it moved no pooled optimality (1–2 samples of 200 better by > 0.1 %) while spending the
3–8 % of passes the exits save.

With ``GradientConfig.stretch_refine`` (on by default) the L∞ probes' unspent steps go to
the search's last planned refinement before this leftover (:mod:`mmargin.engine.stretch`),
for the samples whose best flip lies well below first order (``stretch_below``): a sample a
probe left stalled (below) reaches the leftover with steps to spend, the others keep theirs
unspent.

With ``GradientConfig.next_class`` (on by default) an L∞ sample that a probe left stalled
(below) and that has at least :data:`REFINE_MIN_STEPS` unspent steps instead runs a probe
from the clean input toward the class the next probe would have taken
(:func:`~mmargin.engine.passes.next_class`, the L1 ``next`` round's class), for exactly its
unspent steps; the refinement above keeps the other samples. The probes follow the
first-order ranking at the clean input, and on a ReLU net the nearest class can be ranked
past them: on ``tune_digits_mlp`` (117 proven MILP points, 1000 passes) digits-test-0124
was found at 1.0206 × exact in class 1 (first run class 7, probes 1, 6, 5), the exact flip
in class 0, ranked fifth (first-order 0.155 against 0.100 for class 1, so the probe skip's
test would call it out of reach and the walk does not apply that test). A probe toward
class 0 from the clean input reaches 1.0106 × in 8 steps, 1.002 × in 24. The sample had
spent every step: its probes toward 6 and 5 ran to their ends at 1.09 × and 1.19 × its
best, never winning (the one toward 5 did not fall at all after its first hopeless test).
So on L∞ the probes' second hopeless test (at 60 % of a probe) also lets leave a probe more
than ``GradientConfig.late_hopeless`` = 1.1 × the best whose own flip has not fallen since
the first test (:class:`~mmargin.engine.legstop.LegStop`, ``stalled``, ``gave_up``).
Measured before choosing it (L∞, 1000 passes, every probe's own flip per step): no probe it
lets leave won by its end on tune_digits_mlp (15 probes), tune_mlp (20) or tune_cnn_bn (0).
A plain 1.1 × allowance instead (no stall condition: 69, 136 and 173 probes, none winning
there) lost on the adversarially trained tune_cnn_fgsm, whose probes above 1.1 × at that
test still won (optimality 0.9485 → 0.9446 at 500 passes, 0.9956 → 0.9941 at 1000, 3 of 200
images up to 12 % worse). With the stall condition 0124 leaves its probe toward 5 with 19
steps and the walk toward 0 takes it to 1.0030 × (max over the 117 points 1.0206 → 1.0075,
median 1.00004 unchanged; digits_mlp's 50 unchanged).

Only the stalled samples walk. Giving every L∞ sample's unspent steps to the walk (image
L∞, 200 images, base and new pooled) gained at 500 passes on mnist_cnn 0.9976 → 0.9986,
tune_cnn_fgsm 0.9485 → 0.9488, tune_cnn_fgsm_short 0.9686 → 0.9699 and nothing at 250 or
1000 passes or on tune_mlp and tune_cnn_bn, while it spent the passes the exits save (per
sample at 1000 passes ~885 → ~970; tune_mlp's search 3.05 → 3.50 s process CPU) — against a
speed target the L∞ search meets by those exits. With only the stalled samples walking the
five image tuning models' L∞ distances are the same as without the walk at 250, 500 and
1000 passes, and the searches spend 0–21 more passes per sample at 1000 (tune_mlp
884 → 905, mnist_cnn 887 → 894, tune_cnn_fgsm 932 → 936, tune_cnn_bn 888 → 890,
tune_cnn_fgsm_short the same).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.engine.epsball import epsball_run
from mmargin.engine.exchange import KINDS, exchange_run, reserved_steps
from mmargin.engine.lagrangian import l1_weights, lagrangian_run
from mmargin.engine.passes import ANNEAL_STEPS, probe_classes
from mmargin.engine.polish import POLISH_MAX_STEPS, POLISH_MIN_STEPS, polish_run
from mmargin.engine.problem import Problem
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState

__all__ = [
    "REFINE_MIN_STEPS",
    "SECOND_MIN_STEPS",
    "spend_unspent",
    "unspent_steps",
]

SECOND_MIN_STEPS = 56
"""The fewest unspent steps worth a second L2 run: shorter ones never found a smaller flip.
Measured (L2, every sample's state before and after its second run, 200 images, 100 on
mnist_cnn; a gain is > 0.1 %): at 1000 passes the unspent steps are 14–72 (sums of the
three probes' exits); the 26 samples that gained on the two robust tuning CNNs all had 62
or 72 steps left, and none of the 95 with 14–52 changed at all (mnist_cnn: none of its 83
second runs gained); at 500 passes (8–26 steps left) none of 480 second runs on the three
models changed a flip. Capping the 62–72-step runs at 48 steps lost nearly all of the gain
(tune_cnn_fgsm 0.975 → 0.967, none 0.966): the run from the clean input needs its length to
walk the boundary. Skipping the shorter runs saves their passes (1000 passes: 1–4 % of a
search; 500 passes: ~8 %) at the same flips."""


REFINE_MIN_STEPS = ANNEAL_STEPS
"""The fewest unspent steps worth a second ε-ball refinement (L∞): a shorter run cannot
anneal (the probes' own floor, :data:`mmargin.engine.passes.ANNEAL_STEPS`)."""


def unspent_steps(steps: int, before: Tensor, state: SearchState) -> Tensor:
    """Per sample, the steps of a search of ``steps`` steps its runs have not spent
    (``before``: its queries when the search's runs began; a step is 2 queries)."""
    return steps - torch.div(state.queries - before, 2, rounding_mode="floor")


def _left(steps: int, before: Tensor, state: SearchState) -> Tensor:
    """:func:`unspent_steps` where a half-spent step counts as spent (the exchange's
    ``class`` round spends an odd count of passes)."""
    return steps - torch.div(state.queries - before + 1, 2, rounding_mode="floor")


def spend_unspent(
    problem: Problem, steps: int, before: Tensor, state: SearchState, config: GradientConfig,
    ranked: Tensor | None = None, untried: Tensor | None = None,
    reserved: Tensor | None = None,
) -> None:  # fmt: skip
    """Give each sample that has a flip its unspent steps (:func:`unspent_steps`): on L2
    (``config.unspent_lr`` > 0, at least :data:`SECOND_MIN_STEPS` left) a Lagrangian run
    from the clean input, first step ``config.unspent_lr``; on L1 (``config.unspent_polish``)
    the knapsack polish of its best flip, at most ``POLISH_MAX_STEPS`` long (the polish
    leaves alone the samples with fewer steps than it needs, ``POLISH_MIN_STEPS``), and the
    exchange rounds (before the polish in a search that reserved steps for them), with
    ``untried`` (per sample the class the next probe would have taken, ``-1``: none) first
    the exchange's ``next`` round toward it where the steps leave the polish its fewest; on L∞
    (``config.unspent_refine``, at least :data:`REFINE_MIN_STEPS` left) an ε-ball
    refinement of its best flip toward the nearest class of ``ranked`` (per sample, the
    search's candidate classes, nearest first; without them L∞ spends nothing) other than
    the best flip's. Each: one batched call, each sample for its own steps
    (:mod:`mmargin.engine.ownsteps`); other distances spend nothing."""
    distance = problem.distance
    polish = distance.p == 1.0 and config.unspent_polish
    second = distance.p == 2.0 and config.unspent_lr > 0
    refine = distance.p == math.inf and config.unspent_refine and ranked is not None
    walk = distance.p == math.inf and untried is not None
    if not (polish or second or refine or walk):
        return
    left = unspent_steps(steps, before, state)
    if polish:
        left = left.clamp(max=POLISH_MAX_STEPS)  # the polish is done well before
    # the runs leave the samples without usable gradients alone themselves, and the polish
    # those with fewer steps than it needs
    least = SECOND_MIN_STEPS if second else REFINE_MIN_STEPS if refine or walk else 1
    ready = (left >= least) & torch.isfinite(state.best_norm)
    if not bool(ready.any()):
        return
    # one batched call: each sample leaves it when its own steps are done (.ownsteps)
    longest = int(left[ready].max())
    if polish:
        weights = l1_weights(distance, problem.x)
        # a long search reserved steps for the exchange: it goes first, the polish after it
        # takes back its overshoot; otherwise the polish first and the exchange on the rest
        first = reserved_steps(steps, distance.p, config) > 0
        if untried is not None and not first:
            # a walk toward the nearest class no run drove toward, from the clean input,
            # where the polish keeps its fewest steps after it (.exchange, ``next``)
            spare = unspent_steps(steps, before, state) - POLISH_MIN_STEPS
            exchange_run(problem, state, weights, spare, ranked, only=ready, kinds=("next",),
                         untried=untried)  # fmt: skip
            # (a half-spent step counts as spent, as after the reserved rounds below)
            left = _left(steps, before, state).clamp(max=POLISH_MAX_STEPS)
        if first:
            exchange_run(problem, state, weights, unspent_steps(steps, before, state), ranked,
                         only=ready)  # fmt: skip
            left = _left(steps, before, state).clamp(max=POLISH_MAX_STEPS)
            ready &= left >= 1
        pre = None if first or reserved is None else ready & reserved
        if pre is not None:
            # the samples whose sparse flip kept steps for the exchange: its rounds first
            exchange_run(problem, state, weights, _left(steps, before, state) - POLISH_MIN_STEPS,
                         ranked, only=pre)  # fmt: skip
            left = _left(steps, before, state).clamp(max=POLISH_MAX_STEPS)
            ready &= ~pre | (left >= 1)
        if bool(ready.any()):
            polish_run(problem, int(left[ready].max()), state, weights, only=ready,
                       lengths=left)  # fmt: skip
        if pre is None:
            exchange_run(problem, state, weights, _left(steps, before, state), ranked,
                         only=ready, kinds=("keep",) if first else (*KINDS, "keep"))  # fmt: skip
        else:
            exchange_run(problem, state, weights, _left(steps, before, state), ranked,
                         only=ready & ~pre, kinds=(*KINDS, "keep"))  # fmt: skip
            exchange_run(problem, state, weights, _left(steps, before, state), ranked,
                         only=ready & pre, kinds=("keep",))  # fmt: skip
        return
    if second:
        lagrangian_run(problem, longest, state, only=ready, lr_init=config.unspent_lr,
                       lengths=left)  # fmt: skip
        return
    if walk and untried is not None:  # a probe of the next class from the clean input
        toward = ready & (untried >= 0)
        if bool(toward.any()):
            epsball_run(problem, int(left[toward].max()), config, torch.zeros_like(problem.x),
                        state, untried.clamp(min=0), check=False, only=toward,
                        lengths=left)  # fmt: skip
        ready &= ~toward
    if refine and ranked is not None and bool(ready.any()):
        # the runner-up: the nearest ranked class but the best flip's
        other = probe_classes(ranked, state.best_class, 1)[:, 0]
        epsball_run(problem, int(left[ready].max()), config, state.best_delta, state, other,
                    check=False, only=ready, lengths=left)  # fmt: skip
