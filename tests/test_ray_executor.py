"""The Ray executor: 1 and 2 workers give the local run's folder bit for bit, and so does a
run whose Ray worker process is killed mid-shard (Ray re-runs the shard)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import run_fixtures
from run_fixtures import TASK, KillOnce, assert_same_folder

from mmargin.api import run_task
from mmargin.durable.ray_executor import RayExecutor, shards
from mmargin.tasks import Task, load_task

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (mmargin[ray])")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.cloudpickle.register_pickle_by_value(run_fixtures)  # the test model, by value
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _task(tmp_path: Path) -> Task:
    path = tmp_path / "task.toml"
    path.write_text(TASK)
    return dataclasses.replace(load_task(path), samples=24)


def test_shards_cover_every_unit_once() -> None:
    for samples, batch, per in ((24, 4, 1), (24, 4, 3), (1, 250, 1), (10, 1, 4)):
        ranges = shards(samples, batch, per)
        covered = [u for first, stop in ranges for u in range(first, stop)]
        assert covered == list(range(samples + 2))  # unit 0, then at most one per sample


@pytest.mark.slow
def test_one_and_two_workers_give_the_local_folder(tmp_path: Path, local_ray: None) -> None:
    task = _task(tmp_path)
    run_task(task, out=tmp_path / "local")
    for workers in (1, 2):
        out = tmp_path / f"ray-{workers}"
        run_task(task, out=out, executor=RayExecutor(workers=workers, batches_per_shard=2))
        assert_same_folder(tmp_path / "local", out)


@pytest.mark.slow
def test_a_killed_worker_still_gives_the_local_folder(tmp_path: Path, local_ray: None) -> None:
    from mmargin_image.models import digits_mlp

    task = _task(tmp_path)
    model = digits_mlp()
    run_task(task, model=model, out=tmp_path / "local")
    marker = tmp_path / "kill-one-worker"
    marker.write_text("")
    killer = KillOnce.wrap(model, marker, driver=os.getpid())
    out = tmp_path / "ray-killed"
    run_task(task, model=killer, out=out, executor=RayExecutor(workers=2, batches_per_shard=2),
             force=False)  # fmt: skip
    assert not marker.exists(), "no worker was killed"
    assert_same_folder(tmp_path / "local", out)
