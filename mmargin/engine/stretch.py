"""The L∞ probes' unspent steps go to the last refinement of the best flip (its own length).

A class probe lets a sample leave early once the probe's class is hopeless
(:mod:`mmargin.engine.legstop`), and on L∞ a probe whose class is out of first-order reach
is not run at all (:func:`mmargin.engine.legstop.out_of_reach`). The steps a sample saves
this way are known before its last refinement starts, so that refinement can take them:
each sample refines its best flip for the refinement's planned steps plus the probe steps
it has not spent, its ε-ball schedules annealing over its own length
(``epsball_run(lengths=...)``: one batched run, each sample ends where a run of its own
length on it alone ends). A sample that a probe left stalled keeps its steps for the
leftover's walk toward the next class (:mod:`mmargin.engine.leftover`).

Where the passes went before (L∞, 1000 passes: 495 steps after ranking, a first run of
194, three probes of 48, a refinement of 148; 200 images, each leg's steps per sample and
the samples whose final flip it set): the first run and the refinement always run to
their ends, and only the probes leave steps: on tune_cnn_fgsm they took 39.0 / 36.6 /
36.8 of their 48 steps (10 / 16 / 21 samples skipped a probe), on tune_cnn_bn 37.9 / 31.0
/ 25.1 (23 / 38 / 53 skipped), on tune_mlp 37.1 / 30.1 / 24.0; the leftover's walk took
2.0, 0.8 and 11.8 steps per sample (9, 3 and 49 stalled samples), the rest stayed unspent:
935, 890 and 905 passes per sample. On the adversarially trained CNNs the refinement is
where the flips are made (it set the final flip of 163 of 200 samples on tune_cnn_fgsm,
111 on tune_cnn_bn; a probe 1 each), and at 500 passes (probes of 24 steps) the exits left
even more unspent (413, 391 and 405 passes per sample on tune_cnn_fgsm,
tune_cnn_fgsm_short and tune_cnn_bn).

Measured (L∞, images 0–199, base and stretched runs pooled per model; all (halves 0–99 /
100–199), passes per sample; at 100 and 250 passes the probes are too short for an exit
or a skip, so every distance is the same, bit for bit):

- tune_cnn_fgsm @500 0.9322 (0.9359 / 0.9264, 413) → 0.9450 (0.9482 / 0.9402, 495);
  @990 / 1000 / 1010 0.9803 / 0.9815 / 0.9786 (922 / 936 / 941) → 0.9817 / 0.9812 /
  0.9802 (984 / 995 / 1005); halves @1000 0.9812 / 0.9811 → 0.9808 / 0.9810,
- tune_cnn_fgsm_short @500 0.9649 (0.9633 / 0.9618, 391) → 0.9732 (0.9708 / 0.9722, 490);
  @990 / 1000 / 1010 0.9949 / 0.9950 / 0.9948 (927 @1000) → 0.9960 / 0.9962 / 0.9959
  (987),
- tune_cnn_pgd @500 0.9935 (0.9939 / 0.9917, 406) → 0.9952 (0.9953 / 0.9938, 492);
  @990 / 1000 / 1010 0.9974 / 0.9977 / 0.9974 (924) → 0.9976 / 0.9978 / 0.9976 (992),
- tune_cnn_bn @500 0.9929 (0.9926 / 0.9932, 405) → 0.9943 (0.9941 / 0.9946, 491);
  @990 / 1000 / 1010 0.9972 / 0.9961 / 0.9963 (890) → 0.9975 / 0.9965 / 0.9966 (988),
- mnist_cnn @500 0.9978 (0.9970 / 0.9985, 407) → 0.9983 (0.9975 / 0.9989, 490);
  @990 / 1000 / 1010 0.9988 / 0.9989 / 0.9992 (894) → 0.9989 / 0.9990 / 0.9992 (987),
- tune_mlp @500 0.9998 → 0.9998 (420 → 490), @1000 1.0000 → 1.0000 (905 → 986; the
  worst sample 1.005× → 1.001× the pool's best),
- tune_cnn_fgsm_co (held out, not decided on) @500 0.9399 (0.9469 / 0.9306, 383) →
  0.9470 (0.9540 / 0.9380, 493); @990 / 1000 / 1010 0.9887 / 0.9892 / 0.9879 (860 / 868 /
  870) → 0.9904 / 0.9923 / 0.9905 (980 / 990 / 1000); halves @1000 0.9894 / 0.9886 →
  0.9923 / 0.9918.

The MILP-exact L∞ margins of the digits MLPs stay put (found / exact @1000, @500):
digits_mlp's 50 points median 1.00005 → 1.00004, max 1.0057 → 1.0057 (@500 1.00009 /
1.0058 → 1.00008 / 1.0060); tune_digits_mlp's 117 median 1.00004 → 1.00003, max 1.0075 →
1.0075 (@500 1.00010 / 1.0206 → 1.00007 / 1.0206). Process CPU of the bench's whole run
of tune_mlp and tune_cnn_bn @1000 (one process, loading included; three alternating pairs
on a shared machine): 27 / 26 / 27 s → 28 / 28 / 33 s, about the passes' share.

Screened instead, the same unspent steps after the planned runs (the leftover,
``GradientConfig.unspent_refine``: a refinement of the best flip toward the runner-up
class, each sample for its own steps): tune_cnn_fgsm @500 0.9372 (pooled with base and
the stretch: base 0.9317, stretch 0.9446), @990 / 1000 / 1010 0.9803 / 0.9810 / 0.9789
(base 0.9798 / 0.9810 / 0.9781, stretch 0.9812 / 0.9807 / 0.9797); tune_cnn_fgsm_short
@500 0.9742 (base 0.9631, stretch 0.9715), @1000 0.9933 (base 0.9932, stretch 0.9944):
at 1000 passes it gained nothing where the longer refinement did. The same toward the best
flip's own class (a second, separate refinement of the unspent steps after the planned
one; one pool of base, stretch, runner-up and own class): tune_cnn_fgsm @500 0.9373
(stretch 0.9442, base 0.9314), @990 / 1000 / 1010 0.9799 / 0.9813 / 0.9793 (stretch
0.9808 / 0.9804 / 0.9793, base 0.9795 / 0.9806 / 0.9778); tune_cnn_fgsm_short @500 0.9706
(stretch 0.9714, base 0.9630), @990 / 1000 / 1010 0.9937 / 0.9939 / 0.9936 (stretch
0.9941 / 0.9943 / 0.9940, base 0.9931 / 0.9931 / 0.9929): one refinement annealed over
the longer length gained more than two of the same total length at 500 passes, and as
much or more at 1000.

Off by default (``GradientConfig.stretch_refine``): on the evaluation models (100 images,
1000 passes, session 16) the adversarially trained CNN's L∞ optimality rose 0.9861 →
0.9895 in one pool with the run without it (still short of the issue's 0.99), but the
batch-norm CNN spent 994 instead of 877 passes per sample, and its time rose by more than
the passes' share: 22.3 → 30.0 s in the bench's run, 23.2 / 21.3 → 27.7 / 25.3 s in
alternating reruns on an idle machine (+19 % for +13 % passes: the stretched samples run
on in thinner batches after the others have left; tune_cnn_bn: 10.9 → 12.3 s for 888 →
983 passes). Its paired time against the fastest peer above 0.9 (FMN), 0.82 without it,
was 1.31 with it: a met time target lost for a quality gain that reached no target.
Screened to give the steps only where they pay: only to the samples whose first run was
still settling (its best norm fell by more than ``LATE_RTOL`` over its last ``LATE_SHARE``
of steps, the ``incomplete_optimisation`` watch of :class:`~.epsball.Late`): the annealed
first run had settled on almost every sample, so the gate kept nearly nothing of the gain
(tune_cnn_fgsm_co @500 / @1000 0.9399 / 0.9892 → 0.9411 / 0.9893 against the stretch's
0.9470 / 0.9923; tune_cnn_fgsm_short, tune_cnn_bn, mnist_cnn, tune_cnn_pgd and tune_mlp
bit-identical to the base).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmargin.engine.passes import Leg
from mmargin.engine.spec import GradientConfig
from mmargin.engine.state import SearchState

__all__ = ["stretch_steps"]


def stretch_steps(
    p: float, config: GradientConfig, plan: list[Leg], n: int, before: Tensor,
    state: SearchState, stuck: Tensor,
) -> Tensor | None:  # fmt: skip
    """Per sample, the steps the runs before leg ``n`` of ``plan`` left unspent (their
    planned steps less the steps the sample took since its queries were ``before``), 0 for
    the ``stuck`` samples; ``None`` where the rule is off (``config.stretch_refine``, L∞
    only) or no sample has any."""
    if p != math.inf or not config.stretch_refine:
        return None
    planned = sum(leg.steps for leg in plan[:n] if leg.steps >= 1)
    spent = torch.div(state.queries - before, 2, rounding_mode="floor")
    extra = (planned - spent).clamp(min=0)
    extra = torch.where(stuck, torch.zeros_like(extra), extra)
    return extra if bool(extra.any()) else None
