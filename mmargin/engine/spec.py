"""What a search is asked to do: the budget, the strategy and every strategy's knobs.

A leaf module (nothing from :mod:`mmargin.engine` is imported here), so strategies, the
driver, the host and plugins can all depend on it. Every record validates itself when it
is built: an absurd value (a budget of ``2**63 - 1``, a million restarts, a negative
seed) raises a ``ValueError`` that names the field, before any pass is spent.

The query budget is forward + backward passes *per sample*, everything included: the
clean pass, the search, the line search, the exact hook's verification nudges, the
final re-verification and the per-sample report. :meth:`SearchSpec.plan` splits it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from mmargin.exact.types import ExactMargin

ExactFn = Callable[["np.ndarray", int, "int | None", "float | None"], "ExactMargin | None"]
"""``exact(x, label, target, upper_bound)`` → an exact margin, or None when not applicable.
The host fills ``ExactMargin.plugin`` with the name of the plugin that answered."""

ReportFn = Callable[[Any, Any, Any, Any, Any], "list[dict[str, Any]] | None"]
"""``report(model, x, x_adv, labels, goal)`` → one dict of extras per row, or None: the
``mmargin_sample_report`` hook bound to the run's space. ``model`` is the engine's counted
adapter, limited to the sample's remaining budget (``model.left``)."""

MAX_BUDGET = 10**7
DEFAULT_BASELINE_PASSES = 32
"""Passes per sample a task (and :func:`mmargin.evaluate`) gives the random-perturbation
baseline unless it says otherwise: 16 antithetic probes along one random direction, or
32 nested random edit sets (see :mod:`mmargin.engine.baseline`)."""
MAX_SEED = 2**63 - 1
EXACT_MODES = ("auto", "never", "only")
CONTINUOUS_STRATEGIES = ("gradient", "decision", "hybrid")
DISCRETE_METHODS = ("greedy", "beam", "exhaustive")
STRATEGY_NAMES = ("auto", "exact", "discrete", *CONTINUOUS_STRATEGIES, *DISCRETE_METHODS)
ORDERS = ("auto", "rank", "leave-one-out", "best-single", "none")
"""How positions are ordered before a discrete search (see :class:`DiscreteConfig`)."""
FLIP_REPEATS = 10
"""Passes on which a flip of a non-deterministic model is re-checked (``flip_repeats``)."""
FLIP_AGREEMENT = 0.9
"""The share of those passes on which it must hold: 9 of 10 by default."""
NUDGES = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
"""Relative outward steps tried when an exact solver's boundary point does not clear the
flip tolerance (solvers stop right at the boundary; the engine wants a reproducible flip);
one pass each, reserved in the budget when an exact method may answer."""


