"""The one import point for plugin authors: everything a mmargin plugin builds on.

A plugin imports from here (and from :mod:`mmargin.testing` in its tests), never from
the engine's or the exact core's modules, which may move::

    from mmargin.plugin import ContinuousSpace, Dataset, Register, hookimpl

    @hookimpl
    def mmargin_register_spaces(register: Register) -> None:
        register("grid", grid_space, help="points on a grid")

What is here:

- the hook marker ``hookimpl`` and the ``Register`` callback type (:mod:`mmargin.hookspecs`
  documents every hook: who calls it, when, what to return);
- the contract the engine relies on, as typed protocols (:mod:`mmargin.protocols`):
  ``Space``, ``DiscreteSpace``, ``RelaxedSpace``, ``DiscreteProblem`` (with its base class
  ``ProblemBase`` holding the optional capabilities' defaults), ``Distance``,
  ``EditDistance``, ``ModelAdapter``, ``Loader`` and the records ``Edit``, ``Ranking``,
  ``Encoding``, ``Found``;
- ready implementations to configure or subclass: ``ContinuousSpace`` / ``box``,
  ``LpDistance`` / ``lp``, ``TorchAdapter`` / ``CallableAdapter``, ``Dataset``;
- goals (``Goal`` and its base ``GoalBase``, ``Untargeted``, ``Targeted``, ``Threshold``,
  ``decide``, ``flip_tolerance``, ``make_goal``);
- what the exact hooks exchange: ``ExactMargin`` (an answer), ``ExactModel`` (a model's
  layers or trees: ``Tree``, ``TreeEnsemble``) and ``FeatureConstraints`` (built with
  ``feature_constraints``: what may change in a sample and at what cost);
- the search knobs a space may carry (``DiscreteConfig``) and the random-noise baseline
  (``NoiseConfig``, ``noise_margin``);
- ``BudgetExhausted``: what the counted adapter a report hook receives raises once the
  sample's budget is spent;
- media for a plugin's gallery view in ``mmargin report`` (``png_data_uri``,
  ``wav_data_uri``, ``spectrogram``: data URIs, so the report works offline);
- what a ``mmargin_summary_examples`` hook picks and words its lines with
  (``pick_examples``, ``ratio_note``, ``printable``);
- results (``SampleResult``, ``Status``) and errors: ``InvalidInputError`` (a batch the
  space cannot use), ``RunError`` (a mistake that dooms every sample),
  ``InvalidTaskError``, ``PluginError``.

Only ``hookimpl``, ``Register`` and the errors are imported eagerly: everything else
(torch included) loads on first use, so a plugin module that imports from here at its top
keeps ``mmargin --help`` instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmargin.errors import InvalidInputError, InvalidTaskError, PluginError, RunError
from mmargin.hookspecs import Register, hookimpl
from mmargin.lazy import lazy_attributes

if TYPE_CHECKING:
    from mmargin.adapters import CallableAdapter, TorchAdapter
    from mmargin.data import Dataset
    from mmargin.distances import LpDistance, lp, pixel_l0
    from mmargin.engine.counting import BudgetExhausted
    from mmargin.engine.noise import NoiseConfig, noise_margin
    from mmargin.engine.spec import DiscreteConfig
    from mmargin.exact.problem import ExactModel, FeatureConstraints, feature_constraints
    from mmargin.exact.trees import Tree, TreeEnsemble
    from mmargin.exact.types import ExactMargin
    from mmargin.examples import pick_examples, printable, ratio_note
    from mmargin.folders import FolderClasses, folder_classes
    from mmargin.goals import (
        Goal,
        GoalBase,
        Targeted,
        Threshold,
        Untargeted,
        decide,
        flip_tolerance,
        make_goal,
    )
    from mmargin.protocols import (
        DiscreteProblem,
        DiscreteSpace,
        Distance,
        Edit,
        EditDistance,
        Encoding,
        Found,
        Loader,
        ModelAdapter,
        ProblemBase,
        Ranking,
        RelaxedSpace,
        Space,
    )
    from mmargin.report.media import png_data_uri, spectrogram, wav_data_uri
    from mmargin.results import SampleResult, Status
    from mmargin.saved import PCM16, PNG8, SaveFormat, check_saved, saved_codes
    from mmargin.spaces import ContinuousSpace, box

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "Space",
            "DiscreteSpace",
            "RelaxedSpace",
            "DiscreteProblem",
            "ProblemBase",
            "Distance",
            "EditDistance",
            "ModelAdapter",
            "Loader",
            "Edit",
            "Ranking",
            "Encoding",
            "Found",
        ),
        "mmargin.protocols",
    ),
    "ContinuousSpace": "mmargin.spaces",
    "box": "mmargin.spaces",
    "LpDistance": "mmargin.distances",
    "lp": "mmargin.distances",
    "pixel_l0": "mmargin.distances",
    "TorchAdapter": "mmargin.adapters",
    "CallableAdapter": "mmargin.adapters",
    "Dataset": "mmargin.data",
    "FolderClasses": "mmargin.folders",
    **dict.fromkeys(("PCM16", "PNG8", "SaveFormat", "check_saved", "saved_codes"), "mmargin.saved"),
    "folder_classes": "mmargin.folders",
    **dict.fromkeys(
        (
            "Goal",
            "GoalBase",
            "Untargeted",
            "Targeted",
            "Threshold",
            "decide",
            "flip_tolerance",
            "make_goal",
        ),
        "mmargin.goals",
    ),
    "ExactMargin": "mmargin.exact.types",
    "ExactModel": "mmargin.exact.problem",
    "FeatureConstraints": "mmargin.exact.problem",
    "feature_constraints": "mmargin.exact.problem",
    "Tree": "mmargin.exact.trees",
    "TreeEnsemble": "mmargin.exact.trees",
    "DiscreteConfig": "mmargin.engine.spec",
    "BudgetExhausted": "mmargin.engine.counting",
    "NoiseConfig": "mmargin.engine.noise",
    "noise_margin": "mmargin.engine.noise",
    "SampleResult": "mmargin.results",
    "Status": "mmargin.results",
    **dict.fromkeys(("png_data_uri", "wav_data_uri", "spectrogram"), "mmargin.report.media"),
    **dict.fromkeys(("pick_examples", "printable", "ratio_note"), "mmargin.examples"),
}

__all__ = [
    "PCM16",
    "PNG8",
    "BudgetExhausted",
    "CallableAdapter",
    "ContinuousSpace",
    "Dataset",
    "DiscreteConfig",
    "DiscreteProblem",
    "DiscreteSpace",
    "Distance",
    "Edit",
    "EditDistance",
    "Encoding",
    "ExactMargin",
    "ExactModel",
    "FeatureConstraints",
    "FolderClasses",
    "Found",
    "Goal",
    "GoalBase",
    "InvalidInputError",
    "InvalidTaskError",
    "Loader",
    "LpDistance",
    "ModelAdapter",
    "NoiseConfig",
    "PluginError",
    "ProblemBase",
    "Ranking",
    "Register",
    "RelaxedSpace",
    "RunError",
    "SampleResult",
    "SaveFormat",
    "Space",
    "Status",
    "Targeted",
    "Threshold",
    "TorchAdapter",
    "Tree",
    "TreeEnsemble",
    "Untargeted",
    "box",
    "check_saved",
    "decide",
    "feature_constraints",
    "flip_tolerance",
    "folder_classes",
    "hookimpl",
    "lp",
    "make_goal",
    "noise_margin",
    "pick_examples",
    "pixel_l0",
    "png_data_uri",
    "printable",
    "ratio_note",
    "saved_codes",
    "spectrogram",
    "wav_data_uri",
]


__getattr__ = lazy_attributes(__name__, _LAZY)


def __dir__() -> list[str]:
    return __all__
