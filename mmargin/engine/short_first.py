"""The first ε-ball run of a short L2 search (:func:`mmargin.engine.passes.is_short`)."""

from __future__ import annotations

import math
from dataclasses import replace

from mmargin.engine.passes import is_short
from mmargin.engine.spec import GradientConfig

__all__ = ["first_config", "second_config"]


def first_config(steps: int, p: float, config: GradientConfig) -> GradientConfig:
    """The configuration of the first ε-ball run of an untargeted class-aware search of
    ``steps`` steps on the Lp distance ``p``: in a short L2 plan
    (:func:`~mmargin.engine.passes.is_short`: ~165–799 passes) its ε factor starts at
    ``config.short_first_gamma_l2`` (0: off) instead of ``gamma_init``, as the one plain
    run below the split does (``plain_gamma_l2``,
    :func:`mmargin.engine.gradient.plain_config`); otherwise ``config`` itself.

    Where a 250-pass L2 search loses (session 18, main at 43ca597, images 0–199, pooled
    with ALMA, DDN, FMN and main's runs at 100–1000 passes): not in convergence. Sixty
    more refinement steps from the final flip moved tune_cnn_fgsm_co 0.9238 → 0.9318 and
    tune_cnn_fgsm 0.8175 → 0.8328 (a warm Lagrangian run instead: 0.9269 / 0.8380), and
    the samples furthest from the pool (over 1.1×) hardly at all (co 1.160 → 1.143, fgsm
    1.187 → 1.175 as geometric means): they sit in another basin, in 24 of co's 41 such
    samples of another class than ALMA's 1000-pass flip (the 250-pass search's final class
    is ALMA's in 70 % of the samples on both CNNs; its first ε-ball run's class in 72–73 %,
    its Lagrangian run's in 62–66 %). The basins the search misses are those of a plain
    ε-ball run: the per-sample minimum of the 250-pass and the 100-pass search (one plain
    run of ~42 steps, ε factor from 0.3) scores co 0.9492 and fgsm 0.8782 against 0.9238
    / 0.8175, where the 250-pass search's own first run (22 steps, ε factor from 0.05:
    it hardly shrinks before it ends) scores 0.527 / 0.390 alone and beats the Lagrangian
    run on 43 / 83 of 200 samples.

    Measured (L2, images 0–199, one pool per model of ALMA, DDN, FMN, main's runs and
    every run of the session; all (halves 0–99 / 100–199)), ε factor 0.05 → 0.3 for the
    first run alone, @250 / 260 (@240 with :func:`~mmargin.engine.passes.floor_probes`,
    whose two probes it gains with):

    - tune_cnn_fgsm_co (the evaluation CNN's analogue: its FGSM training broke down) 0.9225
      (0.9234 / 0.8992) → 0.9362 (0.9384 / 0.9152), 0.9212 → 0.9379; @240 0.9080 →
      0.9290 (ALMA at 1000 passes: 0.9307),
    - tune_cnn_fgsm 0.8153 (0.8296 / 0.7687) → 0.8348 (0.8340 / 0.8068), 0.8310 → 0.8483;
      @240 0.8089 → 0.8303,
    - tune_cnn_fgsm_short 0.9028 (0.9169 / 0.8595) → 0.9036 (0.9086 / 0.8712), 0.9127
      (0.9154 / 0.8844) → 0.9118 (0.9136 / 0.8839); @240 0.9146 → 0.9175, @245 / 255 0.9061
      / 0.9129 → 0.9026 / 0.9106 (mean of the five 0.9098 → 0.9092: no gain there, within
      the plan's chaos),
    - tune_cnn_pgd 0.9723 (0.9748 / 0.9595) → 0.9756 (0.9746 / 0.9700), 0.9726 → 0.9777;
      @240 0.9425 → 0.9759,
    - tune_cnn_bn 0.9788 (0.9765 / 0.9773) → 0.9802 (0.9767 / 0.9798), 0.9792 → 0.9809;
      @240 0.9558 → 0.9783,
    - mnist_cnn 0.9930 (0.9932 / 0.9903) → 0.9943 (0.9951 / 0.9912), 0.9932 (0.9940 /
      0.9907) → 0.9938 (0.9959 / 0.9900); @240 0.9775 → 0.9932,
    - tune_mlp 0.9962 (0.9962 / 0.9947) → 0.9969 (0.9975 / 0.9947), 0.9966 → 0.9974; @240
      0.9749 → 0.9961,

    at the same passes (±0.6 per sample). @500 (a first run of 47 steps): tune_cnn_fgsm_co
    0.9630 → 0.9649, tune_cnn_fgsm 0.8931 → 0.9094, tune_cnn_fgsm_short 0.9399 → 0.9431,
    tune_cnn_pgd 0.9898 (0.9891 / 0.9890) → 0.9894 (0.9885 / 0.9888), tune_cnn_bn 0.9900 →
    0.9913, mnist_cnn 0.9969 → 0.9972, tune_mlp 0.9987 → 0.9989; @490 / 510 (a wider pool)
    tune_cnn_fgsm_co 0.9581 / 0.9590 → 0.9583 / 0.9614, tune_cnn_fgsm 0.8734 / 0.8872 →
    0.8859 / 0.9031. 100 passes (one plain run) bit-identical, 1000 (not a short plan)
    untouched (tune_cnn_bn @1000 bit-identical). The first run alone @240 (without the
    probes) gained too: tune_cnn_fgsm_co 0.9177, tune_cnn_fgsm 0.8242, tune_cnn_bn 0.9567,
    mnist_cnn 0.9781. Other factors (@240 / 250 / 260, a pool with them): 0.15
    tune_cnn_fgsm_co 0.9272 / 0.9329 / 0.9379 (0.3: 0.9286 / 0.9358 / 0.9375), tune_cnn_fgsm
    0.8140 / 0.8188 / 0.8334 (0.3: 0.8292 / 0.8336 / 0.8471); 0.5 gained more on the robust
    CNNs (0.9313 / 0.9364 / 0.9407, 0.8403 / 0.8360 / 0.8541; @500 tune_cnn_fgsm_co 0.9674
    against 0.9624 in a wider pool) and on tune_cnn_pgd (0.9764 / 0.9762 / 0.9791), but lost
    tune_cnn_bn @500 (0.9900 → 0.9894, first half 0.9885 → 0.9881; 0.3: 0.9912) and
    tune_cnn_fgsm_short @500 (0.9408 against 0.9431 with 0.3; @240 / 260 0.9148 / 0.9071
    against 0.9174 / 0.9118): 0.3, the plain run's factor
    (:func:`mmargin.engine.gradient.plain_config`, where 0.4 / 0.5 slipped back on the clean
    models), is kept."""
    if config.short_first_gamma_l2 <= 0 or not is_short(steps, p, config):  # L2 only
        return config
    return replace(config, gamma_init=config.short_first_gamma_l2)


