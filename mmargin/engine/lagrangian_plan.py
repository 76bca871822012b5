"""How a gradient search plans its Lagrangian runs (:mod:`.lagrangian`): how many steps
each run gets on each distance and plan, its first step, which of its samples are
hastened, and where among the search's runs it goes. The run itself is
:func:`mmargin.engine.lagrangian.lagrangian_run`."""

from __future__ import annotations

from mmargin.engine.lagrangian import LR_INIT, TAIL
from mmargin.engine.passes import is_short
from mmargin.engine.spec import GradientConfig

__all__ = [
    "MIN_STEPS",
    "extended_steps",
    "lagrangian_hasten",
    "lagrangian_lr",
    "lagrangian_slot",
    "lagrangian_steps",
    "second_forks",
    "second_steps",
]

MIN_STEPS = 8
"""A shorter run does not get past its first flip: its steps go to the ε-ball runs."""


def lagrangian_steps(steps: int, p: float, config: GradientConfig) -> int:
    """How many of an untargeted search's ``steps`` go to the Lagrangian run on the Lp
    distance ``p``: the configured share on L2 and L1 (``short_lagrangian`` in a short
    search, :func:`~mmargin.engine.passes.is_short`), none on L∞ and L0 (or when the
    share leaves fewer than :data:`MIN_STEPS`).

    Where a 250-pass L2 search's flips come from (session 15, tune_cnn_fgsm, images 0–99,
    pooled with the peers): the first ε-ball run (22 steps) alone 0.537, the Lagrangian run
    (55 steps) alone 0.648, the best of both 0.713, the two 8-step probes 0.716, the
    refinement of the best flip (26 steps) 0.873. The Lagrangian run's own flip, as a
    geometric mean of the ratio to the 1000-pass search's, is 1.40 after 55 steps, 1.20
    after 77, 1.15 after 94 (its 1000-pass run: 1.11 after 121), but giving it 0.7 or
    0.85 of the steps left the final flips where they were (1.081 / 1.089 against 1.096):
    the first run and the refinement lose what it gains. On tune_cnn_bn the first run wins
    57 of 100 samples and the Lagrangian run alone is worse than it (0.844 against 0.897).
    Screens at 250 passes (tune_cnn_fgsm, images 0–99; single runs there move by ±0.02
    with any change to the plan, so none of these is a signal): this share 0.4 / 0.6 / 0.7
    −0.07 / −0.01 / +0.01, one probe instead of two +0.002, ``first_share`` 0.25 / 0.55
    +0.001 / −0.011, the first step 0.15 −0.011, :data:`.lagrangian.TAIL` 0 / 0.3 / 0.4 /
    0.5 −0.15 / −0.01 / −0.01 / −0.02 (the tail's convergence is what the refinement builds
    on), :data:`.lagrangian.HORIZON` 250 / 1000 −0.02 / −0.01,
    :data:`.lagrangian.LR_REDUCTION` 0.001 −0.04, the
    refinement's α/γ start 0.3/0.05, 0.3/0.02, 0.5/0.02, 1/0.02 (instead of 1/0.05) +0.014
    / +0.005 / +0.001 / −0.008, ``gamma_init`` 0.1 / 0.2 for every ε-ball run +0.008 /
    0.000. Weighting the distance term of the Lagrangian ×3 (its walk along the boundary
    is what a short run lacks) gained on the FGSM CNNs' tuned half (tune_cnn_fgsm +0.03 at
    each of 240 / 250 / 260 passes, tune_cnn_fgsm_short +0.023) but lost on
    tune_cnn_fgsm's held-out half (−0.010) and on mnist_cnn (−0.0024 / −0.0005); ×1.5 / 2
    / 4 / 6 were +0.02 / −0.002 / −0.01 / +0.009 on tune_cnn_fgsm (chaos, no trend); ×3
    before the tail only +0.011 there, mnist_cnn −0.0029. A plain 100-pass search split
    as ε-ball run, Lagrangian run and refinement (shares 0.1–0.3 / 0.4–0.6 / rest) lost
    to the one ε-ball run (tune_cnn_fgsm 0.54–0.60 against 0.69). Screens of session 17
    (L2, images 0–199, pooled with the peers and every run of the session, change @240 /
    250 / 260): the short run from the first run's best flip scaled by 0.9 (decaying as
    from the clean input) lost tune_cnn_fgsm −0.133 / −0.109 / −0.118 and
    tune_cnn_fgsm_short −0.103 / −0.062 / −0.066 (the two runs' different basins are
    what the best of both gains); ALMA's ρ check fitted to the run's length (every
    ``max(1, 10 · steps / 500)`` steps, i.e. each step at 250 passes) lost −0.051 / −0.032
    / −0.029 and −0.047 / −0.022 / −0.022."""
    share = {2.0: config.lagrangian, 1.0: config.lagrangian_l1}.get(p, 0.0)
    if is_short(steps, p, config):
        share = config.short_lagrangian
    count = int(steps * share)
    return count if count >= MIN_STEPS else 0


