"""The two calls :func:`mmargin.run_task` makes for a run with an output folder: claim the
folder before anything is built, then run the task into it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mmargin.durable.execute import Executor, Job, Progress, run_into
from mmargin.durable.folder import Claim, claim, task_hash
from mmargin.results import SampleResult
from mmargin.summary import Summary
from mmargin.tasks import Task


def run_record(task: Task, model: Any, data: Any) -> dict[str, Any]:
    """The task copy a run folder keeps (``task.resolved.toml``) and hashes: the resolved
    task and package versions, with in-memory models named and in-memory data hashed."""
    from mmargin.store import task_record

    record = task_record(task)
    if model is not None:
        record["model"] = {"in_memory": type(model).__qualname__}
    if data is not None:
        record["data"] = {"in_memory": _data_digest(data)}
    return record


def _data_digest(data: Any) -> str:
    import numpy as np

    from mmargin.data import Dataset

    x, y = (data.x, data.y) if isinstance(data, Dataset) else (data[0], data[1])
    digest = hashlib.sha256()
    for part in (x, y):
        array = np.ascontiguousarray(np.asarray(part))
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
    return f"{len(np.asarray(y))} samples, sha256 {digest.hexdigest()[:16]}"


def claim_for(task: Task, model: Any, data: Any, *, resume: bool, force: bool) -> Claim:
    """Check and claim ``task.out`` for this task (see :func:`mmargin.durable.folder.claim`)."""
    assert task.out is not None
    digest = task_hash(run_record(task, model, data))
    return claim(Path(task.out), digest, resume=resume, force=force)


def run_claimed(
    found: Claim, job: Job, live: Any, *, progress: Progress | None,
    executor: str | Executor, units: str | None = None,
) -> tuple[list[SampleResult], Summary]:  # fmt: skip
    """Run ``job`` (its task already resolved as ``live``) into its claimed folder
    (``units``: the margin's unit label for the summary)."""
    chosen: Executor | None = None
    if executor == "ray":
        from mmargin.durable.ray_executor import RayExecutor

        chosen = RayExecutor()
    elif not isinstance(executor, str):
        chosen = executor
    elif executor != "local":
        from mmargin.errors import InvalidTaskError

        raise InvalidTaskError("executor", f"expected 'local' or 'ray', got {executor!r}")
    try:
        record = run_record(job.task, job.model, job.data)
        return run_into(found, job, live, record, progress=progress, executor=chosen,
                        units=units)  # fmt: skip
    except BaseException:
        found.release()
        raise
