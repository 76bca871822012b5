"""The benchmark's model zoo: committed weights load safely, match their manifest, the
training script is deterministic and adversarial training measurably took."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo
import zoo_train


def test_sets_are_disjoint_and_cover_the_zoo() -> None:
    tuning, evaluation = set(zoo.names("tuning")), set(zoo.names("evaluation"))
    assert tuning.isdisjoint(evaluation)
    assert tuning | evaluation == set(zoo.names())
    assert {"mnist_cnn", "digits_mlp", "tune_cnn_fgsm"} <= tuning
    # the tuning set has robust models of both training families (L∞ FGSM and L2 PGD)
    tuned = {zoo.MEMBERS[n].training for n in tuning if n in zoo.MEMBERS}
    assert {"fgsm-rs", "pgd-l2"} <= tuned
    # the evaluation set has an adversarially trained model and a batch-norm model
    trainings = {zoo.MEMBERS[n].training for n in evaluation}
    assert trainings & {"fgsm-rs", "pgd-l2"}
    assert any(
        isinstance(m, torch.nn.BatchNorm2d)
        for n in evaluation
        for m in zoo.MEMBERS[n].build().modules()
    )
    with pytest.raises(ValueError, match="role"):
        zoo.names("test")


@pytest.mark.parametrize("name", sorted(zoo.MEMBERS))
def test_committed_weights_match_the_manifest(name: str) -> None:
    record = zoo.manifest()[name]
    path = zoo.weights_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    model = zoo.load(name)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    _, _, xte, yte = zoo_train._data(zoo.MEMBERS[name].data)
    assert zoo_train.accuracy(model, xte, yte) == pytest.approx(record["test_accuracy"], abs=2e-3)


def test_unknown_model_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown zoo model 'nope'"):
        zoo.load("nope")


@pytest.mark.parametrize("training,eps", [("standard", 0.0), ("fgsm-rs", 0.1), ("pgd-l2", 0.5)])
def test_training_is_deterministic(training: str, eps: float) -> None:
    member = dataclasses.replace(
        zoo.MEMBERS["eval_digits_mlp"], training=training, eps=eps, epochs=1
    )
    first, _ = zoo_train.train(member, log=lambda _: None)
    second, _ = zoo_train.train(member, log=lambda _: None)
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_adversarial_training_took() -> None:
    """Under the same PGD (L∞ 0.2, 200 test images) the FGSM-RS trained LeNet keeps most of
    its accuracy and the standard LeNet of the same shape loses most of its own."""
    _, _, xte, yte = zoo_train._data("mnist")
    x, y = xte[:200], yte[:200]
    robust = zoo_train.robust_accuracy(zoo.load("tune_cnn_fgsm"), x, y, "linf", 0.2)
    plain = zoo_train.robust_accuracy(zoo.load("mnist_cnn"), x, y, "linf", 0.2)
    assert robust > 0.8 > 0.2 > plain


def test_overfitted_fgsm_model_broke_down() -> None:
    """``tune_cnn_fgsm_co``'s FGSM training broke down (catastrophic overfitting): accurate
    on clean images, yet the PGD at its training radius (L∞ 0.3, 200 test images) finds
    adversarials for most of them, where the FGSM-RS trained LeNet keeps most."""
    _, _, xte, yte = zoo_train._data("mnist")
    x, y = xte[:200], yte[:200]
    model = zoo.load("tune_cnn_fgsm_co")
    assert zoo_train.accuracy(model, x, y) > 0.95
    assert zoo_train.robust_accuracy(model, x, y, "linf", 0.3) < 0.3
    assert zoo_train.robust_accuracy(zoo.load("tune_cnn_fgsm"), x, y, "linf", 0.3) > 0.5
