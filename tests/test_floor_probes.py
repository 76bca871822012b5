"""A short L2 plan keeps its probes at :data:`~mmargin.engine.passes.ANNEAL_STEPS` where
its refinement can spare them (:func:`mmargin.engine.passes.floor_probes`)."""

from __future__ import annotations

from mmargin.engine.lagrangian_plan import lagrangian_steps
from mmargin.engine.passes import ANNEAL_STEPS, legs, search_legs
from mmargin.engine.spec import GradientConfig


def test_a_short_l2_plan_keeps_its_probes_wherever_the_refinement_can_spare_them() -> None:
    """Oracle: the plan of :func:`legs` alone (probes of the configured share, dropped when
    under ANNEAL_STEPS). Where it dropped them and its refinement keeps at least twice
    ANNEAL_STEPS after giving each probe ANNEAL_STEPS, the short L2 plan has them, taken
    from the refinement; everywhere else it is that plan."""
    config = GradientConfig()
    restored = 0
    for steps in range(config.split_min_l2, config.short_steps):
        spent = lagrangian_steps(steps, 2.0, config)
        want = legs(steps - spent, config.restarts, config.short_probes, config.first_share,
                    config.short_probe_share)  # fmt: skip
        got = search_legs(steps, 2.0, config, spent)
        assert sum(leg.steps for leg in got) == sum(leg.steps for leg in want)
        probes = [leg for leg in want if leg.kind == "probe"]
        refine = want[-1].steps
        spare = refine - config.short_probes * ANNEAL_STEPS >= 2 * ANNEAL_STEPS
        if probes or not spare:
            assert got == want, steps
            continue
        restored += 1
        kinds = [leg.kind for leg in got]
        assert kinds == ["first"] + ["probe"] * config.short_probes + ["refine"], steps
        assert all(leg.steps == ANNEAL_STEPS for leg in got if leg.kind == "probe")
        assert got[0] == want[0]
        assert got[-1].steps == refine - config.short_probes * ANNEAL_STEPS
    assert restored > 0  # the defaults have such plans (240 passes)