def check_int(owner: str, name: str, value: Any, low: int, high: int) -> None:
    """Raise a ``ValueError`` naming ``owner.name`` unless ``value`` is an int in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{owner}.{name}: expected an integer in [{low}, {high}], "
            f"got {type(value).__name__} {value!r}"
        )
    if not low <= value <= high:
        raise ValueError(f"{owner}.{name}: expected an integer in [{low}, {high}], got {value}")


def check_float(owner: str, name: str, value: Any, low: float, high: float) -> None:
    """Raise a ``ValueError`` naming ``owner.name`` unless ``value`` is a finite number in
    [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{owner}.{name}: expected a number, got {type(value).__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{owner}.{name}: expected a number in [{low}, {high}], got {value}")


def check_bool(owner: str, name: str, value: Any) -> None:
    """Raise a ``ValueError`` naming ``owner.name`` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}.{name}: expected true or false, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise a ``ValueError`` naming ``owner.name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}.{name}: expected one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class GradientConfig:
    """Knobs of the gradient strategy; the defaults are what the tests and benchmarks use.

    ``alpha_*`` is the step length as a fraction of the ε-ball's L2 radius, ``gamma_*`` the
    factor by which ε shrinks or grows; both anneal with a cosine from init to final. On
    L1 a row of an ε-ball run without a flip after ``l1_slow_after`` steps whose loss is
    still above ``l1_slow_kept`` times its loss at the run's first step (0: no such test)
    goes on from ``alpha_init_l1`` and ``gamma_init_l1`` instead (``l1_slow_after`` 0:
    every row from the first step; :func:`mmargin.engine.anneal.schedule_start`); with
    ``l1_slow_restart`` such a row whose first flip comes in the second half of the run
    starts its ε factor again from ``gamma_init_l1`` there and anneals it over the run's
    steps left (``Anneal.restarted``); with ``l1_slow_extend`` (off by default) the first
    run of an L1 search gives such rows whose loss is still above ``l1_extend_kept`` times
    its first (0: every such row) the Lagrangian run's steps, which they skip
    (:func:`mmargin.engine.lagrangian_plan.extended_steps`). The refinements of an L1
    search shorter than ``refine_short_l1`` steps start their step share at
    ``alpha_refine_l1`` instead of ``alpha_init`` (0: off;
    :func:`mmargin.engine.gradient.refine_config`), and their rows that the search's first
    run switched to the L1 start with a loss there still above ``refine_slow_kept`` of its
    first at ``alpha_refine_slow_l1`` (0: off; :func:`mmargin.engine.soft_refine.refine_soft`).
    ``patience`` is how many steps a sample may go without improving its best norm by
    ``rtol`` before it leaves the batch (0 = never early-stop). ``restarts`` extra runs
    follow the first; ``candidates`` is how many of the highest-scoring other classes are
    ranked for class-aware restarts.

    An untargeted search with restarts spends its steps as :mod:`mmargin.engine.passes`
    says: on L2 distances ``lagrangian`` of them go to a Lagrangian run
    (:mod:`mmargin.engine.lagrangian`: it holds up on adversarially trained models, where
    the ε-ball search loses ground) and, outside the short plan, ``lagrangian_second`` of
    them to a second one right after it, also from the clean input, with first step
    ``lagrangian_second_lr`` (it settles in other basins; in both, a sample still without a
    flip after ``hasten_after`` steps has its RMSProp statistic multiplied by
    ``long_hasten`` per step until it flips, 1 = off; the second may fork off
    ``second_forks`` converging tails (0: off, the default), their steps out of the budget's end:
    :func:`mmargin.engine.lagrangian_plan.second_forks`); on L1 ``lagrangian_l1`` of them
    (a sparse, proximal run from the best flip after the probes; on L∞ / L0 none). Then the
    first ε-ball run gets ``first_share`` of the rest, each of ``probes`` class probes
    ``probe_share``, and ``restarts`` refinements of the best flip share what is left.
    Short searches are split differently (:func:`mmargin.engine.passes.split_steps`,
    :func:`~mmargin.engine.passes.is_short`): a search of fewer than ``split_min`` steps
    (on L2 ``split_min_l2``, on L1 ``split_min_l1``, if larger) is one plain run, nothing
    ranked (on L2 its ε factor starts at ``plain_gamma_l2`` instead of ``gamma_init``:
    :func:`mmargin.engine.gradient.plain_config`); an L2 search of fewer than
    ``short_steps`` steps starts its first ε-ball run's ε factor at
    ``short_first_gamma_l2`` (0: ``gamma_init``; :func:`mmargin.engine.short_first.first_config`),
    gives ``short_lagrangian`` of
    them to the Lagrangian run (first step ``short_lagrangian_lr``, else 0.1; a sample
    still without a flip after ``hasten_after`` of its steps has its RMSProp statistic
    multiplied by ``short_hasten`` per step until it flips, 1 = off:
    :func:`mmargin.engine.lagrangian_plan.lagrangian_hasten`) and has
    ``short_probes`` probes of ``short_probe_share``; an L1 search of fewer than
    ``short_steps`` steps has at most ``short_probes_l1`` probes (of ``probe_share``), the
    steps of the others going to the refinements; a longer one gives ``second_first_l1`` of
    its first run's steps to a second first run from the clean input on the L1 start
    (:func:`mmargin.engine.passes.second_first`; 0 = off); a long L2 search gives
    ``second_first_l2`` of its first run's steps to a second first run from the clean
    input whose ε factor starts at ``second_gamma_l2``
    (:func:`mmargin.engine.short_first.second_config`; 0 = off), and a long L∞ search
    ``second_first_linf`` of them to one whose ε factor starts at ``second_gamma_linf``
    (:func:`mmargin.engine.passes.second_share`; 0 = off). In a short L2 search
    whose probes are too short for the hopeless exit (250 passes), a sample whose
    Lagrangian run found a smaller flip than its first ε-ball run skips the last
    ``won_probes`` probes and its last refinement takes their steps
    (:func:`mmargin.engine.passes.won_probes`; 0 = off).
    On L2, the steps a sample's runs left unspent (probes it left early) go to a second
    Lagrangian run from the clean input with first step ``unspent_lr`` (0 = off); on L1,
    with ``unspent_polish``, to the knapsack polish of the best flip
    (:mod:`mmargin.engine.polish`) and the exchange rounds (:mod:`mmargin.engine.exchange`;
    with ``exchange_reserve``, off by default, a long search keeps their steps out of its
    last refinement; with ``exchange_sparse`` > 0, a sample whose flip before the last
    refinement moves at most that many coordinates keeps what its unspent steps lack of the
    rounds' steps out of that refinement and runs the rounds before the polish,
    :func:`mmargin.engine.exchange.sparse_reserve`; with ``next_class``, first a walk from
    the clean input toward the nearest ranked class no probe drove toward; all in
    :mod:`mmargin.engine.leftover`); on L∞, with ``next_class``, to a probe from the clean
    input toward that class, and with ``unspent_refine`` (off by default), for the samples
    without such a class, to a second refinement of the best flip toward the runner-up
    class (the nearest ranked class other than the best flip's). With ``stretch_refine``
    (the default; L∞ only) the steps the
    probes left unspent go first to the last refinement of the best flip instead, each
    sample for its own steps (:mod:`mmargin.engine.stretch`), for the samples whose best
    flip lies below ``stretch_below`` times the first-order distance of their nearest class
    at the clean input (0: every sample); a sample a probe left stalled keeps them for the
    ``next_class`` probe.

    Samples leave a run early by the rules of :mod:`mmargin.engine.legstop`: a class probe
    whose own flip is more than ``hopeless`` times the sample's best norm, part-way through
    (0 = never; on L∞ at the second such test also a probe more than ``late_hopeless``
    times the best whose own flip has not fallen since the first, 0 = off); with
    ``leg_window`` > 0, a sample whose flip in a run fell by no more than ``leg_rtol`` over
    that share of the run's steps (0 = never, the default). With
    ``skip_far_probes`` (the default; L∞ only, :func:`mmargin.engine.gradient.skip_allowance`)
    a probe is not run at all for a sample whose probe class's first-order distance at the
    clean input is out of ``hopeless``'s reach (:func:`mmargin.engine.legstop.out_of_reach`).
    """

    alpha_init: float = 1.0
    alpha_final: float = 0.01
    gamma_init: float = 0.05
    alpha_init_l1: float = 0.5
    gamma_init_l1: float = 0.3
    alpha_refine_l1: float = 0.5
    alpha_refine_slow_l1: float = 0.3
    refine_slow_kept: float = 0.7
    refine_short_l1: int = 64
    l1_slow_after: int = 10
    l1_slow_kept: float = 0.5
    l1_slow_restart: bool = True
    l1_slow_extend: bool = False
    l1_extend_kept: float = 0.7
    gamma_final: float = 0.001
    patience: int = 0
    rtol: float = 1e-4
    leg_window: float = 0.0
    leg_rtol: float = 1e-3
    hopeless: float = 1.5
    skip_far_probes: bool = True
    split_min: int = 0
    split_min_l2: int = 75
    split_min_l1: int = 75
    plain_gamma_l2: float = 0.3
    short_first_gamma_l2: float = 0.3
    short_steps: int = 400
    short_lagrangian: float = 0.5
    short_lagrangian_lr: float = 0.1
    short_hasten: float = 0.3
    hasten_after: int = 8
    long_hasten: float = 0.3
    short_probes: int = 2
    short_probe_share: float = 0.15
    short_probes_l1: int = 2
    second_first_l1: float = 0.5
    second_first_l2: float = 0.5
    second_gamma_l2: float = 0.3
    second_first_linf: float = 0.5
    second_gamma_linf: float = 0.3
    won_probes: int = 1
    restarts: int = 1
    candidates: int = 9
    probes: int = 3
    first_share: float = 0.4
    probe_share: float = 0.1
    lagrangian: float = 0.25
    lagrangian_second: float = 0.25
    lagrangian_second_lr: float = 0.5
    second_forks: int = 0
    lagrangian_l1: float = 0.15
    unspent_lr: float = 0.2
    unspent_polish: bool = True
    unspent_refine: bool = False
    exchange_reserve: bool = False
    exchange_sparse: int = 4
    next_class: bool = True
    stretch_refine: bool = True
    stretch_below: float = 0.9
    late_hopeless: float = 1.1

    def __post_init__(self) -> None:
        for name in (
            "alpha_init",
            "alpha_final",
            "alpha_init_l1",
            "alpha_refine_l1",
            "alpha_refine_slow_l1",
        ):
            check_float("gradient", name, getattr(self, name), 0.0, 100.0)
        for name in ("gamma_init", "gamma_final", "gamma_init_l1", "plain_gamma_l2", "rtol",
                     "leg_rtol", "leg_window", "l1_slow_kept", "l1_extend_kept",
                     "refine_slow_kept",
                     "short_first_gamma_l2"):  # fmt: skip
            check_float("gradient", name, getattr(self, name), 0.0, 0.99)
        check_int("gradient", "patience", self.patience, 0, MAX_BUDGET)
        check_int("gradient", "l1_slow_after", self.l1_slow_after, 0, MAX_BUDGET)
        check_int("gradient", "refine_short_l1", self.refine_short_l1, 0, MAX_BUDGET)
        check_int("gradient", "exchange_sparse", self.exchange_sparse, 0, 1 << 30)
        for name in ("split_min", "split_min_l2", "split_min_l1", "short_steps"):
            check_int("gradient", name, getattr(self, name), 0, MAX_BUDGET)
        check_int("gradient", "short_probes", self.short_probes, 0, 1000)
        check_int("gradient", "short_probes_l1", self.short_probes_l1, 0, 1000)
        check_float("gradient", "second_first_l1", self.second_first_l1, 0.0, 0.9)
        check_float("gradient", "second_first_l2", self.second_first_l2, 0.0, 0.9)
        check_float("gradient", "second_gamma_l2", self.second_gamma_l2, 1e-6, 1.0)
        check_float("gradient", "second_first_linf", self.second_first_linf, 0.0, 0.9)
        check_float("gradient", "second_gamma_linf", self.second_gamma_linf, 1e-6, 0.9)
        check_int("gradient", "won_probes", self.won_probes, 0, 1000)
        check_float("gradient", "short_probe_share", self.short_probe_share, 0.0, 1.0)
        check_float("gradient", "short_lagrangian", self.short_lagrangian, 0.0, 0.9)
        check_float("gradient", "short_lagrangian_lr", self.short_lagrangian_lr, 1e-6, 10.0)
        check_float("gradient", "short_hasten", self.short_hasten, 1e-6, 1.0)
        check_int("gradient", "hasten_after", self.hasten_after, 0, MAX_BUDGET)
        check_float("gradient", "long_hasten", self.long_hasten, 1e-6, 1.0)
        check_int("gradient", "restarts", self.restarts, 0, 1000)
        check_int("gradient", "candidates", self.candidates, 1, 1000)
        check_int("gradient", "probes", self.probes, 0, 1000)
        check_float("gradient", "first_share", self.first_share, 0.0, 1.0)
        check_float("gradient", "probe_share", self.probe_share, 0.0, 1.0)
        check_float("gradient", "lagrangian", self.lagrangian, 0.0, 0.9)
        check_float("gradient", "lagrangian_second", self.lagrangian_second, 0.0, 0.9)
        check_float("gradient", "lagrangian_second_lr", self.lagrangian_second_lr, 1e-6, 10.0)
        check_int("gradient", "second_forks", self.second_forks, 0, 8)
        check_float("gradient", "lagrangian_l1", self.lagrangian_l1, 0.0, 0.9)
        if self.lagrangian + self.lagrangian_second > 0.9:
            raise ValueError("gradient: lagrangian + lagrangian_second must be <= 0.9")
        check_float("gradient", "unspent_lr", self.unspent_lr, 0.0, 10.0)
        for name in ("unspent_refine", "exchange_reserve", "stretch_refine", "next_class",
                     "skip_far_probes", "unspent_polish", "l1_slow_restart",
                     "l1_slow_extend"):  # fmt: skip
            check_bool("gradient", name, getattr(self, name))
        check_float("gradient", "hopeless", self.hopeless, 0.0, 1000.0)
        check_float("gradient", "stretch_below", self.stretch_below, 0.0, 1000.0)
        if 0.0 < self.hopeless < 1.0:
            raise ValueError("gradient.hopeless: expected 0 (off) or a ratio >= 1")
        check_float("gradient", "late_hopeless", self.late_hopeless, 0.0, 1000.0)
        if 0.0 < self.late_hopeless < 1.0:
            raise ValueError("gradient.late_hopeless: expected 0 (off) or a ratio >= 1")
        if self.first_share + self.probes * self.probe_share > 1.0:
            raise ValueError("gradient: first_share + probes * probe_share must be <= 1")
        if self.first_share + self.short_probes * self.short_probe_share > 1.0:
            raise ValueError(
                "gradient: first_share + short_probes * short_probe_share must be <= 1"
            )


@dataclass(frozen=True)
class DecisionConfig:
    """Knobs of the decision strategy (the defaults are what the tests and benchmarks use).

    ``starts`` flips per sample are refined (at most ``max_starts``), then ``passes`` more
    rounds from the best point; ``ladder`` sizes per axis move; ``reference_candidates``
    nearest reference rows tried as flips; ``noise_rounds`` of growing uniform noise;
    ``bisect_steps`` / ``coordinate_steps`` bisections; coordinate sweeps for spaces with
    at most ``coordinate_limit`` groups; ``probes`` queries per boundary-normal estimate;
    ``chunk`` rows per model call.
    """

    starts: int = 3
    max_starts: int = 8
    passes: int = 3
    ladder: int = 4
    reference_candidates: int = 24
    noise_rounds: int = 10
    bisect_steps: int = 10
    coordinate_steps: int = 7
    coordinate_limit: int = 64
    probes: int = 16
    chunk: int = 8192

    def __post_init__(self) -> None:
        for name, low in (("starts", 1), ("max_starts", 1), ("passes", 0), ("ladder", 0),
                          ("reference_candidates", 0), ("noise_rounds", 0),
                          ("bisect_steps", 1), ("coordinate_steps", 0),
                          ("coordinate_limit", 0), ("probes", 2), ("chunk", 1)):  # fmt: skip
            check_int("decision", name, getattr(self, name), low, 10**6)


@dataclass(frozen=True)
class DiscreteConfig:
    """Knobs of the discrete search.

    ``method``: ``greedy`` (positions in importance order, the best candidate at each kept
    when it lowers the loss — TextAttack's greedy-WIR walk, with re-ranking and pruning),
    ``beam`` (``beam_width`` partial solutions, each level adds one edit at one of the
    ``beam_width`` most important free positions) or ``exhaustive`` (every combination,
    cheapest first: a proven minimum, for short inputs). ``order``: ``auto`` (the problem's
    own ``rank`` when the model is differentiable, else leave-one-out), ``rank``,
    ``leave-one-out`` (one query per position, with the problem's ``neutral`` edit),
    ``best-single`` (every single edit scored first: exact gains for additive models, one
    query per candidate) or ``none``. ``rerank`` re-ranks the free positions after each kept
    edit (only with ``rank``). ``prune`` drops kept edits that the flip does not need.
    ``exhaustive_limit`` caps the combinations enumerated, whether to prove a lower bound
    after the search (``exact = "auto"``) or in ``exhaustive`` mode.
    """

    method: str = "greedy"
    beam_width: int = 4
    order: str = "auto"
    rerank: bool = True
    prune: bool = True
    exhaustive_limit: int = 400

    def __post_init__(self) -> None:
        if self.method not in DISCRETE_METHODS:
            raise ValueError(f"method: expected greedy, beam or exhaustive, got {self.method!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order: expected one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.beam_width < 1 or self.exhaustive_limit < 0:
            raise ValueError("beam_width must be >= 1 and exhaustive_limit >= 0")
        check_int("discrete", "beam_width", self.beam_width, 1, 10**4)
        check_int("discrete", "exhaustive_limit", self.exhaustive_limit, 0, 10**8)


@dataclass(frozen=True)
class Plan:
    """How one sample's budget is split: passes for the search, line-search steps, and the
    passes set aside for the finishing steps (clean pass and verification: 2, exact
    nudges, decoding, the per-sample report)."""

    search: int
    line_search: int
    reserved: int


@dataclass(frozen=True)
class SearchSpec:
    """How hard and how to search: the query budget is forward + backward passes per sample.

    ``exact`` is ``"auto"`` (use an exact method where a plugin has one), ``"never"`` or
    ``"only"`` (skip the search and report exact margins only). ``strategy``: ``auto``,
    ``gradient``, ``decision``, ``hybrid`` (continuous spaces), ``greedy``, ``beam``,
    ``exhaustive`` (discrete spaces; ``discrete`` = the space's own choice) or ``exact``.
    ``seed`` seeds every sample's own random stream (with the sample's id), so a result
    never depends on the other samples of its batch. ``report_passes`` are set aside per
    sample for the space's per-sample report, ``baseline_passes`` for the random-perturbation
    baseline (:mod:`mmargin.engine.baseline`; 0 = off). ``discrete`` overrides the space's
    own ``search_config``. ``flip_repeats`` is how many passes re-check a flip when the model
    proves non-deterministic (:mod:`mmargin.engine.probe`); it must hold on
    :attr:`flip_agree` of them.
    """

    budget: int = 1000
    batch_size: int = 128
    strategy: str = "auto"
    exact: str = "auto"
    line_search_steps: int = 12
    seed: int = 0
    gradient: GradientConfig = field(default_factory=GradientConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    discrete: DiscreteConfig | None = None
    report_passes: int = 0
    flip_repeats: int = FLIP_REPEATS
    baseline_passes: int = 0

    def __post_init__(self) -> None:
        check_int("search", "budget", self.budget, 1, MAX_BUDGET)
        check_int("search", "flip_repeats", self.flip_repeats, 1, 1000)
        check_int("search", "batch_size", self.batch_size, 1, 10**6)
        check_choice("search", "strategy", self.strategy, STRATEGY_NAMES)
        check_choice("search", "exact", self.exact, EXACT_MODES)
        check_int("search", "line_search_steps", self.line_search_steps, 0, 64)
        check_int("search", "seed", self.seed, 0, MAX_SEED)
        check_int("search", "report_passes", self.report_passes, 0, MAX_BUDGET)
        check_int("search", "baseline_passes", self.baseline_passes, 0, MAX_BUDGET)
        for name, kind in (("gradient", GradientConfig), ("decision", DecisionConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"search.{name}: expected a {kind.__name__}")

    def plan(self, reserve: int = 0) -> Plan:
        """Split the budget: 1 clean pass + 1 verification + ``reserve`` (exact nudges,
        decoding, report) + the random baseline's passes first, then up to
        ``line_search_steps`` (at most a third of what is left), the rest for the search.
        Never more than the budget in total."""
        reserve += self.baseline_passes
        left = max(self.budget - 2 - reserve, 0)
        line = min(self.line_search_steps, left // 3)
        return Plan(search=left - line, line_search=line, reserved=2 + reserve)

    @property
    def flip_agree(self) -> int:
        """Repeated passes a flip of a non-deterministic model must hold on."""
        return max(math.ceil(FLIP_AGREEMENT * self.flip_repeats - 1e-9), 1)

    def search_passes(self) -> int:
        """Passes left for the search after the clean pass, line search and verification."""
        return self.plan().search