def second_steps(steps: int, p: float, config: GradientConfig) -> int:
    """How many of an untargeted search's ``steps`` go to the second Lagrangian run from the
    clean input (first step ``config.lagrangian_second_lr``), right after the first: on L2
    outside the short plan (:func:`~mmargin.engine.passes.is_short`)
    ``config.lagrangian_second`` of them, otherwise none (or when that leaves fewer than
    :data:`MIN_STEPS`).

    On the adversarially trained tuning models a Lagrangian run from the clean input is
    where most final flips come from, but which basin it settles in depends on its path:
    per sample, the 1000-pass search's best was often 1.2–1.8× the flip its own 500-pass
    search (a longer-stepped Lagrangian run) or ALMA found, in the same class. The
    leftover's second run (:mod:`mmargin.engine.leftover`) reached only the samples whose
    probes left early, with 56–72 steps. Measured at 1000 passes (L2, images 0–199, pooled
    with ALMA, DDN, FMN and the two runs compared; halves 0–99 / 100–199), with 0.25 of the
    steps (the first run's share 0.3 → 0.25) and a first step of 0.5: tune_cnn_fgsm 0.912 →
    0.951 (0.909 / 0.883 → 0.956 / 0.923), tune_cnn_fgsm_short 0.953 → 0.988 (0.963 /
    0.925 → 0.987 / 0.985), mnist_cnn 0.9978 → 0.9977 (0.9993 / 0.9964 → 0.9985 /
    0.9971), at fewer passes (981 → 907, 968 → 898, 962 → 923: shorter probes leave
    earlier, with too few steps for the leftover's run). In a wider pool of every variant:
    the first step 0.2 < 0.3 < 0.4 ≈ 0.5 ≈ 0.6 on both robust models (1.0 lost on
    tune_cnn_fgsm: a step further from the first run's 0.1 reaches other basins, up to a
    point); shares 0.3 + 0.2 gained ~0.011 less on both robust models, 0.2 + 0.3 ~0.007
    less, 0.3 + 0.15 less (the leftover ran more often), three runs of 0.2 (first steps
    0.1, 0.3, 0.2) less."""
    if p != 2.0 or is_short(steps, p, config):
        return 0
    count = int(steps * config.lagrangian_second)
    return count if count >= MIN_STEPS else 0


