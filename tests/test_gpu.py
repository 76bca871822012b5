"""``--device cuda`` / ``cuda:N`` end to end: model, inputs and search state on the GPU, the
same statuses as on the CPU and margins within the batch-size rounding bound. Skipped
cleanly on machines without CUDA."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from run_fixtures import TASK

from mmargin.api import run_task
from mmargin.tasks import load_task

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

RTOL = 2e-2
"""CPU and GPU kernels round differently; the search amplifies it as across batch sizes
(see ``BATCH_RTOL`` in test_determinism.py)."""


class OnDevice(torch.nn.Module):
    """Wraps a model and checks that every batch it scores is already on ``device``."""

    def __init__(self, inner: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner = inner.to(device)
        self.device = device
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        same = x.device.type == self.device.type and self.device.index in (None, x.device.index)
        assert same, f"a batch reached the model on {x.device}, not {self.device}"
        self.calls += 1
        out: torch.Tensor = self.inner(x)
        return out


@pytest.mark.parametrize("strategy", ["gradient", "decision"])
@pytest.mark.parametrize("device", ["cuda", f"cuda:{max(torch.cuda.device_count() - 1, 0)}"])
def test_cuda_run_stays_on_the_device_and_matches_the_cpu(
    tmp_path: Path, device: str, strategy: str
) -> None:
    from mmargin_image.models import digits_mlp

    path = tmp_path / "task.toml"
    path.write_text(TASK)
    task = dataclasses.replace(load_task(path), samples=16, strategy=strategy)
    cpu = run_task(task, model=digits_mlp(), device="cpu").results
    model = OnDevice(digits_mlp(), torch.device(device))
    gpu = run_task(task, model=model, device=device, out=tmp_path / "gpu").results
    assert model.calls > 0
    for a, b in zip(cpu, gpu, strict=True):
        assert a.status == b.status
        if math.isfinite(a.margin):
            assert math.isclose(a.margin, b.margin, rel_tol=RTOL, abs_tol=1e-9)
