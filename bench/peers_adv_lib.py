"""adv_lib 0.2.8's minimum-norm attacks (FMN, DDN, FAB, ALMA, σ-zero, PDPGD) behind the
benchmark's method interface (see :mod:`peers`): iteration counts set from each attack's
measured cost per iteration so that its passes stay within the budget."""

from __future__ import annotations

from typing import Any

from peer_base import P, RunFn, steps
from torch import Tensor

from mmargin.engine.counting import CountingModule


# -- adv_lib 0.2.8 ------------------------------------------------------------------------
def al_fmn_config(norm: str, budget: int) -> dict[str, Any]:
    return {
        "steps": steps(budget, 2, 0),
        "α_init": 1.0,
        "α_final": "α_init / 100 (default)",
        "γ_init": 0.05,
        "γ_final": 0.001,
        "cost": "2 per step",
    }


def al_ddn_config(norm: str, budget: int) -> dict[str, Any]:
    return {
        "steps": steps(budget, 2, 0),
        "γ": 0.05,
        "init_norm": 1.0,
        "levels": 256,
        "cost": "2 per step",
    }


def al_fab_config(norm: str, budget: int) -> dict[str, Any]:
    # per iteration: one forward + (K-1) = 9 backward for the linearisation, one forward to
    # check the step; one forward at the start
    return {
        "n_iter": steps(budget, 11, 1),
        "α_max": 0.1,
        "β": 0.9,
        "η": 1.05,
        "restarts": None,
        "targeted_restarts": False,
        "cost": "11 per iteration + 1",
    }


def al_alma_config(norm: str, budget: int) -> dict[str, Any]:
    return {
        "distance": norm,
        "num_steps": steps(budget, 2, 0),
        "lr_init": 0.1,
        "lr_reduction": 0.01,
        "init_lr_distance": None,
        "α": 0.9,
        "penalty": "P2 (default)",
        "cost": "2 per step",
    }


def al_sigma_zero_config(norm: str, budget: int) -> dict[str, Any]:
    return {
        "num_steps": steps(budget, 2, 0),
        "η_0": 1.0,
        "σ": 0.001,
        "τ_0": 0.3,
        "τ_factor": 0.01,
        "cost": "2 per step",
    }


def al_keywords(
    attack: str, passed: tuple[str, ...] = (), with_norm: bool = False, clone: bool = False
) -> RunFn:
    """A run function calling ``adv_lib.attacks.<attack>(model, x, y, **kwargs)``: the
    configuration's settings named in ``passed`` (none named: every one but the ``cost``
    note; the others only describe defaults), a configured ``norm`` as adv_lib's number,
    ``with_norm``: the run's norm as ``norm=``; ``clone``: on a copy of ``x`` (attacks that
    write into their input)."""

    def run(
        model: CountingModule, x: Tensor, y: Tensor, norm: str, cfg: dict[str, Any]
    ) -> tuple[Tensor, dict[str, Any]]:
        import adv_lib.attacks

        names = passed or tuple(k for k in cfg if k != "cost")
        kwargs = {k: cfg[k] for k in names}
        if "norm" in kwargs:
            kwargs["norm"] = P[kwargs["norm"]]
        if with_norm:
            kwargs["norm"] = P[norm]
        adv = getattr(adv_lib.attacks, attack)(model, x.clone() if clone else x, y, **kwargs)
        return adv.detach(), {}

    return run


al_fmn_run = al_keywords("fmn", ("steps", "α_init", "γ_init", "γ_final"), with_norm=True)
al_ddn_run = al_keywords("ddn", ("steps", "γ", "init_norm", "levels"))
al_fab_run = al_keywords(
    "fab",
    ("n_iter", "α_max", "β", "η", "restarts", "targeted_restarts"),
    with_norm=True,
    clone=True,
)
al_alma_run = al_keywords("alma", ("distance", "num_steps", "lr_init", "lr_reduction", "α"))


def al_pdpgd_config(norm: str, budget: int) -> dict[str, Any]:
    # adv_lib's docstring prefers the L2/3 proximal operator for minimising L0
    return {
        "norm": norm,
        "num_steps": steps(budget, 2, 0),
        "proximal_operator": 23,
        "primal_lr": 0.1,
        "cost": "2 per step",
    }
