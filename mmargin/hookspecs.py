"""Every hook a mmargin plugin can implement, in one place.

The host calls the ``register_*`` hooks once, when plugins are first needed, passing a
``register`` callback; a plugin calls it once per thing it provides. Names are global
across plugins: two plugins registering the same name is an error that names both.
Factories are called lazily, with the options from the task file, so a plugin's heavy
imports (torch, transformers, torchaudio) happen inside the factory, never at import.

``mmargin_exact_margin``, ``mmargin_exact_model``, ``mmargin_exact_constraints``,
``mmargin_adapt_model``, ``mmargin_sample_report``, ``mmargin_summary_examples`` and
``mmargin_render_sample`` are ``firstresult`` hooks: the host stops at the first plugin
that returns something other than ``None`` (pluggy's call order: last registered first,
``tryfirst``/``trylast`` respected).
``mmargin_write_artifacts`` is called on every plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from typing import TypeAlias

    import numpy as np
    import torch

    from mmargin.data import Dataset
    from mmargin.exact.problem import ExactModel, FeatureConstraints
    from mmargin.exact.types import ExactMargin
    from mmargin.goals import Goal
    from mmargin.protocols import (
        DiscreteSpace,
        Distance,
        EditDistance,
        ModelAdapter,
        RelaxedSpace,
        Space,
    )
    from mmargin.results import SampleResult

    AnySpace: TypeAlias = Space | DiscreteSpace | RelaxedSpace
    AnyDistance: TypeAlias = Distance | EditDistance

hookspec = pluggy.HookspecMarker("mmargin")
hookimpl = pluggy.HookimplMarker("mmargin")


class Register(Protocol):
    """``register(name, factory, help="one line")``: what the ``register_*`` hooks receive.

    ``name`` is global across plugins for its kind; ``factory`` is called lazily with the
    task's options; ``help`` is the line ``mmargin plugins`` prints.
    """

    def __call__(self, name: str, factory: Callable[..., Any], help: str = "") -> None: ...


@hookspec
def mmargin_register_spaces(register: Register) -> None:
    """Register perturbation spaces.

    Called by the host once per session. ``factory(**options)`` returns a space (see
    :mod:`mmargin.protocols`: ``Space``, ``DiscreteSpace``, ``RelaxedSpace``): how a
    perturbation is represented for an input, applied, projected onto the constraint set
    and sampled. Options come from the task's ``[space]`` table.
    """


@hookspec
def mmargin_register_distances(register: Register) -> None:
    """Register distances: the units a margin is reported in.

    Called by the host once per session. ``factory(**options)`` returns a ``Distance``
    (norm, dual norm, ball projection) or an ``EditDistance`` (see
    :mod:`mmargin.protocols`). Options come from the task's ``[distance]`` table.
    """


@hookspec
def mmargin_register_adapters(register: Register) -> None:
    """Register model adapters by name (``torch``, ``sklearn``, ``transformers`` ...).

    Called by the host once per session. ``factory(model, device=..., **options)`` wraps a
    loaded model object into a ``ModelAdapter`` (:mod:`mmargin.protocols`) and says whether
    gradients exist. Options come from the task's ``model.adapter_options`` (or the API's
    ``adapter_options``). The adapter must not change the caller's model (mode,
    ``requires_grad``): copy or restore what it touches.
    """


@hookspec
def mmargin_register_datasets(register: Register) -> None:
    """Register data loaders, including built-in demo data.

    Called by the host once per session. ``factory(**options)`` returns a
    :class:`mmargin.data.Dataset` already in the space's units. Options come from the
    task's ``[data]`` table.
    """


@hookspec
def mmargin_register_models(register: Register) -> None:
    """Register model factories that a task file may name in ``model.factory``.

    Called by the host once per session. ``factory(**options)`` returns a model object
    (a torch module, a fitted estimator, ...) that an adapter then wraps; options come from
    the task's ``model.options``. Registering a factory is what makes it reachable from a
    shared task file (``factory = "mnist_cnn"``): a task may otherwise only import from its
    own folder or from packages the user allowed (the README's "What a task file can
    execute"). Register only factories that are safe to call with any options a task
    could pass.
    """


@hookspec(firstresult=True)
def mmargin_adapt_model(
    model: object, device: str, options: Mapping[str, Any]
) -> ModelAdapter | None:
    """Wrap a model object whose kind this plugin recognises, or return ``None``.

    Called by the host when no adapter is named (the Python API, or a task without
    ``model.adapter``). ``options`` are the adapter options (mean/std ...); raise
    ``TypeError``/``ValueError`` for options your adapter does not accept.
    """


@hookspec(firstresult=True)
def mmargin_exact_margin(
    model: ModelAdapter,
    space: AnySpace,
    distance: AnyDistance,
    x: np.ndarray,
    label: int,
    target: int | None,
    upper_bound: float | None,
    goal: Goal,
) -> ExactMargin | None:
    """The exact minimal margin of one sample, or ``None`` if this plugin cannot solve it.

    Called by the engine after its search (``upper_bound`` is the verified margin it
    found, ``None`` if none) for every correctly classified sample, unless the task says
    ``exact = "never"``. ``model`` is the adapter. ``goal`` is the run's flip criterion
    (:mod:`mmargin.goals`); return ``None`` for a goal you do not model (a threshold goal
    moves the decision boundary, so an arg-max margin would be a wrong bound). Return
    quickly with ``None`` for models you do not recognise or that are too large to solve.
    The host records which plugin answered (``ExactMargin.plugin``); a lower bound above a
    verified flip is discarded with a warning naming that plugin.
    """


@hookspec(firstresult=True)
def mmargin_exact_model(model: ModelAdapter) -> ExactModel | None:
    """Describe a model adapter's parameters for the core's exact solvers, or ``None``.

    Called by the core's ``mmargin_exact_margin`` (once per sample it is asked about)
    with the run's adapter. Return a :class:`mmargin.exact.problem.ExactModel`: affine
    ``layers`` with ReLUs between them (one layer: a linear model) or a tree
    ``ensemble`` (:class:`mmargin.exact.trees.TreeEnsemble`), and the ``head`` saying
    how the adapter's scores derive from the outputs (``logits``, ``softmax``, ``logit``,
    ``ovr``, ``decision``, ``proba``), and any input normalisation the adapter applies
    (``mean``/``std``). Return ``None`` for adapters you do not know; never
    build a solver model (the core does). The core handles torch ``Linear``/``ReLU``
    stacks itself. Cache expensive extractions on your adapter.
    """


@hookspec(firstresult=True)
def mmargin_exact_constraints(
    space: AnySpace, distance: AnyDistance, x: np.ndarray
) -> FeatureConstraints | None:
    """Describe what may change in the sample ``x`` and what a change costs, or ``None``.

    Called by the core's ``mmargin_exact_margin`` for each sample (``x``: one sample as
    the space holds it, float64; the description is of its flattened features). Return a
    :class:`mmargin.exact.problem.FeatureConstraints` (build it with
    :func:`mmargin.exact.problem.feature_constraints`): per-feature bounds with
    directions folded in, the features that may change, integer features, one-hot
    groups and their switching costs, the per-feature weights of ``distance`` and its
    norm ``p``. Return ``None`` when ``space`` or ``distance`` is not yours (the core
    describes plain box spaces under Lp distances, as the last resort).
    """


@hookspec(firstresult=True)
def mmargin_sample_report(
    space: AnySpace,
    model: ModelAdapter,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    labels: torch.Tensor,
    goal: Goal,
    distance: AnyDistance,
) -> list[dict[str, Any]] | None:
    """Extra per-sample figures for the flipped samples of a batch, or ``None``.

    Called by the engine once per batch, after verification, with the clean inputs ``x``,
    their verified adversarials ``x_adv`` and labels (one row each). ``model`` is the
    engine's *counted* adapter: every pass you make through it is charged to the samples'
    budget, so spend few. Decide flips with ``goal`` (``goal.is_adversarial``), never with
    an arg-max of your own; measure sizes with the run's ``distance`` (``distance.norm``).
    Return one dict per row (merged into ``SampleResult.extras``); return ``None`` when
    ``space`` is not one of yours.
    """


@hookspec
def mmargin_write_artifacts(
    space: AnySpace, out: Path, results: Sequence[SampleResult], dataset: Dataset
) -> None:
    """Write a modality's own files (WAVs, images) into a finished run's folder ``out``.

    Called by the host after a task run has written ``results.jsonl`` and the summary, on
    every plugin; do nothing when ``space`` is not one of yours. Write only under ``out``.
    """


@hookspec(firstresult=True)
def mmargin_summary_examples(space: AnySpace, results: Sequence[SampleResult]) -> list[str] | None:
    """Two or three human-readable example lines for the CLI summary, or ``None``.

    Called by the host after a task run (``mmargin run``) with the run's space and
    results; return ``None`` when ``space`` is not one of yours. Describe a few flips in
    the modality's own units — an edited sentence with the edits marked, the changed
    features in raw units, a loudness in dB — from each result's margin, ``extras`` and
    ``adversarial``; ``mmargin.plugin.pick_examples`` picks the smallest, median and
    largest flips and ``ratio_note`` words the comparison with random noise. Plain text
    only (no colours): the host prints each line as it is, cut to one line.
    """


@hookspec(firstresult=True)
def mmargin_render_sample(
    space: AnySpace | None, result: SampleResult, dataset_item: np.ndarray | None
) -> str | None:
    """An HTML fragment showing one sample in ``mmargin report``'s gallery, or ``None``.

    Called by the report (:mod:`mmargin.report`) for the flipped samples it shows, after
    the run: ``space`` is the run's space rebuilt from its task copy (``None`` when that
    fails, e.g. the plugin is no longer installed), ``result`` the sample's record with
    its ``adversarial`` and ``extras``, ``dataset_item`` its clean input as the space holds
    it (from the run's ``inputs.npz``; ``None`` for runs written before it existed or
    spaces whose inputs are not arrays). Return ``None`` when the sample is not of your
    modality. Every text from the model or the data must be escaped (``html.escape``);
    embed media as data URIs (``mmargin.plugin.png_data_uri``, ``wav_data_uri``): the
    report must work offline. The first plugin that returns a fragment wins.
    """
