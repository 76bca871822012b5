"""Every hook a mmargin plugin can implement, in one place.

The host calls the ``register_*`` hooks once, when plugins are first needed, passing a
``register`` callback; a plugin calls it once per thing it provides. Names are global
across plugins: two plugins registering the same name is an error that names both.
Factories are called lazily, with the options from the task file, so a plugin's heavy
imports (torch, transformers, torchaudio) happen inside the factory, never at import.

``mmargin_exact_margin`` and ``mmargin_adapt_model`` are ``firstresult`` hooks: the host
stops at the first plugin that returns something other than ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import numpy as np

    from mmargin.exact.types import ExactMargin

hookspec = pluggy.HookspecMarker("mmargin")
hookimpl = pluggy.HookimplMarker("mmargin")

Register = Callable[..., None]
"""``register(name, factory, help="one line")``: what the ``register_*`` hooks receive."""


@hookspec
def mmargin_register_spaces(register: Register) -> None:
    """Register perturbation spaces.

    Called by the host once per session. ``factory(**options)`` returns a space (see
    :class:`mmargin.spaces.ContinuousSpace`): how a perturbation is represented for an
    input, applied, projected onto the constraint set and sampled. Options come from the
    task's ``[space]`` table.
    """


@hookspec
def mmargin_register_distances(register: Register) -> None:
    """Register distances: the units a margin is reported in.

    ``factory(**options)`` returns a :class:`mmargin.distances.Distance` (norm, dual norm,
    ball projection). Options come from the task's ``[distance]`` table.
    """


@hookspec
def mmargin_register_adapters(register: Register) -> None:
    """Register model adapters by name (``torch``, ``sklearn``, ``transformers`` ...).

    ``factory(model, device=..., **options)`` wraps a loaded model object into a
    :class:`mmargin.adapters.ModelAdapter` and says whether gradients exist.
    """


@hookspec
def mmargin_register_datasets(register: Register) -> None:
    """Register data loaders, including built-in demo data.

    ``factory(**options)`` returns a :class:`mmargin.data.Dataset` already in the space's
    units. Options come from the task's ``[data]`` table.
    """


@hookspec(firstresult=True)
def mmargin_adapt_model(model: Any, device: str, options: dict[str, Any]) -> Any:
    """Wrap a model object whose kind this plugin recognises, or return ``None``.

    Used when no adapter is named (the Python API, or a task without ``model.adapter``).
    """


@hookspec(firstresult=True)
def mmargin_exact_margin(
    model: Any,
    space: Any,
    distance: Any,
    x: np.ndarray,
    label: int,
    target: int | None,
    upper_bound: float | None,
    goal: Any,
) -> ExactMargin | None:
    """The exact minimal margin of one sample, or ``None`` if this plugin cannot solve it.

    Called by the engine after its search (``upper_bound`` is the verified margin it
    found, ``None`` if none) for every correctly classified sample, unless the task says
    ``exact = "never"``. ``model`` is the adapter. ``goal`` is the run's flip criterion
    (:mod:`mmargin.goals`); return ``None`` for a goal you do not model (a threshold goal
    moves the decision boundary, so an arg-max margin would be a wrong bound). Return
    quickly with ``None`` for models you do not recognise or that are too large to solve.
    """
