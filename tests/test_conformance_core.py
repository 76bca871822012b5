"""The conformance kit on everything the core plugin registers: the ``box`` space, the
``l0 l1 l2 linf`` distances (plain and cost-weighted), the ``torch`` and ``callable``
adapters and the ``npz`` loader — looked up through the plugin registry, as a task would."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mmargin import plugins
from mmargin.testing import (
    Case,
    Check,
    adapter_case,
    distance_case,
    linear_model,
    loader_case,
    parametrize_with_checks,
    space_case,
)
from mmargin.testing import (
    build_registered as _make,
)

RNG = np.random.default_rng(0)
X = RNG.uniform(0.0, 1.0, (6, 4)).astype(np.float32)
W = RNG.standard_normal((4, 3))


def _npz() -> str:
    folder = Path(tempfile.mkdtemp(prefix="mmargin-npz-"))
    np.savez(folder / "rows.npz", x=X, y=np.arange(len(X)) % 3)
    return str(folder / "rows.npz")


CASES: list[Case] = [
    space_case("box", lambda: _make("spaces", "box", lower=0.0, upper=1.0, shape=[4]), lambda: X),
    space_case(
        "box-masked",
        lambda: _make("spaces", "box", lower=[0, 0, 0, 0], upper=1.0, mask=[1, 0, 1, 1]),
        lambda: X,
    ),
    space_case("box-unbounded", lambda: _make("spaces", "box"), lambda: X * 10 - 5),
    *[
        distance_case(n, lambda n=n: _make("distances", n), (2, 3))
        for n in ("l0", "l0_channels", "l1", "l2", "linf")
    ],
    *[
        distance_case(
            f"{n}-weighted",
            lambda n=n: _make("distances", n, weights=[0.5, 2, 1, 3]),
            (4,),
        )
        for n in ("l0", "l1", "l2", "linf")
    ],
    adapter_case(
        "torch",
        lambda: _make("adapters", "torch", linear_model(4, 3, seed=1)),
        lambda: X,
    ),
    adapter_case(
        "torch-normalised",
        lambda: _make("adapters", "torch", linear_model(4, 3, seed=2), mean=0.5, std=0.25),
        lambda: X,
    ),
    adapter_case(
        "callable",
        lambda: _make("adapters", "callable", lambda a: a @ W),
        lambda: X,
    ),
    loader_case(
        "npz",
        plugins.lookup("datasets", "npz").factory,
        {"path": _npz()},
        space=lambda: _make("spaces", "box", lower=0.0, upper=1.0),
    ),
]


@parametrize_with_checks(CASES)
def test_core_conformance(case: Case, check: Check) -> None:
    check(case)


def test_every_core_registration_is_checked() -> None:
    """A space, distance, adapter or loader added to the core without a case fails here."""
    checked = {case.name.split("-")[0] for case in CASES}
    for kind in ("spaces", "distances", "adapters", "datasets"):
        core = {e.name for e in plugins.registries()[kind].values() if e.plugin == "core"}
        assert core <= checked, f"core {kind} without a conformance case: {core - checked}"
