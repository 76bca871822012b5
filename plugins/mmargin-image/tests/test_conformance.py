"""The conformance kit on everything the image plugin registers: the ``image`` space, its
loaders (``digits``, ``mnist``, ``image-folder``, ``image-tensors``) and its models behind
the core's torch adapter — looked up through the plugin registry, as a task would."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmargin import plugins
from mmargin.testing import (
    Case,
    Check,
    adapter_case,
    loader_case,
    parametrize_with_checks,
    space_case,
    unchecked_registrations,
)
from mmargin.testing import (
    build_registered as _make,
)


@functools.cache
def _digits() -> Any:
    return _make("datasets", "digits").head(8)


@functools.cache
def _mnist() -> Any:
    return _make("datasets", "mnist").head(8)


def _folder() -> str:
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="mmargin-images-"))
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return str(root)


def _tensors() -> str:
    root = Path(tempfile.mkdtemp(prefix="mmargin-tensors-"))
    rng = np.random.default_rng(1)
    np.savez(root / "batch.npz", x=rng.uniform(size=(5, 3, 4, 4)).astype(np.float32),
             y=np.arange(5) % 2)  # fmt: skip
    return str(root / "batch.npz")


def _image_space() -> Any:
    return _make("spaces", "image")


CASES: list[Case] = [
    space_case("image-digits", _image_space, lambda: _digits().x),
    space_case("image-mnist", _image_space, lambda: _mnist().x),
    space_case(
        "image-range",
        lambda: _make("spaces", "image", lower=-1.0, upper=1.0),
        lambda: _digits().x * 2 - 1,
    ),
    adapter_case(
        "torch-mnist_cnn",
        lambda: _make("adapters", "torch", _make("models", "mnist_cnn")),
        lambda: _mnist().x,
    ),
    adapter_case(
        "torch-digits_cnn",
        lambda: _make("adapters", "torch", _make("models", "digits_cnn")),
        lambda: _digits().x,
    ),
    adapter_case(
        "torch-digits_mlp",
        lambda: _make("adapters", "torch", _make("models", "digits_mlp")),
        lambda: _digits().x,
    ),
    loader_case("digits", plugins.lookup("datasets", "digits").factory, {}, space=_image_space),
    loader_case("mnist", plugins.lookup("datasets", "mnist").factory, {}, space=_image_space),
    loader_case(
        "image-folder",
        plugins.lookup("datasets", "image-folder").factory,
        {"path": _folder()},
        space=_image_space,
    ),
    loader_case(
        "image-tensors",
        plugins.lookup("datasets", "image-tensors").factory,
        {"path": _tensors()},
        space=_image_space,
    ),
]


@parametrize_with_checks(CASES)
def test_image_conformance(case: Case, check: Check) -> None:
    check(case)


def test_every_image_registration_is_checked() -> None:
    """A space, loader or model added to the plugin without a case fails here."""
    missing = unchecked_registrations("image", CASES)
    assert not missing, f"image registrations without a conformance case: {missing}"
