"""The compared methods behind one interface.

Every method gets the same counted model (mmargin's one pass counter,
:class:`mmargin.engine.counting.CountingModule`), the same batch ``x`` in
``[0, 1]`` and labels ``y``, and returns its adversarial batch. The counter sees every
forward call and every backward pass that reaches the model's input, whoever makes it, so
the passes a method used are measured rather than taken from its documentation.

Each method's configuration is a function of the norm and the per-sample budget; the
fixed parts follow the libraries' documented defaults, and only the iteration counts are
set so that the measured passes stay within the budget (see ``cost`` in each entry: the
passes one iteration costs per sample, and the fixed passes around the loop).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from peer_base import ALL_NORMS, NORMS, Method, steps
from peers_adv_lib import (
    al_alma_config,
    al_alma_run,
    al_ddn_config,
    al_ddn_run,
    al_fab_config,
    al_fab_run,
    al_fmn_config,
    al_fmn_run,
    al_keywords,
    al_pdpgd_config,
    al_sigma_zero_config,
)
from torch import Tensor

from mmargin.engine.counting import CountingModule


# -- mmargin ------------------------------------------------------------------------------
def _mmargin_config(norm: str, budget: int) -> dict[str, Any]:
    return {
        "budget": budget,
        "batch_size": "the harness batch",
        "strategy": "auto",
        "exact": "never",
        "gradient": "GradientConfig() defaults",
        "cost": "SearchSpec.budget counts every pass",
    }


def _mmargin_early_config(norm: str, budget: int) -> dict[str, Any]:
    return {
        **_mmargin_config(norm, budget),
        "gradient": "GradientConfig(patience=100, rtol=1e-3): per-sample early stop",
        "patience": 100,
        "rtol": 1e-3,
    }


def _mmargin_run(
    model: CountingModule, x: Tensor, y: Tensor, norm: str, cfg: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    from mmargin.adapters import TorchAdapter
    from mmargin.distances import fit_distance, lp
    from mmargin.engine import minimal_flip
    from mmargin.engine.spec import GradientConfig, SearchSpec
    from mmargin_image.plugin import image_space

    gradient = GradientConfig(patience=cfg.get("patience", 0), rtol=cfg.get("rtol", 1e-4))
    spec = SearchSpec(
        budget=cfg["budget"], batch_size=len(x), exact=cfg["exact"], gradient=gradient
    )
    x_np = x.numpy()
    space = image_space()
    distance = fit_distance(space, lp(norm))  # as mmargin.api does: image L0 counts pixels
    # ``device`` (bench/gpu_bench.py): the model and the search state there; images and
    # adversarials go in and out as CPU arrays
    adapter = TorchAdapter(model, device=torch.device(cfg.get("device", "cpu")))
    results = minimal_flip(adapter, space, distance, x_np, y.numpy(), spec=spec)
    adv = x_np.copy()
    for i, r in enumerate(results):
        if r.adversarial is not None:
            adv[i] = np.asarray(r.adversarial, dtype=np.float32).reshape(x_np.shape[1:])
    extras = {
        "reported_queries": [int(r.queries) for r in results],
        "reported_margin": [float(r.margin) for r in results],
        "status": [str(r.status.value) for r in results],
    }
    return torch.from_numpy(adv), extras


# -- Foolbox 3.3.4 ----------------------------------------------------------------------
def _fb_model(model: CountingModule) -> Any:
    import foolbox as fb

    return fb.PyTorchModel(model, bounds=(0.0, 1.0), device="cpu")


def _fb_call(attack: Any, model: CountingModule, x: Tensor, y: Tensor) -> Tensor:
    # the documented minimisation call: epsilons=None means no size limit, no early stop
    _raw, clipped, _success = attack(_fb_model(model), x, y, epsilons=None)
    return clipped.detach()


def _fb_fmn_config(norm: str, budget: int) -> dict[str, Any]:
    # one forward + one backward per step; Foolbox's __call__ adds one forward to check
    return {
        "steps": steps(budget, 2, 1),
        "max_stepsize": 1.0,
        "gamma": 0.05,
        "min_stepsize": "max_stepsize / 100 (default)",
        "init_attack": None,
        "cost": "2 per step + 1",
    }


def _fb_fmn_run(
    model: CountingModule, x: Tensor, y: Tensor, norm: str, cfg: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    import foolbox as fb

    cls = {
        "l2": fb.attacks.L2FMNAttack,
        "linf": fb.attacks.LInfFMNAttack,
        "l1": fb.attacks.L1FMNAttack,
        "l0": fb.attacks.L0FMNAttack,
    }[norm]
    attack = cls(steps=cfg["steps"], max_stepsize=cfg["max_stepsize"], gamma=cfg["gamma"])
    return _fb_call(attack, model, x, y), {}


def _fb_ddn_config(norm: str, budget: int) -> dict[str, Any]:
    return {
        "steps": steps(budget, 2, 1),
        "init_epsilon": 1.0,
        "gamma": 0.05,
        "cost": "2 per step + 1",
    }


def _fb_ddn_run(
    model: CountingModule, x: Tensor, y: Tensor, norm: str, cfg: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    import foolbox as fb

    attack = fb.attacks.DDNAttack(
        init_epsilon=cfg["init_epsilon"], steps=cfg["steps"], gamma=cfg["gamma"]
    )
    return _fb_call(attack, model, x, y), {}


def _fb_deepfool_config(norm: str, budget: int) -> dict[str, Any]:
    # per step: (candidates - 1) forward + backward pairs (Foolbox repeats the forward per
    # class); it stops when the whole batch is adversarial. The default 50 steps stay
    # within 1000: 1 + 50 * 18 + 1.
    candidates = 10
    per_step = 2 * (candidates - 1)
    return {
        "steps": min(50, steps(budget, per_step, 2)),
        "candidates": candidates,
        "overshoot": 0.02,
        "loss": "logits",
        "cost": f"{per_step} per step + 2, batch stops when all adversarial",
    }


def _fb_deepfool_run(
    model: CountingModule, x: Tensor, y: Tensor, norm: str, cfg: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    import foolbox as fb

    cls = {"l2": fb.attacks.L2DeepFoolAttack, "linf": fb.attacks.LinfDeepFoolAttack}[norm]
    attack = cls(
        steps=cfg["steps"],
        candidates=cfg["candidates"],
        overshoot=cfg["overshoot"],
        loss=cfg["loss"],
    )
    return _fb_call(attack, model, x, y), {}


def _fb_cw_config(norm: str, budget: int) -> dict[str, Any]:
    # binary_search_steps * steps <= budget / 2: one forward + backward per inner step
    bss = 5
    return {
        "binary_search_steps": bss,
        "steps": steps(budget, 2 * bss, 2),
        "stepsize": 0.01,
        "confidence": 0.0,
        "initial_const": 0.001,
        "abort_early": True,
        "cost": "2 per inner step + 1",
    }


def _fb_cw_single_config(norm: str, budget: int) -> dict[str, Any]:
    # a within-budget variant that spends the budget on one long Adam run at a fixed
    # constant instead of a binary search (chosen on the first 50 test images: see README)
    return {
        "binary_search_steps": 1,
        "steps": steps(budget, 2, 2),
        "stepsize": 0.01,
        "confidence": 0.0,
        "initial_const": 1.0,
        "abort_early": True,
        "cost": "2 per inner step + 1",
    }


def _fb_cw_run(
    model: CountingModule, x: Tensor, y: Tensor, norm: str, cfg: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    import foolbox as fb

    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=cfg["binary_search_steps"],
        steps=cfg["steps"],
        stepsize=cfg["stepsize"],
        confidence=cfg["confidence"],
        initial_const=cfg["initial_const"],
        abort_early=cfg["abort_early"],
    )
    return _fb_call(attack, model, x, y), {}


# -- torchattacks 3.5.1 ---------------------------------------------------------------------
def _ta_fab_config(norm: str, budget: int) -> dict[str, Any]:
    # per step: one forward + K = 10 backward (every class, the true one too) + one forward
    # to check; one forward for the clean prediction, one for the final check
    return {
        "norm": {"l2": "L2", "linf": "Linf", "l1": "L1"}[norm],
        "steps": steps(budget, 12, 3),
        "eps": "inf (accept any size: minimal-norm use)",
        "n_restarts": 1,
        "alpha_max": 0.1,
        "eta": 1.05,
        "beta": 0.9,
        "seed": 0,
        "cost": "12 per step + 3",
    }


def _ta_fab_run(
    model: CountingModule, x: Tensor, y: Tensor, norm: str, cfg: dict[str, Any]
) -> tuple[Tensor, dict[str, Any]]:
    import torchattacks

    attack = torchattacks.FAB(
        model,
        norm=cfg["norm"],
        eps=math.inf,
        steps=cfg["steps"],
        n_restarts=cfg["n_restarts"],
        alpha_max=cfg["alpha_max"],
        eta=cfg["eta"],
        beta=cfg["beta"],
        seed=cfg["seed"],
        n_classes=10,
    )
    return attack(x, y).detach(), {}


_CW_NOTE = (
    "C&W optimises in tanh space with Adam (step 0.01): pixels at exactly 0 or 1 (most of an "
    "MNIST image) move by ~1e-6 per hundred steps, so short runs can only change the stroke "
    "pixels. Foolbox returns an all-zero image where it found nothing; such an image still "
    "counts when the model's prediction on it differs from the label (see checks.zero_image)."
)

METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("mmargin", "mmargin", "minimal_flip", ALL_NORMS, _mmargin_config, _mmargin_run),
        Method(
            "mmargin.early",
            "mmargin",
            "minimal_flip, early stop",
            ALL_NORMS,
            _mmargin_early_config,
            _mmargin_run,
        ),
        Method(
            "foolbox.fmn",
            "foolbox 3.3.4",
            "FMN",
            ALL_NORMS,
            _fb_fmn_config,
            _fb_fmn_run,
            {
                "l2": "Foolbox 3.3.4's L2FMNAttack.project computes `norms / norms` (always 1), "
                "so its L2 projection onto the ε-ball is a no-op; reported as it runs."
            },
        ),
        Method("foolbox.ddn", "foolbox 3.3.4", "DDN", ("l2",), _fb_ddn_config, _fb_ddn_run),
        Method(
            "foolbox.deepfool",
            "foolbox 3.3.4",
            "DeepFool",
            ("l2", "linf"),
            _fb_deepfool_config,
            _fb_deepfool_run,
        ),
        Method(
            "foolbox.cw",
            "foolbox 3.3.4",
            "C&W",
            ("l2",),
            _fb_cw_config,
            _fb_cw_run,
            {"l2": _CW_NOTE},
        ),
        Method(
            "foolbox.cw_1x499",
            "foolbox 3.3.4",
            "C&W (1 search step, const 1)",
            ("l2",),
            _fb_cw_single_config,
            _fb_cw_run,
            {"l2": _CW_NOTE},
        ),
        Method(
            "adv_lib.fmn",
            "adv_lib 0.2.8",
            "FMN",
            ALL_NORMS,
            al_fmn_config,
            al_fmn_run,
            {
                "l2": "adv_lib 0.2.8's l2_projection_ computes `δ.mul_(ε / ‖δ‖).clamp_(max=1)`: "
                "the clamp hits δ, not the scale factor, so every step rescales δ onto the "
                "ε-sphere (growing it from inside the ball too); reported as it runs."
            },
        ),
        Method("adv_lib.ddn", "adv_lib 0.2.8", "DDN", ("l2",), al_ddn_config, al_ddn_run),
        Method("adv_lib.fab", "adv_lib 0.2.8", "FAB", NORMS, al_fab_config, al_fab_run),
        Method("adv_lib.alma", "adv_lib 0.2.8", "ALMA", ("l2", "l1"), al_alma_config, al_alma_run),
        Method(
            "adv_lib.sigma_zero",
            "adv_lib 0.2.8",
            "σ-zero",
            ("l0",),
            al_sigma_zero_config,
            al_keywords("sigma_zero"),
        ),
        Method(
            "adv_lib.pdpgd",
            "adv_lib 0.2.8",
            "PDPGD (L2/3 proximal)",
            ("l0",),
            al_pdpgd_config,
            al_keywords("pdpgd"),
        ),
        Method("torchattacks.fab", "torchattacks 3.5.1", "FAB", NORMS, _ta_fab_config, _ta_fab_run),
    )
}
