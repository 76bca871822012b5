"""The benchmark's model zoo: MNIST and digits models the search is measured on.

Two sets, kept apart on purpose (see ``bench/zoo/README.md``):

- **tuning**: the models the engine's defaults may be developed against — the shipped
  MNIST CNN and digits MLP (``mmargin_image.models``) and three adversarially trained CNNs:
  one of the same LeNet shape trained for 8 epochs (``tune_cnn_fgsm``) and one with
  average pooling trained for 2 (``tune_cnn_fgsm_short``), both FGSM (L∞), and a wider
  max-pool CNN trained with L2 PGD (``tune_cnn_pgd``: another training family, so an L2
  rule is not fitted to the FGSM-trained pair), and a pool+stride CNN whose FGSM training
  broke down (``tune_cnn_fgsm_co``: catastrophic overfitting, clean accuracy kept but
  almost none under PGD at its ε, like the evaluation set's FGSM CNN and unlike the two
  FGSM tuning CNNs, so the search on a gradient-masked model is tuned on a model of its
  own); and, so that batch-norm CNNs and MNIST
  MLPs have a tuning stand-in of their own, a LeNet-shaped CNN with batch norm
  (``tune_cnn_bn``) and an MLP 784-300-100-10 (``tune_mlp``); and a second digits MLP
  (``tune_digits_mlp``, 64-48-24-10) so the exact (MILP) ratios have more than one tuning
  network;
- **evaluation**: models no default was ever tuned on, with other architectures, seeds and
  training — a CNN with batch norm, a plain MLP, an FGSM-with-random-start L∞ trained
  all-convolutional CNN, and a digits MLP for the exact (MILP) ratios.

Every zoo model is trained by :mod:`zoo_train` (deterministic, CPU) and its state_dict is
committed under ``bench/zoo/``; :func:`load` reads it with ``weights_only=True``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


class BnCNN(nn.Module):
    """conv 1→32 (3×3) BN ReLU pool, conv 32→64 (3×3) BN ReLU pool, 1600→128 ReLU, 128→10."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` of a ``(N, 1, 28, 28)`` batch."""
        out: torch.Tensor = self.head(self.features(x))
        return out


class _Body(nn.Module):
    """A network that is one ``nn.Sequential`` named ``body`` (the weights' key prefix)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` of a ``(N, 1, 28, 28)`` batch."""
        out: torch.Tensor = self.body(x)
        return out


class StridedCNN(_Body):
    """All-convolutional: 1→16 (3×3), 16→32 (3×3, stride 2), 32→32 (3×3, stride 2), each
    ReLU, then 1568→100 ReLU, 100→10 (no pooling)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
        )  # fmt: skip


class AvgPoolCNN(_Body):
    """conv 1→16 (5×5) ReLU avg-pool, conv 16→32 (5×5) ReLU avg-pool, 512→64 ReLU, 64→10."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
        )  # fmt: skip


