"""The one place for the exact solvers' limits and tolerances.

Every exact method (linear closed form / LP / QP, the ReLU-network MILP, the tree-ensemble
MILP) and every hook that decides whether to try one reads its limits from here, so a
larger network, a longer time limit or a looser gap is one edit (or one
:func:`dataclasses.replace` of :data:`LIMITS` passed down by a caller).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExactLimits:
    """Sizes past which the search is left alone, solver settings and flip tolerances.

    - ``max_hidden``: ReLU networks with more hidden units than this are not solved
      (the MILP is exponential in the unstable units);
    - ``max_leaves``: tree ensembles with more leaves in all than this are not solved;
    - ``time_limit``: seconds HiGHS may spend on one sample; past it the best incumbent
      and the solver's proven bound are returned with ``optimal = False``;
    - ``mip_rel_gap`` / ``mip_abs_gap``: when HiGHS may stop (relative / absolute gap
      between incumbent and bound); ``feasibility_tol``: HiGHS's primal and MIP
      feasibility tolerance;
    - ``flip_tol``: how much a MILP flip must win by in logit space, relative to
      ``1 + max |logit|`` at the clean input (strictness of ``>``);
    - ``ball_slack``: relative slack on the ball of a known upper bound (so the attack's
      own point stays feasible);
    - ``safety``: how far past a *binary* decision boundary (relative, in log-odds or
      raw-score units: ``safety · (1 + |level|)``; half of it in probability units, and
      for tree ensembles' arg-max rows) an exact point is asked to be, so that the
      engine's float32 re-check agrees; margins of such decisions are exact up to it;
    - certified bounds (:mod:`mmargin.exact.crown`) where no exact method applies (a
      network past ``max_hidden``, the L2 norm on a ReLU network, a solver stopped by its
      time limit): ``certify`` (``"crown"``, ``"alpha-crown"`` — the
      last backward pass's slopes optimised, about ``alpha_steps`` times its cost —,
      ``"interval"`` or ``"none"``),
      ``crown_budget`` (the largest backward pass, rows times graph entries, spent on one
      layer's pre-activation bounds; larger ones come from intervals),
      ``bisection_steps`` (on the radius: the bound is within ``start / 2**steps`` of the
      largest certified radius), ``certify_entries`` (networks whose nodes hold more
      values per sample than this are not certified: the cost grows with it);
    - linear models: ``lp_tol`` (HiGHS's LP primal / dual feasibility tolerance),
      ``nudge_rel`` / ``nudge_abs`` (how far the closed-form / LP point is pushed past the
      boundary: relative to the gap, and absolute in units of ``1 + max |score|``) and
      ``qp_rel_gap`` (primal / dual gap under which an L2 solution counts as optimal).
    """

    max_hidden: int = 256
    max_leaves: int = 20000
    time_limit: float = 20.0
    mip_rel_gap: float = 1e-9
    mip_abs_gap: float = 1e-10
    feasibility_tol: float = 1e-9
    flip_tol: float = 1e-8
    ball_slack: float = 1e-6
    safety: float = 2e-5
    lp_tol: float = 1e-10
    nudge_rel: float = 1e-7
    nudge_abs: float = 1e-9
    qp_rel_gap: float = 1e-5
    certify: str = "crown"
    crown_budget: int = 1_000_000
    bisection_steps: int = 10
    certify_entries: int = 2_000_000


LIMITS = ExactLimits()
"""The limits every exact method uses unless a caller passes its own."""
