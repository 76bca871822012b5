"""Reference image classifiers and factories that load their committed, trained weights.

The architectures are deliberately small so margins can be searched (and, for the MLP,
verified exactly) on a CPU. All of them take ``(N, C, H, W)`` float32 inputs in ``[0, 1]``
and return raw logits ``(N, 10)``. The factories return the trained model in eval mode,
loading ``mmargin_image/weights/<name>.pt`` unless another state_dict file is given;
rebuild those files with ``python -m mmargin_image.train``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "MODEL_NAMES",
    "WEIGHTS_DIR",
    "DigitsCNN",
    "MnistCNN",
    "build",
    "digits_cnn",
    "digits_mlp",
    "digits_mlp_module",
    "load_weights",
    "mnist_cnn",
    "weights_path",
]

#: Where the committed state_dicts live (inside the installed package).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class MnistCNN(nn.Module):
    """A small LeNet-style CNN for 28x28 grayscale digits (~65k parameters).

    conv 1->16 (5x5), ReLU, max-pool 2, conv 16->32 (5x5), ReLU, max-pool 2, flatten (512),
    linear 512->100, ReLU, linear 100->10 (logits).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` of a ``(N, 1, 28, 28)`` batch."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


class DigitsCNN(nn.Module):
    """A tiny CNN for scikit-learn's 8x8 digits (~17k parameters).

    conv 1->16 (3x3, padding 1), ReLU, max-pool 2, flatten (256), linear 256->64, ReLU,
    linear 64->10 (logits).
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, 10)`` of a ``(N, 1, 8, 8)`` batch."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


def digits_mlp_module() -> nn.Sequential:
    """An untrained 64-32-32-10 ReLU MLP for 8x8 digits, as a plain ``nn.Sequential``.

    Kept to ``Flatten, Linear, ReLU, Linear, ReLU, Linear`` on purpose: the exact (MILP)
    verifier parses exactly this structure, so do not wrap or reorder it.
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )


#: Name -> constructor of an untrained model; the name is also the weights file stem.
_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "mnist_cnn": MnistCNN,
    "digits_cnn": DigitsCNN,
    "digits_mlp": digits_mlp_module,
}
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build(name: str) -> nn.Module:
    """A freshly initialised (untrained) model by name (one of :data:`MODEL_NAMES`)."""
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise ValueError(f"model name must be one of {MODEL_NAMES}, got {name!r}") from None


def weights_path(name: str) -> Path:
    """Where the committed weights of model ``name`` are expected."""
    if name not in _BUILDERS:
        raise ValueError(f"model name must be one of {MODEL_NAMES}, got {name!r}")
    return WEIGHTS_DIR / f"{name}.pt"


def load_weights(name: str, weights: str | Path | None = None) -> nn.Module:
    """Model ``name`` with the state_dict from ``weights`` (default: the committed file).

    The file is read with ``torch.load(..., map_location="cpu", weights_only=True)``, so it
    cannot run code. The model is returned in eval mode. A missing file raises
    ``FileNotFoundError`` saying how to rebuild it; a file that does not match the
    architecture raises ``ValueError``.
    """
    model = build(name)
    path = weights_path(name) if weights is None else Path(weights)
    if not path.is_file():
        hint = (
            f"rebuild it with `python -m mmargin_image.train --only {name}`"
            if weights is None
            else f"pass an existing state_dict file, or weights=None for the committed one "
            f"(rebuild that with `python -m mmargin_image.train --only {name}`)"
        )
        raise FileNotFoundError(
            f"{name}: expected a weights file (a torch state_dict) at {str(path)!r}, "
            f"got no such file; {hint}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickle, disallowed globals
        raise ValueError(
            f"{name}: expected {str(path)!r} to be a torch state_dict loadable with "
            f"weights_only=True, got {type(e).__name__}: {e}"
        ) from e
    if not isinstance(state, dict):
        raise TypeError(
            f"{name}: expected {str(path)!r} to hold a state_dict (dict of tensors), "
            f"got {type(state).__name__}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{name}: the state_dict in {str(path)!r} does not fit the architecture: {e}"
        ) from e
    setattr(model, "class_names", DIGIT_NAMES)  # noqa: B010 - matched against folder names
    return model.eval()


DIGIT_NAMES = [str(d) for d in range(10)]
"""The class names of every model here (label index = digit)."""


def mnist_cnn(weights: str | Path | None = None) -> MnistCNN:
    """The trained :class:`MnistCNN` (eval mode); ``weights`` overrides the committed file."""
    model = load_weights("mnist_cnn", weights)
    assert isinstance(model, MnistCNN)
    return model


def digits_cnn(weights: str | Path | None = None) -> DigitsCNN:
    """The trained :class:`DigitsCNN` (eval mode); ``weights`` overrides the committed file."""
    model = load_weights("digits_cnn", weights)
    assert isinstance(model, DigitsCNN)
    return model


def digits_mlp(weights: str | Path | None = None) -> nn.Sequential:
    """The trained :func:`digits_mlp_module` (eval mode); ``weights`` overrides the default."""
    model = load_weights("digits_mlp", weights)
    assert isinstance(model, nn.Sequential)
    return model