def second_forks(second: int, config: GradientConfig) -> tuple[tuple[int, ...], int]:
    """Where the second Lagrangian run of ``second`` steps forks off tails, and how long
    each is: ``config.second_forks`` tails of the run's :data:`.lagrangian.TAIL` share,
    one before each of the run's last such stretches (none: ``((), 0)``; only a long L2
    plan has the run, :func:`second_steps`). A tail's steps come on top of the plan: the
    search's last refinement gives them back, per sample, where the probes did not leave
    them unspent (:func:`mmargin.engine.gradient._class_aware`), so no sample passes its
    budget. At 1000 passes (a second run of 123 steps): one tail of 24 steps before step 98.

    Where a 1000-pass L2 search loses (session 18; images 0–199, one pool of ALMA, DDN,
    FMN and main's runs at 100–1010 passes; ratio = a sample's flip / the pool's best):
    the last refinement is the last run to improve 171 of tune_cnn_fgsm's 200 flips
    (tune_cnn_fgsm_co 188, tune_cnn_bn 189) but moves them little (geometric mean ratio
    1.082 before it, 1.059 after; co 1.034 → 1.022) and never out of their class: the
    basin is chosen before it, by the first ε-ball run (1.298 alone; co 1.093), the first
    Lagrangian run (1.162; co 1.080) or this one (1.279; co 1.140). Of the 99 samples of
    tune_cnn_fgsm more than 2 % above the pool (co 73, bn 5), 34 had the 990- or 1010-pass
    search at the pool's best in the same class, 16 in another class, 49 neither (co 42 /
    8 / 23): mostly another local minimum of the same class, out of the refinement's reach
    (#193: 1.325 before and 1.324 after the refinement; the 990-pass search's second run
    landed at 1.092 in the same class, its refinement at 1.0). Per sample the smaller of
    the 990-, 1000- and 1010-pass searches' flips scores 0.979 against 0.923 / 0.937 /
    0.940 for each (co 0.994 against 0.974 / 0.977 / 0.971): diversity pays, as for L1
    (:func:`~mmargin.engine.passes.second_first`). The Lagrangian runs are that chaotic
    in their own length: this run alone (first step 0.5) for 115 / 119 / 123 / 127 / 131
    steps ends at 1.289 / 1.272 / 1.282 / 1.239 / 1.246, and per sample the largest of the
    five is a median 1.40× the smallest (p90 1.85; first step 0.1: 1.11). A draw is the
    walk's state where its decay's tail begins, converged by that tail; shorter runs are
    worse draws (62 steps: 1.579, first step 0.3: 1.476), so more runs of the same total
    length lose. A tail forked off the walk costs only its own steps: two of 24 before
    steps 74 and 98 take the run alone to 1.171 (and the smaller of it and the first
    Lagrangian run's flip from 1.108 to 1.084); at the run's own cost (a run of 99 steps
    with one fork of 24 before step 75 / 60, or 87 steps with two of 18) 1.265 / 1.246 /
    1.259, with the first run 1.110 / 1.107 / 1.109: the tails' steps pay for the draws.
    ALMA (adv_lib 0.2.8 at 1000 passes: one run of 500 steps from the clean input, first
    step 0.1 decaying to 0.01 of it from the first flip to the end, P2 penalty, μ and ρ
    from 1, ρ × 1.2 every 10 steps without progress, the same RMSProp) is this run's
    formulation; one such run of the two runs' 246 steps (first step 0.1) ends at 1.125,
    at 0.5 at 1.114, against 1.108 for the two runs. ALMA itself, same pool, @1000:
    tune_cnn_fgsm 0.796, co 0.932, bn 0.979, mnist_cnn 0.987.

    Measured in the search (L2, images 0–199, the pool above with every run compared; all
    (halves 0–99 / 100–199), passes per sample), off → one tail, @990 / 1000 / 1010:
    - tune_cnn_fgsm 0.9317 (0.9296 / 0.9131) / 0.9185 (0.9143 / 0.9026) / 0.9345 (0.9409 /
      0.9054) → 0.9394 (0.9394 / 0.9207) / 0.9253 (0.9200 / 0.9117) / 0.9406 (0.9450 /
      0.9160), mean 0.9282 → 0.9351, 894 / 904 / 914 → 942 / 952 / 962 passes,
    - tune_cnn_fgsm_short 0.9742 / 0.9782 / 0.9782 → 0.9752 / 0.9824 / 0.9805 (mean halves
      0.9811 / 0.9631 → 0.9823 / 0.9682), 882–901 → 929–949 passes,
    - tune_cnn_fgsm_co (held out) 0.9761 / 0.9729 / 0.9702 → 0.9774 / 0.9741 / 0.9742
      (mean halves 0.9754 / 0.9594 → 0.9782 / 0.9612; @1000 0.9742 / 0.9609 → 0.9763 /
      0.9606), 882–902 → 929–949 passes,
    - tune_cnn_pgd 0.9948 / 0.9942 / 0.9946 → 0.9953 / 0.9946 / 0.9954 (each half up),
    - tune_cnn_bn 0.9923 / 0.9930 / 0.9939 → 0.9926 / 0.9933 / 0.9939 (@1000 halves 0.9927
      / 0.9921 → 0.9938 / 0.9918), 899–919 → 945–965 passes,
    - mnist_cnn 0.9961 / 0.9972 / 0.9968 → 0.9967 / 0.9968 / 0.9971 (mean 0.9967 → 0.9969;
      @1000 halves 0.9970 / 0.9966 → 0.9967 / 0.9967), 908–928 → 949–969 passes,
    - tune_mlp 0.9984 / 0.9985 / 0.9988 → 0.9982 / 0.9985 / 0.9988 (@990 one sample, #190,
      1.078× the pool instead of 1.0003×: another basin won before the refinement),
      915–935 → 954–974 passes.

    100, 250 and 500 passes are bit-identical (checked on tune_cnn_fgsm and tune_mlp: the
    short plan has no second run). Two tails (before steps 73 and 98, 48 more steps) gained
    more on tune_cnn_fgsm, at ~90 more passes per sample (same pool with both):
    0.9435 (0.9443 / 0.9249) / 0.9330 (0.9274 / 0.9222) / 0.9440 (0.9535 / 0.9141), mean
    0.9402, 983 / 993 / 1003 passes; tune_cnn_fgsm_co (a pool with both) 0.9749 / 0.9717
    / 0.9690 → one tail 0.9762 / 0.9729 / 0.9730 → two 0.9777 / 0.9751 / 0.9759 (each half
    up), 975–995 passes; on the clean CNNs it moved nothing (tune_cnn_bn mean 0.9929 →
    0.9931 → 0.9930, mnist_cnn 0.9967 → 0.9968 → 0.9967, @1000 0.9972 → 0.9967 → 0.9966),
    977–997 passes. Not the default: on the evaluation CNN trained like these, the
    paired time at 1000 passes was 0.83× ALMA's at 887 passes per sample (session 15), and
    ~10 % more passes would take it to about the 0.9 the issue allows; one tail costs ~5 %
    (tune_cnn_fgsm, 100 images, process CPU time of three alternating pairs, off → on:
    median 1.02×, 906 → 954 passes, on a loaded machine).

    Off by default (``second_forks`` 0) after the evaluation run: one tail took the
    evaluation FGSM CNN's L2 @1000 from 0.9549 to 0.9589 (batch-norm CNN 0.9932 → 0.9938,
    MLP 0.9986 level; 100 images, one pool with the stored runs) at 935 passes per sample
    instead of 887 (process CPU of the main run 13.5 s against 12.8 s without it under the
    same load, 12.1 s idle in session 15). That CNN's paired time without the tail, 0.83×
    ALMA idle in session 15, read 0.94× idle in session 18 (loaded, 0.92× with the tail
    and 0.94× without it): already at the 0.9 the issue allows, and the tail's ~5 % would
    move it the wrong way, for a quality gain that meets no target."""
    tail = int(second * TAIL)
    if config.second_forks < 1 or tail < MIN_STEPS:
        return (), 0
    forks = tuple(second - (i + 1) * (tail + 1) for i in range(config.second_forks))
    return tuple(k for k in forks if k > 0), tail


