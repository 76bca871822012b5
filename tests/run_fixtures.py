"""Helpers the run-folder tests share: a small fast task and a folder comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmargin.durable.compare import differences

TASK = """
[task]
name = "kill-resume"
samples = 48
batch_size = 4
seed = 3
[model]
factory = "digits_mlp"
[data]
loader = "digits"
split = "test"
[space]
name = "image"
[distance]
name = "l2"
[search]
budget = 40
exact = "never"
"""


def assert_same_folder(a: Path, b: Path) -> None:
    """The two run folders hold the same run (timing aside), and ``b`` is finished."""
    assert differences(a, b) == []
    assert not (b / "parts").exists()


class KillOnce:
    """Builds a torch module that wraps a model and, in the first process other than
    ``driver`` to reach its ``after``-th forward call while ``marker`` exists, removes
    the marker and kills its own process with SIGKILL: a worker lost mid-shard."""

    @staticmethod
    def wrap(inner: Any, marker: Path, driver: int, after: int = 3) -> Any:
        import os
        import signal

        import torch

        class _Killer(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner
                self.calls = 0

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                self.calls += 1
                if os.getpid() != driver and self.calls >= after:
                    try:
                        marker.unlink()
                    except FileNotFoundError:
                        pass
                    else:
                        os.kill(os.getpid(), signal.SIGKILL)
                out: torch.Tensor = self.inner(x)
                return out

        return _Killer()
