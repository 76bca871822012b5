"""Helpers the run-folder tests share: a small fast task and a folder comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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

TIMING = ("seconds",)
"""Fields that measure time, not the search: left out of every comparison."""


def comparable(out: Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """A run folder's records (timing left out) and adversarial arrays."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for row in rows:
        for key in TIMING:
            row.pop(key, None)
    with np.load(out / "adversarials.npz") as found:
        arrays = {k: found[k] for k in found.files}
    return rows, arrays


def assert_same_folder(a: Path, b: Path) -> None:
    rows_a, adv_a = comparable(a)
    rows_b, adv_b = comparable(b)
    ids = [r["sample"] for r in rows_b]
    assert len(ids) == len(set(ids)), "duplicated samples"
    assert rows_a == rows_b
    assert sorted(adv_a) == sorted(adv_b)
    for key, value in adv_a.items():
        assert value.dtype == adv_b[key].dtype and np.array_equal(value, adv_b[key])
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