def lagrangian_lr(steps: int, p: float, config: GradientConfig) -> float:
    """The first step size (a share of each input's largest magnitude) of the Lagrangian
    run of an untargeted search of ``steps`` steps on the Lp distance ``p``: in a short L2
    search (:func:`~mmargin.engine.passes.is_short`) ``short_lagrangian_lr``, otherwise
    :data:`.lagrangian.LR_INIT`. With ~60 steps (250 passes) a first step of 0.1 decays
    before the run
    has walked the boundary of a robust model. Measured with 0.2, L2 @250, 100 images pooled
    with the peers: tune_cnn_fgsm_short 0.889 → 0.929, tune_cnn_fgsm 0.784 → 0.824 (both
    halves of 50 up; on images 100–199 0.858 → 0.881 and 0.767 → 0.799), mnist_cnn 0.990 →
    0.993; @500 mnist_cnn lost a little (0.9982 → 0.9968) while the robust models gained
    0.012–0.018. 0.05 lost; 0.3 was mixed between the halves. Since session 13 the short
    run is hastened (:func:`lagrangian_hasten`), which reaches the first flip sooner, and
    its first step is 0.1 again (with the hastening, 0.2 lost on tune_cnn_bn)."""
    if p == 2.0 and is_short(steps, p, config):
        return config.short_lagrangian_lr
    return LR_INIT


