"""Tests of the reference models: architectures, committed weights, accuracy, training."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mmargin_image import models
from mmargin_image.data import load_digits, load_mnist
from mmargin_image.models import (
    DigitsCNN,
    MnistCNN,
    digits_cnn,
    digits_mlp,
    digits_mlp_module,
    mnist_cnn,
)

torch.set_num_threads(1)

MANIFEST: dict[str, dict[str, Any]] = json.loads((models.WEIGHTS_DIR / "manifest.json").read_text())


@torch.no_grad()
def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    pred = torch.cat([model(torch.from_numpy(b)) for b in np.array_split(x, 5)]).argmax(1)
    return float((pred.numpy() == y).mean())


def test_architectures_map_inputs_to_ten_logits() -> None:
    torch.manual_seed(0)
    assert MnistCNN()(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert DigitsCNN()(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert digits_mlp_module()(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_digits_mlp_keeps_the_structure_the_milp_verifier_parses() -> None:
    mlp = digits_mlp()
    assert type(mlp) is nn.Sequential
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    sizes = [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)]
    assert sizes == [(64, 32), (32, 32), (32, 10)]


@pytest.mark.parametrize(
    ("name", "factory", "cls"),
    [
        ("mnist_cnn", mnist_cnn, MnistCNN),
        ("digits_cnn", digits_cnn, DigitsCNN),
        ("digits_mlp", digits_mlp, nn.Sequential),
    ],
)
def test_factories_load_trained_models_in_eval_mode(
    name: str, factory: Callable[..., nn.Module], cls: type
) -> None:
    model = factory()
    assert isinstance(model, cls)
    assert not model.training
    assert all(not m.training for m in model.modules())
    explicit = factory(models.weights_path(name))  # an explicit path works the same
    for a, b in zip(model.state_dict().values(), explicit.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["mnist_cnn", "digits_cnn", "digits_mlp"])
def test_weight_files_are_small_and_match_the_manifest(name: str) -> None:
    path = models.weights_path(name)
    data = path.read_bytes()
    assert len(data) < 1_000_000
    record = MANIFEST[name]
    assert record["file_bytes"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    readme = (models.WEIGHTS_DIR / "README.md").read_text()
    assert record["sha256"] in readme and f"{record['test_accuracy']:.4f}" in readme


@pytest.mark.parametrize(
    ("name", "factory"), [("digits_cnn", digits_cnn), ("digits_mlp", digits_mlp)]
)
def test_digits_models_reach_their_recorded_accuracy(
    name: str, factory: Callable[[], nn.Module]
) -> None:
    test = load_digits("test")
    acc = _accuracy(factory(), test.x, test.y)
    assert acc >= 0.95
    assert acc == pytest.approx(MANIFEST[name]["test_accuracy"], abs=0.004)


def test_mnist_cnn_reaches_its_recorded_accuracy() -> None:
    model, test = mnist_cnn(), load_mnist("test")
    first = test.head(2000)
    assert _accuracy(model, first.x, first.y) >= 0.98
    recorded = MANIFEST["mnist_cnn"]["test_accuracy"]
    assert recorded >= 0.985
    assert _accuracy(model, test.x, test.y) == pytest.approx(recorded, abs=0.002)


def test_missing_weights_say_how_to_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"python -m mmargin_image\.train") as info:
        mnist_cnn()
    assert "mnist_cnn.pt" in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"elsewhere\.pt.*mmargin_image\.train"):
        digits_cnn(tmp_path / "elsewhere.pt")


def test_unusable_weight_files_are_rejected(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save(DigitsCNN().state_dict(), wrong)
    with pytest.raises(ValueError, match="does not fit"):
        mnist_cnn(wrong)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(TypeError, match="got list"):
        digits_mlp(listed)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="weights_only=True"):
        digits_cnn(garbage)
    with pytest.raises(ValueError, match="model name"):
        models.build("resnet")


def test_training_writes_weights_manifest_and_readme(tmp_path: Path) -> None:
    from mmargin_image import train

    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        assert train.main(["--only", "digits_mlp", "--out", str(tmp_path), "--threads", "1"]) == 0
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(1)
    record = json.loads((tmp_path / "manifest.json").read_text())["digits_mlp"]
    assert record["test_accuracy"] >= 0.95
    assert record["sha256"] == hashlib.sha256((tmp_path / "digits_mlp.pt").read_bytes()).hexdigest()
    assert "digits_mlp" in (tmp_path / "README.md").read_text()
    assert _accuracy(digits_mlp(tmp_path / "digits_mlp.pt"), *_digits_test()) == pytest.approx(
        record["test_accuracy"], abs=1e-4
    )


def _digits_test() -> tuple[np.ndarray, np.ndarray]:
    test = load_digits("test")
    return test.x, test.y
