"""Which rows of a short L1 refinement take a smaller first step share: the rows the
search's first run switched to the L1 start and left far from a flip
(``GradientConfig.alpha_refine_slow_l1``, ``refine_slow_kept``; session 19)."""

from __future__ import annotations

from torch import Tensor

from mmargin.engine.spec import GradientConfig

__all__ = ["refine_soft"]


def refine_soft(steps: int, p: float, config: GradientConfig,
                picked: list[Tensor]) -> Tensor | None:  # fmt: skip
    """The rows of an L1 refinement of ``steps`` steps whose step share starts at
    ``config.alpha_refine_slow_l1`` instead of the refinement's own
    (:func:`mmargin.engine.gradient.refine_config`): with that option on (> 0) and a
    refinement too short to anneal (under ``config.refine_short_l1`` steps), the rows the
    search's first run switched to the L1 start (``picked``:
    :meth:`mmargin.engine.anneal.Anneal.slow`) with a loss there still above
    ``config.refine_slow_kept`` of its first (:meth:`mmargin.engine.anneal.Anneal.far`: the
    samples still far from a flip after its first steps); ``None`` otherwise (or when
    there are none). With the defaults (0.3, 0.7): 230–270 passes (refinements of 39–45
    steps), not 100 (one plain run), 500 (86) nor 1000 (127).

    Where a 250-pass L1 search loses (session 19, tune_cnn_fgsm, images 0–199, best flip
    after each run as a geometric mean of its ratio to the 1000-pass search's flip): the
    first run (38 steps) 1.630, the two 9-step probes 1.630 / 1.628 (they improve 0 and 1
    of 200 samples), the warm Lagrangian run (16 steps) 1.496 (90 improved), the
    refinement (39 steps) 1.386 (140), the knapsack polish and exchange nothing (no passes
    left), the final flip after the line search 1.338 (median 1.206; 100 samples above
    1.2). The final flip lies in the first run's class in 198 of 200 samples: the 250-pass
    search loses on the distance within its basin, not the class, and the passes that buy
    most are the walk along the boundary from the best flip (Lagrangian run and
    refinement), not the probes (which the clean models need:
    :func:`mmargin.engine.lagrangian_plan.extended_steps`). α 0.3 for every row of the
    refinement gained on every image model but lost on the MILP-exact digits MLP
    (:func:`mmargin.engine.gradient.refine_config`); the rows the first run switched and
    left far from their flip are the robust CNNs' samples (at 250 passes about 155 of
    tune_cnn_fgsm's 200, 3 of tune_cnn_bn's, none of the MLPs': session 17's count for the
    same test, :func:`mmargin.engine.lagrangian_plan.extended_steps`), so only they take it.

    Measured (L1, images 0–199, one pool of ALMA, FMN, FAB @1000, main's 230–270 and 1000
    runs and both variants; all (halves 0–99 / 100–199)), off → 0.3 with the 0.7 loss test,
    @230 / 240 / 250 / 260 / 270:

    - tune_cnn_fgsm 0.7190 / 0.7288 / 0.7517 / 0.7690 / 0.7802 → 0.7452 / 0.7414 / 0.7732
      / 0.7934 / 0.8003 (every half up at every budget; @250 0.7729 / 0.6093 → 0.7882 /
      0.6258),
    - tune_cnn_fgsm_short 0.8689 / 0.8956 / 0.9064 / 0.9219 / 0.9387 → 0.8880 / 0.9097 /
      0.9215 / 0.9296 / 0.9543 (every half up),
    - tune_cnn_bn 0.9633 / 0.9643 / 0.9612 / 0.9631 / 0.9675 → 0.9633 / 0.9645 / 0.9614 /
      0.9633 / 0.9676 (halves within −0.0003 / +0.0005),
    - tune_cnn_pgd 0.9679 / 0.9708 / 0.9717 / 0.9743 / 0.9701 → 0.9681 / 0.9705 / 0.9724
      / 0.9742 / 0.9705 (halves within −0.0008 / +0.0011),
    - tune_mlp bit-identical (no switched row),
    - held out, run once the rule was chosen: tune_cnn_fgsm_co 0.8743 / 0.8887 / 0.9029 /
      0.9061 / 0.9058 → 0.8892 / 0.9008 / 0.9156 / 0.9138 / 0.9115 (every half up at every
      budget; @250 0.9036 / 0.8649 → 0.9203 / 0.8672),

    at the same passes. Without the loss test (every switched row) tune_cnn_fgsm gained a
    little more (0.7462 / 0.7421 / 0.7755 / 0.7942 / 0.8017) but tune_cnn_bn lost at 260 /
    270 (0.9628 / 0.9662; its second half @270 0.9427 → 0.9363).

    Evaluation set, run once the rule was merged (100 images, mmargin-only runs of main and
    of the rule on one machine, one pool with the stored runs; all (halves)), @250: the
    adversarially trained CNN 0.7926 (0.730 / 0.789) → 0.8414 (0.748 / 0.856), the
    batch-norm CNN 0.8830 (0.904 / 0.855) → 0.8809 (0.906 / 0.849), the MLP bit-identical;
    500 passes bit-identical on all three."""
    if p != 1.0 or config.alpha_refine_slow_l1 <= 0 or not picked:
        return None
    if steps >= config.refine_short_l1:
        return None
    return picked[0]