def second_config(p: float, config: GradientConfig) -> GradientConfig:
    """The configuration of a long plan's second first run (``second``:
    :func:`mmargin.engine.passes.second_first`, from the clean input toward no chosen class)
    on the Lp distance ``p``: on L1 every row on the L1 start (``l1_slow_after`` 0); on L2
    (``config.second_first_l2`` > 0: :func:`mmargin.engine.passes.search_legs`) its ε factor
    starts at ``config.second_gamma_l2`` instead of ``gamma_init``, so the two first runs
    settle in different basins, and on L∞ at ``config.second_gamma_linf`` (the figures:
    :func:`mmargin.engine.passes.second_share`); otherwise ``config`` itself.

    Where a 1000-pass L2 search loses (session 20, images 0–199, tune_cnn_fgsm): of the
    36 samples where ALMA's 1000-pass flip or the 250-pass search's beat the 1000-pass
    search's by over 5 %, 24 landed in the same class (another basin: the 75-step
    refinement moves a flip by ~2 %, geometric mean, and never out of its basin) and 12 in
    another (9 of those classes reached by one of the search's own runs, 3 never tried);
    on tune_cnn_fgsm_short 4 such samples (1 / 3). The 250-pass search's first run (22
    steps, ε factor from 0.3) ends as small as the 1000-pass one (97 steps, from 0.05):
    geometric mean ratio 1000 / 250 1.013 (tune_cnn_fgsm_short 0.992), but per sample in
    other basins (56 of 200 over 5 % smaller, 53 over 5 % larger), and the smaller of the
    two is 1.161× the final flip against 1.225× for the long run alone. Two first runs
    of half the steps, the second with the faster ε shrink, hand the Lagrangian runs and
    the refinement the better of two basins at the same passes.

    Measured (L2, images 0–199, one pool per model of ALMA, DDN, FMN (where stored) and
    both runs; all (halves 0–99 / 100–199)), off → 0.5, @990 / 1000 / 1010:

    - tune_cnn_fgsm 0.9418 / 0.9291 / 0.9445 → 0.9470 / 0.9373 / 0.9484 (halves @1000
      0.9265 / 0.9117 → 0.9351 / 0.9225; every half up at every budget),
    - tune_cnn_fgsm_short 0.9769 / 0.9810 / 0.9810 → 0.9770 / 0.9809 / 0.9811,
    - tune_cnn_pgd (no stored peers) 0.9966 / 0.9961 / 0.9964 → 0.9963 / 0.9964 / 0.9964,
    - tune_cnn_bn (no stored peers) 0.9942 / 0.9949 / 0.9958 → 0.9957 / 0.9959 / 0.9969
      (every half up),
    - mnist_cnn 0.9963 / 0.9974 / 0.9969 → 0.9964 / 0.9975 / 0.9970,
    - tune_mlp 0.9986 / 0.9987 / 0.9990 → 0.9986 / 0.9987 / 0.9990,
    - tune_cnn_fgsm_co (held out, run once) 0.9789 / 0.9758 / 0.9730 → 0.9790 / 0.9776 /
      0.9754 (halves @1000 0.9770 / 0.9653 → 0.9807 / 0.9651),

    at the same passes (±0.3 per sample). Plans under ``short_steps`` steps (below 800
    passes) are untouched. The first run alone with the ε factor from 0.3 (one run of 97
    steps) gained as much on tune_cnn_fgsm (0.9456 / 0.9376 / 0.9485) but less on
    tune_cnn_bn (0.9951 / 0.9956 / 0.9961).

    On the evaluation set once merged (L2 @1000, 100 images, mmargin-only runs of main and
    of this on one machine, one pool with the stored runs; all (halves)): the adversarially
    trained CNN 0.9537 (0.9342 / 0.9589) → 0.9562 (0.9415 / 0.9595), the batch-norm CNN
    0.9933 (0.9887 / 0.9939) → 0.9935 (0.9895 / 0.9939), the MLP 0.9986 (0.9970 / 0.9992)
    → 0.9989 (0.9973 / 0.9997).
    """
    if p == 1.0:
        return replace(config, l1_slow_after=0)
    if p == 2.0:
        return replace(config, gamma_init=config.second_gamma_l2)
    if p == math.inf:
        return replace(config, gamma_init=config.second_gamma_linf)
    return config