def lagrangian_hasten(steps: int, p: float, config: GradientConfig) -> tuple[int, float] | None:
    """The warm-up rule of the Lagrangian runs of an untargeted search of ``steps`` steps on
    the Lp distance ``p``: on L2 ``(hasten_after, factor)``, the factor
    ``short_hasten`` in a short search (:func:`~mmargin.engine.passes.is_short`, its one
    run) and ``long_hasten`` in a longer one (both its runs from the clean input, the
    second's included): from that step on, a sample without a flip yet has its RMSProp
    statistic multiplied by the factor each step, so its steps grow until it flips
    (``lagrangian_run(hasten=...)``); on other distances, or with the factor 1, none.

    RMSProp's statistic starts at 1 (ALMA's choice), far above the squared gradients of the
    spread-normalised constraint, so the first steps are the gradient itself, small where
    the model is robust: on the adversarially trained tuning CNNs the median sample first
    flipped after 14–15 of the 60 steps of a 250-pass search (5–6 on tune_cnn_bn and
    mnist_cnn), and the run had that much less time to walk the boundary. Starting the
    statistic lower hastens every sample and loses where the first flips come early
    (Lagrangian run alone, 60 steps, first step 0.2, mean best flip on images 0–199:
    statistic 0.01: tune_cnn_fgsm 1.983 → 1.750, tune_cnn_fgsm_short 2.158 → 2.008,
    tune_cnn_bn 1.435 → 1.505, mnist_cnn 1.574 → 1.688); hastening only the samples still
    without a flip after 8 steps leaves those that flip early as they were.

    Measured with ``(8, 0.3)`` and a first step of 0.1 (``short_lagrangian_lr``, 0.2
    before: the hastened run no longer needs the larger step to reach its first flip), L2,
    images 0–199, pooled with ALMA, DDN, FMN and both runs at every budget; all (halves
    0–99 / 100–199), before → after, at 250 passes:
    tune_cnn_fgsm 0.7895 (0.7875 / 0.7402) → 0.8374 (0.8486 / 0.7820),
    tune_cnn_fgsm_short 0.8928 (0.9152 / 0.8302) → 0.9329 (0.9445 / 0.8831),
    tune_cnn_bn 0.9794 (0.9788 / 0.9766) → 0.9810 (0.9798 / 0.9789),
    mnist_cnn 0.9927 (0.9931 / 0.9911) → 0.9934 (0.9933 / 0.9911),
    tune_mlp 0.9960 (0.9959 / 0.9945) → 0.9962 (0.9962 / 0.9948), at the same passes
    (±0.2 per sample). At 240 / 260 / 500 passes (the robust CNNs are chaotic in the plan):
    tune_cnn_fgsm 0.7656 / 0.7996 / 0.8546 → 0.8306 / 0.8528 / 0.9137,
    tune_cnn_fgsm_short 0.8865 / 0.9055 / 0.9527 → 0.9433 / 0.9413 / 0.9652,
    tune_cnn_bn 0.9546 / 0.9795 / 0.9893 → 0.9579 / 0.9814 / 0.9921,
    mnist_cnn 0.9707 / 0.9921 / 0.9967 → 0.9778 / 0.9935 / 0.9972,
    tune_mlp 0.9718 / 0.9966 / 0.9968 → 0.9749 / 0.9967 / 0.9988; three halves of 30
    moved down: tune_cnn_bn's 100–199 @240 (0.9659 → 0.9631), tune_mlp's @260 (0.9963 →
    0.9953), tune_cnn_fgsm_short's 0–99 @500 (0.9693 → 0.9660).

    The long plan's runs (``long_hasten``, session 13): its first run (first step 0.1) and
    its second (``lagrangian_second_lr``, 0.5) hastened with ``(8, 0.3)``, L2, images
    0–199, pooled with ALMA, DDN, FMN and every run of the comparison (990/1000/1010), all
    (halves) before → after @1000:
    tune_cnn_fgsm 0.9123 (0.9141 / 0.8774) → 0.9346 (0.9292 / 0.9215),
    tune_cnn_fgsm_short 0.9603 (0.9642 / 0.9429) → 0.9795 (0.9844 / 0.9659),
    tune_cnn_bn 0.9929 (0.9925 / 0.9922) → 0.9935 (0.9928 / 0.9929),
    mnist_cnn 0.9971 (0.9978 / 0.9964) → 0.9973 (0.9971 / 0.9967),
    tune_mlp 0.9984 (0.9991 / 0.9966) → 0.9986 (0.9995 / 0.9966), at the same passes
    (±1.3 per sample); @1010: tune_cnn_fgsm 0.9078 → 0.9501, tune_cnn_fgsm_short 0.9595 →
    0.9795 (each half up), tune_cnn_bn 0.9938 → 0.9943, mnist_cnn 0.9968 → 0.9969,
    tune_mlp 0.9978 → 0.9989; @990 tune_cnn_bn 0.9917 → 0.9927, mnist_cnn 0.9966 → 0.9962.
    mnist_cnn's halves move down by 0.0005–0.0011 at 990–1010 (mostly one sample, #71,
    +4–5 %, a basin changed) while its whole stays within ±0.0004. Hastening the first run
    only (the second's samples flip within its first steps on tune_cnn_bn: bit-identical
    there) gained less: tune_cnn_fgsm_short 0.9706, mnist_cnn 0.9968 @1000. Hastening from
    step 16 (pool with it added, @1000): mnist_cnn and tune_cnn_bn bit-identical to the
    plain runs (every sample flips by then; 990 too), the robust CNNs gained far less
    (tune_cnn_fgsm 0.9061 → 0.9077, step 8: 0.9284; tune_cnn_fgsm_short 0.9577 → 0.9649,
    step 8: 0.9768).

    Variants at 250 in one pool (factor, from step; first step 0.1):
    (0.4, 5) lost mnist_cnn 0.0014, (0.4, 8) 0.0028, (0.4, 6) 0.0013; (0.5, 6), (0.5, 7),
    (0.6, 8) gained 0.013–0.048 on the robust CNNs but lost 0.0003–0.0008 on a half of
    mnist_cnn; (0.2, 8) +0.0003, (0.3, 6) −0.0007, (0.3, 10) −0.0014 on mnist_cnn, each
    +0.03–0.06 on both robust CNNs and +0.0004–0.0019 on tune_cnn_bn. So mnist_cnn at
    250 passes moves by ±0.003 with the rule's constants (like the plan's chaos: (0.4, 8)
    lost 0.0027 there at 250 but gained 0.0070 at 240 and 0.0000 at 260), and (0.3, 8) is
    the best of its neighbours there; the gains on the robust CNNs and tune_cnn_bn hold
    for every neighbour. With the first step 0.2 every variant lost on tune_cnn_bn: (0.6, 5), (0.6,
    8), (0.5, 6), (0.8, 5) and the statistic 0.1 or 0.01 from the start 0.0006–0.0020,
    (0.6, 1) and (0.8, 1) 0.003–0.005. A scout (two copies of each sample's run, the
    statistic 1 and 0.01, first step 0.2, for 10–20 steps, then per sample the copy with
    the smaller flip going on) needs those steps from the other runs: taken from the first
    ε-ball run it lost (mnist_cnn 0.9932 → 0.9786 with 20 steps, tune_cnn_fgsm 0.8028 →
    0.7920 with 10); shorter runs lose on the robust CNNs more than any pick gains (the run
    alone, tune_cnn_fgsm, mean best flip: 60 steps 1.983, 50 steps 2.299).

    On a robust model of another training family (session 14: ``tune_cnn_pgd``, a wide
    max-pool CNN trained with L2 PGD, whose loss is smooth: mmargin beats every peer there,
    0.97 against DDN's 0.93 at 250 passes) the rule gains little but nowhere loses as a
    whole; L2, images 0–199, pooled with ALMA, DDN, FMN and every run, all (halves) off →
    on: @250 0.9676 (0.9692 / 0.9574) → 0.9694 (0.9711 / 0.9566), @500 0.9838 (0.9805 /
    0.9847) → 0.9869 (0.9855 / 0.9860), @1000 0.9929 (0.9937 / 0.9892) → 0.9931 (0.9912 /
    0.9931); @240 / 260 / 490 / 510 +0.0071 / +0.0042 / +0.0033 / +0.0027. Its median
    sample first flips at step 14 of the 118 of a 500-pass run without the rule, 12 with it
    (the FGSM CNNs: 16–17 → 13): the rule fires for about as many samples as there, the
    plain run just loses less by waiting. Factors 0.5 / 0.15 instead of 0.3 there: @250
    0.9674 / 0.9677, @500 0.9866 / 0.9853, @1000 0.9938 / 0.9937 (no better constant). On
    the FGSM CNNs the rule's gain holds around 500 passes (off → on, @490 / 500 / 510:
    tune_cnn_fgsm +0.045 / +0.056 / +0.060, tune_cnn_fgsm_short +0.028 / +0.031 / +0.038).
    A factor that follows the sample's own progress, ``1 − 0.7 c / c₀`` (``c`` its
    constraint, ``c₀`` that at the clean input: a sample halfway to its boundary hastened
    half as much), lost on both FGSM CNNs at every budget (@250 / 500 / 1000:
    tune_cnn_fgsm 0.8130 / 0.8876 / 0.9340 → 0.7747 / 0.8516 / 0.9277,
    tune_cnn_fgsm_short 0.8930 / 0.9297 / 0.9796 → 0.8751 / 0.9196 / 0.9729)."""
    if p != 2.0:
        return None
    factor = config.short_hasten if is_short(steps, p, config) else config.long_hasten
    if factor >= 1.0:
        return None
    return config.hasten_after, factor


