"""Run a task into a claimed folder, unit by unit, here or on an executor.

The engine cuts a run into units (:class:`~mmargin.engine.driver.Units`); this module
runs the units the journal does not hold yet, appends each finished one to the journal
and, once every sample is on disk, writes the final files from what is on disk: sorted
``results.jsonl``, ``adversarials.npz``, ``summary.json``, the task copy and the plugins'
artefacts. A resumed or sharded run therefore ends in the same folder as an uninterrupted
one: per-sample random streams come from the seed and the sample id, and a unit's
samples are the same whatever else runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmargin.durable.folder import Claim, write_atomic
from mmargin.durable.journal import Journal
from mmargin.results import SampleResult
from mmargin.store import RunFolderError, read_results, to_toml
from mmargin.summary import Summary, summarize
from mmargin.tasks import Task

Sink = Callable[[int, list[SampleResult]], None]
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Job:
    """What a worker needs to rebuild a run on its own: the task (overrides applied), an
    in-memory model and data (``None``: the task's factory and loader), the packages a
    factory may import from, and the host's own steps, handed in by :mod:`mmargin.api`
    (module-level functions, so a Ray worker imports them by name):
    ``rebuild(job)`` seeds and resolves the task into a live run, ``search(live, task,
    progress, units)`` runs the engine with the plugins' hooks, ``artifacts(space, out,
    results, dataset)`` lets the plugins write their files."""

    task: Task
    model: Any
    data: Any
    allow_imports: tuple[str, ...]
    rebuild: Callable[[Job], Any]
    search: Callable[[Any, Task, Progress | None, Any], list[SampleResult]]
    artifacts: Callable[[Any, Path, list[SampleResult], Any], None]


class Executor(Protocol):
    """Runs the units of a job that ``done`` does not cover, handing each finished unit to
    ``sink`` (in the calling process) and its sample count to ``progress``."""

    def run(self, job: Job, live: Any, done: set[str], sink: Sink,
            progress: Progress | None) -> None: ...  # fmt: skip


def search_units(job: Job, live: Any, select: Callable[[int, list[str]], bool],
                 sink: Sink | None, progress: Progress | None) -> list[SampleResult]:  # fmt: skip
    """Search the units of a resolved run that ``select(unit, ids)`` picks."""
    from mmargin.engine.driver import Units

    units = Units(select=select, sink=sink, step=getattr(progress, "step", None))
    return job.search(live, job.task, progress, units)


def missing(done: set[str]) -> Callable[[int, list[str]], bool]:
    """A unit selector: the units holding a sample not in ``done``."""

    def select(unit: int, ids: list[str]) -> bool:
        return not all(s in done for s in ids)

    return select


class LocalExecutor:
    """Every unit in this process, one after the other."""

    def run(self, job: Job, live: Any, done: set[str], sink: Sink,
            progress: Progress | None) -> None:  # fmt: skip
        """Search the missing units here."""
        search_units(job, live, missing(done), sink, progress)


def run_into(
    claim: Claim, job: Job, live: Any, record: Mapping[str, Any], *,
    progress: Progress | None = None, executor: Executor | None = None,
    units: str | None = None,
) -> tuple[list[SampleResult], Summary]:  # fmt: skip
    """Run what is missing from ``claim``'s folder, then write its final files; returns
    the results in sample order and the summary computed from the files on disk
    (``units``: the margin's unit label)."""
    out = claim.out
    ids = [str(s) for s in live.dataset.ids]
    _check_unique(ids)
    if claim.state == "complete":
        results = read_results(out)
        if progress is not None:
            progress(len(results))
        return results, summarize(results, job.task.epsilons, units)
    journal = Journal(out)
    done = journal.done() & set(ids)
    if progress is not None and done:
        progress(len(done))
    fresh: dict[str, SampleResult] = {}

    def sink(unit: int, results: list[SampleResult]) -> None:
        results = _notes(live, job.task, results, "repaired")
        journal.append(unit, results)
        fresh.update((r.sample, r) for r in results)

    (executor or LocalExecutor()).run(job, live, done, sink, progress)
    skipped = _notes(live, job.task, [], "skipped")  # one error record per skipped file
    journal.append(-1, skipped)
    order = ids + [r.sample for r in skipped]
    journal.finalise(order)
    on_disk = read_results(out)
    missing = len(order) - len(on_disk)
    if missing:
        raise RunFolderError(f"{out}: {missing} samples have no result after the run")
    summary = summarize(on_disk, job.task.epsilons, units)
    write_atomic(out / "summary.json",
                 json.dumps(summary.to_json(), indent=2, allow_nan=False) + "\n")  # fmt: skip
    write_atomic(out / "task.resolved.toml", to_toml(record))
    results = [fresh.get(r.sample, r) for r in on_disk]
    job.artifacts(live.space, out, results, live.dataset)
    claim.mark("complete", files=[n for n in claim.new_files() if n != "parts"])
    shutil.rmtree(out / "parts", ignore_errors=True)
    return results, summary


def _notes(live: Any, task: Task, results: list[SampleResult], part: str) -> list[SampleResult]:
    """What the loader said about the data (:mod:`mmargin.datanotes`), one part at a time:
    ``repaired`` notes go into each unit's records as it is written, ``skipped`` files
    become error records once, after every unit."""
    import dataclasses

    from mmargin.datanotes import with_data_notes

    dataset = dataclasses.replace(live.dataset, meta={part: live.dataset.meta.get(part)})
    modality = str(getattr(live.space, "modality", ""))
    return with_data_notes(results, dataset, modality, task.space.name, task.distance.name)


def _check_unique(ids: list[str]) -> None:
    seen: set[str] = set()
    for s in ids:
        if s in seen:
            raise RunFolderError(f"sample id {s!r} appears twice: a run folder needs unique ids")
        seen.add(s)