class BnLeNet(_Body):
    """conv 1→16 (5×5) BN ReLU max-pool, conv 16→32 (5×5) BN ReLU max-pool, 512→100 ReLU,
    100→10: a batch-norm CNN of another shape than the evaluation set's :class:`BnCNN`."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 100), nn.ReLU(), nn.Linear(100, 10),
        )  # fmt: skip


class WideMaxPoolCNN(_Body):
    """conv 1→32 (5×5) ReLU max-pool, conv 32→64 (5×5) ReLU max-pool, 1024→128 ReLU,
    128→10: a wider max-pool CNN without batch norm, of another shape than every
    evaluation model (the L2 PGD-trained tuning model's architecture)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip


class PoolStrideCNN(_Body):
    """conv 1→32 (5×5, padding 2) ReLU max-pool, conv 32→64 (3×3, stride 2, padding 1)
    ReLU, 3136→128 ReLU, 128→10: one pooled and one strided downsampling, of another shape
    than every evaluation model (the catastrophically overfitted FGSM tuning model's)."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip


def _mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])  # no ReLU after the logits


def _lenet() -> nn.Module:
    from mmargin_image.models import MnistCNN

    return MnistCNN()


@dataclass(frozen=True)
class Member:
    """One zoo model: how it is built and trained and which set it belongs to.

    ``training`` is ``standard``, ``fgsm-rs`` (FGSM with a random start, Wong, Rice and
    Kolter 2020, L∞) or ``pgd-l2`` (Madry et al. 2018 PGD under L2); ``eps`` its radius.
    """

    name: str
    role: str  # "tuning" or "evaluation"
    data: str  # "mnist" or "digits"
    build: Callable[[], nn.Module]
    architecture: str
    training: str = "standard"
    eps: float = 0.0
    epochs: int = 5
    seed: int = 0
    lr: float = 1e-3


MEMBERS: dict[str, Member] = {
    m.name: m
    for m in (
        Member(
            "tune_cnn_fgsm", "tuning", "mnist", _lenet, "LeNet (shipped MnistCNN shape)",
            training="fgsm-rs", eps=0.3, epochs=8, seed=10,
        ),
        Member(
            "tune_cnn_fgsm_short", "tuning", "mnist", AvgPoolCNN, "CNN with average pooling",
            training="fgsm-rs", eps=0.3, epochs=2, seed=11,
        ),
        Member(
            "tune_cnn_fgsm_co", "tuning", "mnist", PoolStrideCNN, "pool+stride CNN",
            # the recipe of the FGSM tuning CNNs (step 1.25 ε, ε ramp); at 3 epochs on this
            # shape it overfits catastrophically (clean 0.986, PGD-20 at 0.3: 0.027)
            training="fgsm-rs", eps=0.3, epochs=3, seed=15,
        ),
        Member(
            # one epoch: 5-step PGD costs ~30 min of a shared 2-core machine per epoch; ε
            # ramps up over that epoch (so the last batches train at ε = 2)
            "tune_cnn_pgd", "tuning", "mnist", WideMaxPoolCNN, "wide max-pool CNN",
            training="pgd-l2", eps=2.0, epochs=1, seed=14,
        ),
        Member(
            "tune_cnn_bn", "tuning", "mnist", BnLeNet, "LeNet-shaped CNN with batch norm",
            epochs=2, seed=12,
        ),
        Member(
            "tune_mlp", "tuning", "mnist", lambda: _mlp(784, 300, 100, 10),
            "MLP 784-300-100-10", epochs=4, seed=13,
        ),
        Member(
            "tune_digits_mlp", "tuning", "digits", lambda: _mlp(64, 48, 24, 10),
            "MLP 64-48-24-10", epochs=80, seed=20,
        ),
        Member(
            "eval_cnn_bn", "evaluation", "mnist", BnCNN, "CNN with batch norm", epochs=4,
            seed=1,
        ),
        Member(
            "eval_mlp", "evaluation", "mnist", lambda: _mlp(784, 256, 256, 10),
            "MLP 784-256-256-10", epochs=6, seed=2,
        ),
        Member(
            "eval_cnn_fgsm", "evaluation", "mnist", StridedCNN, "strided all-conv CNN",
            training="fgsm-rs", eps=0.3, epochs=3, seed=3,
        ),
        Member(
            "eval_digits_mlp", "evaluation", "digits", lambda: _mlp(64, 40, 40, 10),
            "MLP 64-40-40-10", epochs=80, seed=5,
        ),
    )
}  # fmt: skip
"""The trained zoo; the shipped ``mnist_cnn`` and ``digits_mlp`` complete the tuning set."""

SHIPPED_TUNING = ("mnist_cnn", "digits_mlp")
"""Shipped models (``mmargin_image.models``) that belong to the tuning set."""


def names(role: str | None = None) -> list[str]:
    """Model names usable by the benchmarks, of one ``role`` (tuning / evaluation) or all."""
    every = [*SHIPPED_TUNING, *MEMBERS]
    if role is None:
        return every
    if role not in ("tuning", "evaluation"):
        raise ValueError(f"role must be tuning or evaluation, got {role!r}")
    return [n for n in every if (MEMBERS[n].role if n in MEMBERS else "tuning") == role]


def weights_path(name: str) -> Path:
    """Where zoo model ``name``'s committed state_dict lives."""
    return ZOO_DIR / f"{name}.pt"


def manifest() -> dict[str, dict[str, object]]:
    """``bench/zoo/manifest.json``: what :mod:`zoo_train` recorded for every member."""
    path = ZOO_DIR / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def load(name: str) -> nn.Module:
    """The trained model ``name`` in eval mode with frozen parameters: a zoo member (from
    ``bench/zoo/<name>.pt``, read with ``weights_only=True``) or a shipped tuning model."""
    if name in SHIPPED_TUNING:
        from mmargin_image.models import load_weights

        model = load_weights(name)
    elif name in MEMBERS:
        path = weights_path(name)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `python bench/zoo_train.py`")
        model = MEMBERS[name].build()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    else:
        raise ValueError(f"unknown zoo model {name!r}; one of {', '.join(names())}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
