"""The output folder of a run: checked and claimed before any search starts.

A run folder carries ``run.json``: the hash of the task it holds (the resolved task and
the versions of the packages that shape a result), whether the run is ``running`` or
``complete``, and the files it wrote. :func:`claim` decides, before a model is even built,
whether a run may write into a folder:

- a missing folder is created; a path that is a file, or a folder that cannot be written,
  is refused;
- an empty folder is claimed for a fresh run;
- a folder holding the same task continues with ``resume`` (a finished one has nothing
  left to do) and is refused without it, so a finished run is never silently overwritten;
- a folder holding a different task, an older run or other files is refused unless
  ``force``, which removes the previous run's files first (no stale ``adversarials.npz``
  beside new results).

Every refusal is a :class:`~mmargin.store.RunFolderError`: one line, exit status 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmargin.store import RunFolderError

MARKER = "run.json"
FORMAT = 1
RUN_FILES = ("results.jsonl", "summary.json", "adversarials.npz", "task.resolved.toml",
             "parts", MARKER)  # fmt: skip
"""What every run writes (plugins' artefacts are listed in the marker's ``files``)."""


def task_hash(record: Mapping[str, Any]) -> str:
    """A hash of a task record (:func:`mmargin.store.task_record`), its output folder left
    out: the same task and package versions give the same hash wherever the run writes."""
    clean = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in record.items()}
    if isinstance(clean.get("task"), dict):
        clean["task"] = {k: v for k, v in clean["task"].items() if k != "out"}
    text = json.dumps(clean, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Claim:
    """A folder a run may write into: ``state`` is ``fresh``, ``resume`` (an unfinished
    run of the same task to continue) or ``complete`` (a finished one: nothing to run)."""

    out: Path
    digest: str
    state: str
    before: frozenset[str]

    def mark(self, state: str, files: list[str] | None = None) -> None:
        """Record the run's state (``running`` / ``complete``) in ``run.json``, atomically."""
        body: dict[str, Any] = {"format": FORMAT, "task_hash": self.digest, "state": state,
                                "before": sorted(self.before)}  # fmt: skip
        if files is not None:
            body["files"] = sorted(files)
        write_atomic(self.out / MARKER, json.dumps(body, indent=1) + "\n")

    def release(self) -> None:
        """Give a fresh claim back when its run stopped before writing a result: remove
        ``run.json`` and the parts, and the folder itself if the claim left it empty."""
        if self.state != "fresh" or (self.out / "results.jsonl").exists():
            return
        shutil.rmtree(self.out / "parts", ignore_errors=True)
        (self.out / MARKER).unlink(missing_ok=True)
        if not self.before and not any(self.out.iterdir()):
            self.out.rmdir()

    def new_files(self) -> list[str]:
        """Top-level entries this run added to the folder."""
        return sorted(p.name for p in self.out.iterdir() if p.name not in self.before)


def claim(out: Path, digest: str, *, resume: bool = False, force: bool = False) -> Claim:
    """Check ``out`` for a run of the task hashed ``digest`` and claim it (see the module
    docstring); raises :class:`RunFolderError` with a one-line reason when refused."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"output folder {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".mmargin-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(
            f"output folder {out}: cannot write there ({exc.strerror or exc})"
        ) from None
    marker = _marker(out)
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return _fresh(out, digest, entries)
    if marker is None:
        if not force:
            what = "an older run" if "results.jsonl" in entries else "other files"
            raise RunFolderError(
                f"output folder {out} is not empty (it holds {what}); "
                "use --force to write over it or choose another --out"
            )
        return _fresh(out, digest, _clear(out, marker))
    if marker.get("task_hash") != digest:
        if not force:
            raise RunFolderError(
                f"output folder {out} holds a different task (hash {marker.get('task_hash')}, "
                f"this one {digest}); use --force to replace it or choose another --out"
            )  # fmt: skip
        return _fresh(out, digest, _clear(out, marker))
    if force:
        return _fresh(out, digest, _clear(out, marker))
    finished = marker.get("state") == "complete"
    if not resume:
        what = "a finished run" if finished else "an unfinished run"
        hint = "nothing is left to run" if finished else "--resume continues it"
        raise RunFolderError(f"output folder {out} holds {what} of this task ({hint}; "
                             "--force starts over)")  # fmt: skip
    before = frozenset(marker.get("before", ()))
    return Claim(out, digest, "complete" if finished else "resume", before)


def _fresh(out: Path, digest: str, entries: set[str]) -> Claim:
    found = Claim(out, digest, "fresh", frozenset(entries))
    body = {"format": FORMAT, "task_hash": digest, "state": "running",
            "before": sorted(entries)}  # fmt: skip
    write_atomic(out / MARKER, json.dumps(body, indent=1) + "\n")
    return found


def _marker(out: Path) -> dict[str, Any] | None:
    path = out / MARKER
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _clear(out: Path, marker: Mapping[str, Any] | None) -> set[str]:
    """Remove a previous run's files; what is left in the folder."""
    names = set(RUN_FILES) | set((marker or {}).get("files", ()))
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return {p.name for p in out.iterdir()}


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write a file so that a reader (or a kill) sees the old version or the new one,
    never half of one: a temporary file, flushed to disk, renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    data = text.encode("utf-8") if isinstance(text, str) else text
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
