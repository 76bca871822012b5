"""Run the batches of a task on Ray workers (``pip install 'mmargin[ray]'``).

A thin layer over "run these units, hand back their records": the run's units (see
:class:`~mmargin.engine.driver.Units`) are cut into shards of consecutive units; each
shard is one Ray task that rebuilds the run in its worker (once per worker process),
searches only its units and returns their records and adversarials; the driver appends
every returned unit to the run's journal, so the folder is merged in sample order at the
end exactly as after a local run. A worker killed mid-shard makes Ray run that shard
again (``max_retries``); a killed driver is resumed like any run (``--resume``).

Without an address a local Ray instance is started for the run and shut down after it;
with one (``ray start --head`` on one machine, ``--address HOST:6379`` on the others) the
run joins that cluster, whose workers must see the same task, data and plugins.
"""

from __future__ import annotations

import itertools
import math
import uuid
from dataclasses import dataclass
from typing import Any

from mmargin.durable.execute import Job, Progress, Sink, search_units
from mmargin.errors import RunError
from mmargin.results import SampleResult

_LIVE: dict[str, Any] = {}
"""Runs already rebuilt in this worker process, by run token."""


def run_shard(token: str, job: Job, first: int, stop: int,
              done: frozenset[str]) -> list[tuple[int, list[SampleResult]]]:  # fmt: skip
    """Search units ``first .. stop-1`` of ``job`` (skipping units already ``done``) in
    this process and return them: what a Ray task runs."""
    live = _LIVE.get(token)
    if live is None:
        live = job.rebuild(job)
        _LIVE.clear()
        _LIVE[token] = live
    found: list[tuple[int, list[SampleResult]]] = []

    def select(unit: int, ids: list[str]) -> bool:
        return first <= unit < stop and not all(s in done for s in ids)

    search_units(job, live, select, lambda unit, rs: found.append((unit, rs)), None)
    return found


def shards(samples: int, batch_size: int, per_shard: int) -> list[tuple[int, int]]:
    """Unit ranges ``[first, stop)`` covering every unit a run of ``samples`` samples can
    have (unit 0, then at most one unit per sample), ``per_shard`` batches each."""
    batches = 1 + math.ceil(samples / batch_size)
    edges = [*range(0, batches, per_shard), samples + 2]
    return list(itertools.pairwise(edges))


@dataclass
class RayExecutor:
    """Shards a run's batches over ``workers`` Ray workers (default 2), each reserving
    ``gpus_per_worker`` GPUs; ``address`` joins a running cluster (default: a local one,
    started and shut down by the run). ``batches_per_shard`` (default: enough for about
    four shards per worker) sets how much a re-run after a lost worker repeats."""

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    batches_per_shard: int | None = None
    max_retries: int = 3

    def run(self, job: Job, live: Any, done: set[str], sink: Sink,
            progress: Progress | None) -> None:  # fmt: skip
        """Run the units not ``done`` on Ray; each finished shard's units go to ``sink``."""
        try:
            import ray
        except ImportError:
            raise RunError("the Ray executor needs Ray: pip install 'mmargin[ray]'") from None
        workers = self.workers or 2
        if workers < 1:
            raise RunError(f"--workers: expected a positive number, got {workers}")
        started = not ray.is_initialized()
        if started:
            options: dict[str, Any] = {"address": self.address, "include_dashboard": False,
                                       "logging_level": "ERROR"}  # fmt: skip
            if self.address is None:
                options["num_cpus"] = workers
            ray.init(**options)
        try:
            self._run(ray, job, len(live.dataset), done, sink, progress, workers)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, job: Job, samples: int, done: set[str], sink: Sink,
             progress: Progress | None, workers: int) -> None:  # fmt: skip
        batch = job.task.batch_size
        per_shard = self.batches_per_shard or max(1, math.ceil(samples / batch / (4 * workers)))
        remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker,
                            max_retries=self.max_retries)(run_shard)  # fmt: skip
        token, job_ref, done_ref = uuid.uuid4().hex, ray.put(job), ray.put(frozenset(done))
        waiting = shards(samples, batch, per_shard)
        running: list[Any] = []
        while waiting or running:
            while waiting and len(running) < workers:
                first, stop = waiting.pop(0)
                running.append(remote.remote(token, job_ref, first, stop, done_ref))
            ready, running = ray.wait(running, num_returns=1)
            for unit, results in ray.get(ready[0]):
                sink(unit, results)
                if progress is not None:
                    progress(len(results))
