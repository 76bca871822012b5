"""Testing helpers for mmargin and its plugins: oracles, and the conformance kit.

*Oracles* (:mod:`mmargin.testing.oracles`): tiny models whose exact margins are known in
closed form (``linear_model``, ``closed_form_margin``, ``toy_linear``).

The *conformance kit* checks a plugin's objects against the contract the engine relies
on (:mod:`mmargin.protocols`), one check per property, each failing with a message that
says what broke:

- spaces (:func:`check_space`): ``check`` accepts valid inputs and flags a bad one on its
  own row; ``project`` keeps ``x + δ`` valid, leaves frozen coordinates alone and is
  idempotent; ``finalize`` is valid and idempotent; ``free_gradient`` never points out of
  the space; ``free_dims`` and ``random`` are shaped and scaled as documented;
- distances (:func:`check_distance`): ``norm`` matches its definition (numpy for Lp),
  homogeneity and the triangle inequality; ``dual_norm`` satisfies Hölder and is tight;
  ``project`` lands in the ball, leaves points inside alone and is idempotent;
- adapters (:func:`check_adapter`): finite ``(B, K)`` scores, a row does not depend on the
  rest of its batch, gradients flow iff ``differentiable``, inputs are not modified, and
  the one pass counter (:class:`PassCounter`) counts every sample-pass;
- loaders (:func:`check_loader`), discrete spaces (:func:`check_discrete_space`) and edit
  distances (:func:`check_edit_distance`).

In a plugin's test suite, :func:`parametrize_with_checks` gives one test per (object,
check)::

    from mmargin.testing import distance_case, parametrize_with_checks, space_case

    @parametrize_with_checks([space_case("mine", make_space, make_inputs),
                              distance_case("mine", make_distance, shape=(16,))])
    def test_conformance(case, check):
        check(case)

``PassCounter`` / ``CountingAdapter`` (the engine's one pass counter), ``SearchSpec`` and
``minimal_flip`` are re-exported here for plugin tests that run the engine directly, and
``linear_margin`` (the exact margin of a linear model under box, mask and Lp),
``relu_net_margin`` and ``extract_relu_layers`` (MILP-exact margins of small ReLU nets) as
oracles;
``registered`` (a throwaway plugin for a ``with`` block), ``plugin_manager``, ``parse_task``
and ``run_cli`` (the ``mmargin`` command's ``main(argv)``) for tests of hooks and tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmargin.lazy import lazy_attributes
from mmargin.testing.cases import (
    Case,
    Check,
    ConformanceError,
    adapter_case,
    all_checks,
    checks_for,
    discrete_case,
    distance_case,
    edit_distance_case,
    loader_case,
    parametrize_with_checks,
    space_case,
)
from mmargin.testing.continuous import check_distance, check_space
from mmargin.testing.discrete import check_discrete_space, check_edit_distance, check_loader
from mmargin.testing.models import check_adapter
from mmargin.testing.oracles import closed_form_margin, linear_model, toy_linear
from mmargin.testing.registry import build_registered, unchecked_registrations

if TYPE_CHECKING:
    from mmargin.cli import main as run_cli
    from mmargin.engine import minimal_flip
    from mmargin.engine.counting import CountingAdapter, PassCounter
    from mmargin.engine.spec import SearchSpec
    from mmargin.exact.linear import linear_margin
    from mmargin.exact.milp import relu_net_margin
    from mmargin.exact.nets import extract_relu_layers
    from mmargin.plugins import manager as plugin_manager
    from mmargin.plugins import registered
    from mmargin.tasks import parse_task

_LAZY = {  # name here: (module, name there)
    "PassCounter": ("mmargin.engine.counting", "PassCounter"),
    "CountingAdapter": ("mmargin.engine.counting", "CountingAdapter"),
    "SearchSpec": ("mmargin.engine.spec", "SearchSpec"),
    "minimal_flip": ("mmargin.engine", "minimal_flip"),
    "linear_margin": ("mmargin.exact.linear", "linear_margin"),
    "relu_net_margin": ("mmargin.exact.milp", "relu_net_margin"),
    "extract_relu_layers": ("mmargin.exact.nets", "extract_relu_layers"),
    "parse_task": ("mmargin.tasks", "parse_task"),
    "plugin_manager": ("mmargin.plugins", "manager"),
    "registered": ("mmargin.plugins", "registered"),
    "run_cli": ("mmargin.cli", "main"),
}

__all__ = [
    "Case",
    "Check",
    "ConformanceError",
    "CountingAdapter",
    "PassCounter",
    "SearchSpec",
    "adapter_case",
    "all_checks",
    "build_registered",
    "check_adapter",
    "check_discrete_space",
    "check_distance",
    "check_edit_distance",
    "check_loader",
    "check_space",
    "checks_for",
    "closed_form_margin",
    "discrete_case",
    "distance_case",
    "edit_distance_case",
    "extract_relu_layers",
    "linear_margin",
    "linear_model",
    "loader_case",
    "minimal_flip",
    "parametrize_with_checks",
    "parse_task",
    "plugin_manager",
    "registered",
    "relu_net_margin",
    "run_cli",
    "space_case",
    "toy_linear",
    "unchecked_registrations",
]


__getattr__ = lazy_attributes(__name__, _LAZY)
