"""The L∞ probes' unspent steps go to the last refinement of the best flip (its own length).

A class probe lets a sample leave early once the probe's class is hopeless
(:mod:`mmargin.engine.legstop`), and on L∞ a probe whose class is out of first-order reach
is not run at all (:func:`mmargin.engine.legstop.out_of_reach`). The steps a sample saves
this way are known before its last refinement starts, so that refinement can take them:
each sample refines its best flip for the refinement's planned steps plus the probe steps
it has not spent, its ε-ball schedules annealing over its own length
(``epsball_run(lengths=...)``: one batched run, each sample ends where a run of its own
length on it alone ends). A sample that a probe left stalled keeps its steps for the
leftover's walk toward the next class (:mod:`mmargin.engine.leftover`). Only the samples
whose best flip lies below ``GradientConfig.stretch_below`` (0.9) × the first-order distance
of their nearest class at the clean input are stretched (:func:`far_below`, below); the
others keep their steps unspent.

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

Ungated, the rule was off by default in session 16: on the evaluation models (100 images,
1000 passes) the adversarially trained CNN's L∞ optimality rose 0.9861 → 0.9895 in one
pool with the run without it (still short of the issue's 0.99), but the batch-norm CNN
spent 994 instead of 877 passes per sample, and its time rose by more than the passes'
share: 22.3 → 30.0 s in the bench's run, 23.2 / 21.3 → 27.7 / 25.3 s in alternating reruns
on an idle machine (+19 % for +13 % passes: the stretched samples run on in thinner
batches after the others have left; tune_cnn_bn: 10.9 → 12.3 s for 888 → 983 passes). Its
paired time against the fastest peer above 0.9 (FMN), 0.82 without it, was 1.31 with it.

The gate (session 17): the stretch pays where the model is far from linear along the
sample's search, and the sample's own search says so before its last refinement: its best
flip against the first-order distance ``(z_y − z_c) / ‖∇(z_y − z_c)‖₁`` of its nearest
ranked class at the clean input (computed once by the ranking). On a linear model the ratio
is never below 1. Per model, the median ratio of the samples with steps to stretch (L∞,
1000 passes): tune_cnn_fgsm_co 0.87, tune_cnn_fgsm_short 0.82, tune_cnn_bn 1.007, mnist_cnn
0.96, tune_mlp 1.03, but tune_cnn_fgsm 1.16 (its flips lie above first order). Measured
(L∞, images 0–199, one pool per model of the runs with the stretch off, on for every sample,
and gated at 0.9; all (halves 0–99 / 100–199), passes per sample; at 100 and 250 passes
no probe leaves steps: bit-identical to the stretch off on tune_cnn_fgsm, tune_cnn_fgsm_co
and tune_cnn_bn; tune_cnn_pgd not measured):

- tune_cnn_fgsm_co (held out) @990 / 1000 / 1010 off 0.9887 / 0.9892 / 0.9879 (860 / 868 /
  870), every sample 0.9904 / 0.9923 / 0.9905 (980 / 990 / 1000), gated 0.9893 / 0.9916 /
  0.9899 (919 / 930 / 938): 68 % of the gain over the three budgets; @1000 halves 0.9894 /
  0.9886 → 0.9923 / 0.9918 → 0.9915 / 0.9913; @500 0.9399 (383) → 0.9470 (493) → 0.9440
  (449),
- tune_cnn_fgsm_short @990 / 1000 / 1010 off 0.9949 / 0.9950 / 0.9948 (927 @1000), every
  sample 0.9960 / 0.9962 / 0.9959 (987), gated 0.9957 / 0.9958 / 0.9956 (955): 73 % of the
  gain; @1000 halves 0.9951 / 0.9942 → 0.9962 / 0.9955 → 0.9959 / 0.9951; @500 0.9649
  (391) → 0.9732 (490) → 0.9723 (471),
- tune_cnn_fgsm @990 / 1000 / 1010 off 0.9803 / 0.9815 / 0.9786 (936 @1000), every sample
  0.9817 / 0.9812 / 0.9802 (995), gated 0.9803 / 0.9815 / 0.9786 (937): the gate stretches
  almost none of its samples, and at 1000 passes the stretch's gain there was within the
  plan's chaos; @500 0.9322 (413) → 0.9450 (495) → 0.9332 (419): its 500-pass gain is lost,
- tune_cnn_bn @1000 0.9980 (890) → 0.9983 (988) → 0.9981 (898, +0.9 %); @500 0.9948 (405)
  → 0.9962 (491) → 0.9948 (413),
- mnist_cnn @1000 0.9995 (894) → 0.9996 (987) → 0.9995 (917, +2.5 %); @500 0.9984 (407) →
  0.9989 (490) → 0.9986 (437),
- tune_mlp @1000 1.0000 (905) → 1.0000 (986) → 1.0000 (913, +0.8 %); @500 0.9998 (420) →
  0.9998 (490) → 0.9998 (427).

Process CPU of the search on tune_cnn_bn (L∞ @1000, 200 images, one process, three
alternating triples on a shared machine): off 26.57 / 26.58 / 26.70 s, gated 27.53 / 26.41 /
27.07 s (median +1.8 % for +0.9 % passes: the few stretched samples still run on in a thin
batch), every sample 29.25 / 28.96 / 30.67 s. The MILP-exact L∞ ratios of the digits MLPs
stay put: digits_mlp's 50 points median 1.00005, max 1.0057; tune_digits_mlp's 117 median
1.00003, max 1.0075.

Screened on the same runs (each sample's result is its own, so a gate on a feature of the
sample's search is exactly the stretched or the unstretched run's flip; L∞ @1000, gain of
optimality kept in the two-run pool, passes above the stretch off): the ratio at 0.95
instead of 0.9 kept a little more (tune_cnn_fgsm_co +0.0025 of +0.0030, short +0.0009 of
+0.0012) but cost mnist_cnn +4.1 % and tune_cnn_bn +3.2 % passes; at 0.85 it kept less
(co +0.0013, short +0.0008). The planned refinement's own gain (its relative drop of the
best flip) decides only after that refinement, so it gates a second refinement of the
unspent steps toward the best flip's class (one pool of the stretch off, every sample
stretched and that second run; co @1000): for every sample 0.9954 → 0.9969 (868 → 990),
the stretch 0.9985; only where the planned refinement dropped the best by > 0.3 % 0.9966
at +9.2 % passes (tune_cnn_bn +2.2 %; > 0.1 %: co 0.9968 at +10.9 %, tune_cnn_bn
+3.8 %), against 0.9978 at +7.1 % for the gated stretch in the same pool. The drop over the
refinement's last 10 % did not separate tune_cnn_fgsm_short from tune_cnn_bn (medians
0.02 % and 0.04 %). The unspent steps themselves (stretch only ≥ 60): co +0.0020 at
+12.7 %, tune_cnn_bn +8.2 %. A probe having won (the first run's best beaten by a probe):
co +0.0007. A second gate side for flips above 1.2 × first order (tune_cnn_fgsm's): at 1000
+0.0005 there (within its chaos), at 500 +0.0045 of the stretch's +0.0131 (+8.8 % passes),
tune_mlp +1.4 % at 1000; one model's figure, not taken. The gate that stretched only the
samples whose first run was still settling (session 16: its best norm fell by more than
``LATE_RTOL`` over its last ``LATE_SHARE`` of steps, the ``incomplete_optimisation`` watch
of :class:`~.epsball.Late`): the annealed first run had settled on almost every sample, so
it kept nearly nothing of the gain (tune_cnn_fgsm_co @500 / @1000 0.9399 / 0.9892 → 0.9411 /
0.9893 against the stretch's 0.9470 / 0.9923; tune_cnn_fgsm_short, tune_cnn_bn, mnist_cnn,
tune_cnn_pgd and tune_mlp bit-identical to the base).
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
    state: SearchState, stuck: Tensor, near: Tensor | None = None,
) -> Tensor | None:  # fmt: skip
    """Per sample, the steps the runs before leg ``n`` of ``plan`` left unspent (their
    planned steps less the steps the sample took since its queries were ``before``), 0 for
    the ``stuck`` samples and, with ``config.stretch_below`` > 0 and ``near`` (per sample,
    the first-order distance at the clean input of its nearest ranked class), for those
    whose best flip is not below ``stretch_below`` × ``near`` (:func:`far_below`); ``None``
    where the rule is off (``config.stretch_refine``, L∞ only) or no sample has any."""
    if p != math.inf or not config.stretch_refine:
        return None
    planned = sum(leg.steps for leg in plan[:n] if leg.steps >= 1)
    spent = torch.div(state.queries - before, 2, rounding_mode="floor")
    extra = (planned - spent).clamp(min=0)
    keep = ~stuck
    if config.stretch_below > 0 and near is not None:
        keep &= far_below(state.best_norm, near, config.stretch_below)
    extra = torch.where(keep, extra, torch.zeros_like(extra))
    return extra if bool(extra.any()) else None


def far_below(best: Tensor, near: Tensor, ratio: float) -> Tensor:
    """Per sample, whether its best flip ``best`` is below ``ratio`` × ``near``, the
    first-order distance of its nearest class at the clean input: the model is far from
    linear along its search (a sample without a flip never is)."""
    return torch.isfinite(best) & (best < ratio * near)
