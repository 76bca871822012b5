"""Determinism: resuming at any point gives the uninterrupted run's folder to the bit; other
batch sizes give the same statuses and margins within the measured rounding bound."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from run_fixtures import TASK, assert_same_folder  # the tests folder is on sys.path

from mmargin.api import run_task
from mmargin.tasks import Task, load_task

BATCH_RTOL = 2e-2
"""Relative margin difference allowed between batch sizes 1, 16 and 250. Batched matrix
products round differently for different batch sizes, and the iterative search amplifies
those last-bit differences through its flip / no-flip decisions: measured worst case
1.1e-2 over 100 digits samples (23 of 100 margins bit-equal); statuses always equal."""


class Stop(Exception):
    """Stands in for a kill after a given number of finished batches."""


class StopAfter:
    """A progress callback that raises :class:`Stop` on its ``calls``-th call (the engine
    calls it once per finished batch, after the batch is on disk; a resumed run first
    reports the samples already done)."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    def __call__(self, samples: int) -> None:
        self.calls -= 1
        if self.calls == 0:
            raise Stop


def _task(tmp_path: Path, **changes: object) -> Task:
    path = tmp_path / "task.toml"
    path.write_text(TASK)
    return dataclasses.replace(load_task(path), **changes)  # type: ignore[arg-type]


def test_resume_points_give_the_same_folder_bit_for_bit(tmp_path: Path) -> None:
    task = _task(tmp_path, samples=24)
    whole = tmp_path / "whole"
    run_task(task, out=whole)
    for stop_after in (1, 3, 5):
        out = tmp_path / f"stopped-{stop_after}"
        with pytest.raises(Stop):
            run_task(task, out=out, progress=StopAfter(stop_after))
        assert _lines(out) == 4 * stop_after  # exactly the finished batches (batch_size 4)
        with pytest.raises(Stop):  # stopped again, one batch into the resume
            run_task(task, out=out, resume=True, progress=StopAfter(2))
        assert _lines(out) == 4 * stop_after + 4
        run_task(task, out=out, resume=True)
        assert_same_folder(whole, out)


def _lines(out: Path) -> int:
    return (out / "results.jsonl").read_text().count("\n")


def test_batch_sizes_give_the_same_statuses_and_margins_within_rounding(tmp_path: Path) -> None:
    runs = {b: run_task(_task(tmp_path, batch_size=b, samples=48)).results for b in (1, 16, 250)}
    for b in (16, 250):
        for one, other in zip(runs[1], runs[b], strict=True):
            assert one.sample == other.sample and one.status == other.status
            if math.isfinite(one.margin):
                assert math.isclose(one.margin, other.margin, rel_tol=BATCH_RTOL, abs_tol=1e-9)