def lagrangian_slot(p: float, legs: list[tuple[str, int]]) -> tuple[int, bool]:
    """After which of the search's ``legs`` (kind and steps, in order) the Lagrangian run
    goes on the Lp distance ``p``, and whether it starts from the best flip so far: on L1
    after the last leg with steps that is not a refinement, warm; otherwise after the first
    leg with steps, from the clean input. ``-1``: no such leg."""
    ran = [n for n, (kind, steps) in enumerate(legs) if steps >= 1]
    if p == 1.0:
        before = [n for n in ran if legs[n][0] != "refine"]
        return (before[-1] if before else -1), True
    return (ran[0] if ran else -1), False


def extended_steps(p: float, config: GradientConfig, lagrange: int, first: int) -> int:
    """How many more steps the first ε-ball run (``first`` steps) of an untargeted search
    on the Lp distance ``p`` gives its rows that the switch to the L1 start picked
    (``Anneal.slow``: no flip in the run after ``l1_slow_after`` steps and a loss still
    above ``l1_slow_kept`` of its first) whose loss there is also above
    ``config.l1_extend_kept`` of its first (``Extend(kept=...)``; the rows still far from a
    flip): on L1 with ``config.l1_slow_extend`` and a first
    run too short to anneal back (under ``config.refine_short_l1`` steps, as for the
    refinements' step share: :func:`mmargin.engine.gradient.refine_config`), the ``lagrange``
    steps of the search's Lagrangian run, which those rows then skip (``epsball_run(
    extend=...)``, :class:`mmargin.engine.anneal.Extend`); otherwise none. With the
    rule on and the other defaults: 250 passes (a first run of 38 steps, a Lagrangian run
    of 16), not 500 nor 1000.

    Where a 250-pass L1 search's flips come from (tune_cnn_fgsm, images 0–199, best norm
    after each run): the first run (38 steps) flips every sample, the two 9-step probes
    improve 0 and 1 of 200 (mnist_cnn 29 and 12, tune_cnn_bn 31 and 20), the Lagrangian
    run (16 steps) 89 (geometric mean of its ratio 0.919; tune_cnn_bn 0.937, mnist_cnn
    0.972) and the refinement (39 steps) 141 (0.926). On the FGSM-trained CNNs the first
    run's median first flip comes at step 26 of 38, too late for its ε to shrink: one plain
    run of all 125 steps gained much there (tune_cnn_fgsm +0.08) but lost on the clean
    models (tune_cnn_bn −0.06, tune_mlp −0.04), which need the ranked probes. The switch's
    rows (on tune_cnn_fgsm 178 of 200 at 250 passes, tune_cnn_fgsm_short 172,
    tune_cnn_fgsm_co 144, tune_cnn_bn 31, mnist_cnn 15, tune_mlp none) are the samples
    still annealing; they keep the probes and the refinement.

    Measured (L1, images 0–199, one pool of ALMA, FMN, FAB and both runs at 100 / 240 /
    250 / 260 / 500 / 1000 passes; all (halves 0–99 / 100–199)), before → after @250:
    tune_cnn_fgsm 0.7600 (0.7792 / 0.5798) → 0.8256 (0.8023 / 0.7407),
    tune_cnn_fgsm_short 0.8506 (0.8548 / 0.7508) → 0.9056 (0.9056 / 0.8343),
    tune_cnn_pgd (no peers) 0.9554 (0.9619 / 0.9275) → 0.9601 (0.9633 / 0.9302),
    tune_cnn_bn 0.9489 (0.9475 / 0.9097) → 0.9478 (0.9451 / 0.9112),
    mnist_cnn 0.9803 (0.9785 / 0.9749) → 0.9786 (0.9772 / 0.9747),
    tune_mlp 0.9881 bit-identical, held-out tune_cnn_fgsm_co 0.8853 (0.8840 / 0.8273) →
    0.8841 (0.8814 / 0.8292), at the same passes (±0.4 per sample); @240 / 260:
    tune_cnn_fgsm 0.7391 / 0.7783 → 0.8226 / 0.8336, tune_cnn_fgsm_short 0.8398 / 0.8666 →
    0.9061 / 0.9030, tune_cnn_pgd 0.9547 / 0.9592 → 0.9578 / 0.9596, tune_cnn_bn 0.9538 /
    0.9504 → 0.9534 / 0.9487 (its halves @260 0.9483 / 0.9247 → 0.9519 / 0.9209), mnist_cnn
    0.9786 / 0.9802 → 0.9783 / 0.9796, tune_cnn_fgsm_co 0.8741 / 0.8878 → 0.8944 / 0.8812
    (halves @260 0.8816 / 0.8258 → 0.8760 / 0.8312). tune_cnn_bn and mnist_cnn lose
    0.0003–0.0017 at each of the three budgets, inside their own spread over them
    (0.9489–0.9538, 0.9786–0.9803); tune_cnn_fgsm_co gains over the three on average
    (0.8824 → 0.8866) within its spread (0.874–0.888). @230 / 270 (that pool with both
    runs added): tune_cnn_bn 0.9505 / 0.9552 → 0.9497 / 0.9502, mnist_cnn 0.9790 / 0.9806 →
    0.9758 / 0.9807, tune_cnn_fgsm_co 0.8504 / 0.8786 → 0.8673 / 0.8945: over the five
    budgets 230–270 tune_cnn_bn loses at each (mean −0.0018) and mnist_cnn at four of five
    (mean −0.0011), tune_cnn_fgsm_co gains +0.009 on average. 100 passes (one plain run) and 500
    / 1000 are bit-identical; tune_digits_mlp's found / exact L1 (120 proven points) @240 /
    250 unchanged (median 1.00209 / 1.00087, max 1.8568 / 1.1452).

    Screened and lost (same images; one pool per comparison): at the switch, the first run
    taking the probes' steps (the probes skipped) instead of the Lagrangian run's @250:
    tune_cnn_fgsm 0.734 → 0.799, tune_cnn_fgsm_short 0.851 → 0.902, but mnist_cnn 0.9866 →
    0.9819, tune_cnn_bn 0.9632 → 0.9485 (both the probes' and the Lagrangian run's steps:
    0.816, 0.913, 0.9809, 0.9555; the probes find the nearer class of the clean models'
    slow rows); without extending anything, skipping the probes (their steps to the last
    refinement) of the rows whose flip still fell by over 1 % in the first run's last tenth
    (:class:`mmargin.engine.epsball.Late`'s test: 169 of 200 rows on tune_cnn_fgsm, 12 on
    mnist_cnn) or without a flip at its half: tune_cnn_fgsm 0.776 → 0.786 / 0.781,
    tune_cnn_fgsm_short 0.858 → 0.856 / 0.853, mnist_cnn 0.9870 → 0.9806 / 0.9764,
    tune_cnn_bn 0.9639 → 0.9566 / 0.9621. Picking the rows at the first run's half (still
    no flip) instead of at the switch gained less on the FGSM CNNs (@240 / 250 / 260
    tune_cnn_fgsm +0.055 / +0.046 / +0.047 against +0.103 / +0.087 / +0.070 in that pool,
    tune_cnn_fgsm_short +0.047 / +0.040 / +0.037 against +0.066 / +0.054 / +0.036) and
    lost as much on mnist_cnn (−0.0009 / −0.0007 / −0.0021). Without the gate on the first
    run's length (500 / 1000 passes, first runs of 80 / 165 steps and Lagrangian runs of 35
    / 72) tune_cnn_bn lost 0.9601 → 0.9527 and 0.9816 → 0.9792, mnist_cnn @1000 0.9939 →
    0.9929, while tune_cnn_fgsm gained 0.7881 → 0.8181 and 0.8455 → 0.8569. With the
    extension, the probes still improve 1 of 200 samples on tune_cnn_fgsm: handing an
    extended row's probe to its refinement where the probe class's first-order distance at
    the clean input is out of reach (:func:`mmargin.engine.legstop.out_of_reach`, 1.5 / 1×
    the best flip) moved nothing @250 (tune_cnn_fgsm +0.0001 / +0.0008,
    tune_cnn_fgsm_short −0.0004 / −0.0013, tune_cnn_bn 0 / −0.0003, mnist_cnn 0 / 0.0000).
    The refinements' step share (:func:`mmargin.engine.gradient.refine_config`) still pays
    with it: α 1 instead of 0.5 gave larger flips @250 (geometric mean per sample 1.037
    tune_cnn_fgsm, 1.024 tune_cnn_fgsm_short, 1.007 mnist_cnn, 1.003 tune_cnn_bn).

    The loss test (session 17, ``l1_extend_kept`` 0.7; the figures above are every
    switched row's, ``l1_extend_kept`` 0). At the switch the FGSM CNNs' switched rows keep
    a median 0.87 (tune_cnn_fgsm) / 0.81 (short) / 0.78 (held-out co) of their first loss,
    tune_cnn_bn's, mnist_cnn's and tune_cnn_pgd's 0.55–0.62, and on bn / mnist the loss of
    every switched row came from rows at or below 0.7 (@250, sum of log ratios to the
    split plan: bn +0.34 of +0.35, mnist +0.35 of +0.35; tune_cnn_fgsm's rows at or below
    0.7 gave 7 % of its gain). Switched rows above 0.7 @250: tune_cnn_fgsm 155 of 178,
    short 138 of 172, co 95 of ~145, bn 3 of ~31, mnist 1 of 15, pgd 9 of 36. One pool of
    ALMA, FMN, FAB and every session 16 / 17 run but the tuning CNNs' @245 / 255 (images
    0–199, all (halves 0–99 / 100–199)), split plan → every switched row → this rule,
    @240 / 250 / 260:
    tune_cnn_fgsm 0.6848 / 0.7041 / 0.7234 → 0.7756 / 0.7789 / 0.7853 → 0.7694 / 0.7782 /
    0.7790 (@250 halves 0.7247 / 0.5546 → 0.7577 / 0.6991), tune_cnn_fgsm_short 0.8329 /
    0.8436 / 0.8595 → 0.8987 / 0.8982 / 0.8956 → 0.8901 / 0.8893 / 0.8880,
    tune_cnn_pgd 0.9547 / 0.9554 / 0.9592 → 0.9578 / 0.9601 / 0.9596 → 0.9542 / 0.9555 /
    0.9589, tune_cnn_bn 0.9532 / 0.9483 / 0.9498 → 0.9528 / 0.9472 / 0.9481 → 0.9533 /
    0.9482 / 0.9496, mnist_cnn 0.9782 / 0.9799 / 0.9799 → 0.9780 / 0.9783 / 0.9793 →
    0.9782 / 0.9799 / 0.9798, tune_mlp bit-identical (no switched row); @230 / 270:
    tune_cnn_fgsm 0.6756 / 0.7342 → 0.7615 / 0.7713 → 0.7565 / 0.7688, short 0.8060 /
    0.8771 → 0.8850 / 0.9007 → 0.8670 / 0.8993, bn 0.9505 / 0.9552 → 0.9497 / 0.9502 →
    0.9499 / 0.9552, mnist 0.9790 / 0.9806 → 0.9758 / 0.9807 → 0.9781 / 0.9806 (@230 one
    sample 1.25× larger: halves 0.9769 / 0.9733 → 0.9751 / 0.9733); @245 / 255 (that pool
    with them) tune_cnn_bn 0.9510 / 0.9497 → 0.9504 / 0.9491 (first half −0.0014 /
    −0.0011, one sample 1.19× / 1.14× larger), mnist_cnn −0.0001 / 0, tune_cnn_fgsm
    +0.096 / +0.062, short +0.038 / +0.057, pgd +0.003 / −0.0003. Held out,
    tune_cnn_fgsm_co @230 / 240 / 245 / 250 / 255 / 260 / 270: 0.8473 / 0.8618 / 0.8559 /
    0.8737 / 0.8710 / 0.8764 / 0.8754 → 0.8642 / 0.8834 / 0.8850 / 0.8724 / 0.8847 /
    0.8700 / 0.8913 → 0.8587 / 0.8775 / 0.8821 / 0.8682 / 0.8794 / 0.8730 / 0.8816 (mean
    0.8659 → 0.8787 → 0.8744; @250 halves 0.8742 / 0.8166 → 0.8696 / 0.8072). 100, 500 and
    1000 passes are bit-identical (checked @100 / 500 on tune_cnn_fgsm, tune_cnn_bn,
    mnist_cnn, tune_mlp); digits_mlp's found / exact L1 @250 (median 1.00139, max 1.0282)
    and tune_digits_mlp's (120 points, median 1.00087, max 1.1452) unchanged.

    On tune_cnn_fgsm_co the extension does not pay per row at any loss ratio (@250 the rows
    above 0.7 end 2.4 % larger, those below 0.8 % smaller; tune_cnn_fgsm's 14 % / 7 %
    smaller): there the extended first run ends only 1 % below the split plan's first run
    plus Lagrangian run (tune_cnn_fgsm 13 %), and the refinement after it gains less
    (geometric mean 0.928 against 0.890 after the Lagrangian run; tune_cnn_fgsm 0.928 /
    0.932). Screened and lost (same pool, @240 / 250 / 260): ``l1_extend_kept`` 0.6:
    tune_cnn_bn @250 0.9471 (−0.0012), co 0.8809 / 0.8689 / 0.8687; 0.8: tune_cnn_fgsm
    0.7555 / 0.7634 / 0.7757, short 0.8689 / 0.8664 / 0.8825. The picked rows (0.7) taking
    the probes' steps as well and skipping them (a first run of 38 + 18 + 16 steps):
    tune_cnn_bn 0.9489 / 0.9462 / 0.9451, mnist_cnn @250 / 260 −0.0007 (tune_cnn_fgsm
    0.7814 / 0.7770 / 0.7623, short 0.8867 / 0.8963 / 0.9123, co 0.8915 / 0.8719 /
    0.8752); taking the probes' steps instead of the Lagrangian run's, which they keep:
    tune_cnn_fgsm 0.7444 / 0.7616 / 0.7941, co 0.8769 / 0.8599 / 0.8734; no extension,
    their Lagrangian run taking the probes' steps (34 instead of 16): tune_cnn_fgsm 0.6836 /
    0.7201 / 0.7295 (the rule's gain is the longer first run's, not the skipped run's).

    Off by default (session 17): on the evaluation set (100 images, one pool with session
    15's run, which had no extension) L1 @250 went 0.7688 → 0.7641 on the adversarially
    trained CNN and 0.8753 → 0.8725 on the batch-norm CNN (the MLP has no switched rows:
    0.9818 both), as on the held-out tuning CNN at 250 (0.8737 → 0.8682): the rule's gain
    is the two FGSM tuning CNNs' alone."""
    if p != 1.0 or not config.l1_slow_extend or not config.l1_slow_after:
        return 0
    return lagrange if first < config.refine_short_l1 else 0
