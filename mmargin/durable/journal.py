"""A run's journal on disk: finished units appended as they come, final files at the end.

Each finished unit (a batch of samples, see :class:`~mmargin.engine.driver.Units`) is
written in two steps: its adversarials go to ``parts/unit-<n>.npz`` (written whole, then
renamed into place), then its records are appended to ``results.jsonl`` in one write,
flushed and fsynced. A kill at any instant loses at most the unit in flight; a torn last
line (the kill hit mid-write) is never read and is cut off before the next append. A
sample already in the journal is never appended twice, so re-running a partly written
unit after a resume adds only what is missing.

:meth:`Journal.finalise` rewrites ``results.jsonl`` in sample order and assembles
``adversarials.npz`` from the parts, both atomically.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.durable.folder import write_atomic
from mmargin.results import SampleResult, adversarial_arrays
from mmargin.store import RunFolderError


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The records of a ``results.jsonl`` in file order; a last line without its newline
    (torn by a kill mid-write) is skipped."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    rows = []
    for number, line in enumerate(whole.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            raise RunFolderError(f"{path}: line {number} is not a JSON record") from None
    return rows


class Journal:
    """``results.jsonl`` and ``parts/`` of one run folder, opened for appending."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "results.jsonl"
        self.parts = out / "parts"
        self.rows = {str(r["sample"]): r for r in read_rows(self.path)}
        self._cut_torn_tail()

    def _cut_torn_tail(self) -> None:
        if not self.path.is_file():
            return
        size = self.path.stat().st_size
        with open(self.path, "rb+") as fh:
            data = fh.read()
            keep = data.rfind(b"\n") + 1
            if keep < size:
                fh.truncate(keep)
                fh.flush()
                os.fsync(fh.fileno())

    def done(self) -> set[str]:
        """Ids of the samples already on disk."""
        return set(self.rows)

    def append(self, unit: int, results: Sequence[SampleResult]) -> None:
        """Write one finished unit: adversarials first, then its new records."""
        arrays = adversarial_arrays(results)
        if arrays:
            self.parts.mkdir(exist_ok=True)
            write_atomic(self.parts / f"unit-{unit:06d}.npz", _npz(arrays, compressed=False))
        new = [r for r in results if r.sample not in self.rows]
        if not new:
            return
        rows = [r.to_json() for r in new]
        text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
        with open(self.path, "ab") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        self.rows.update((str(row["sample"]), row) for row in rows)

    def adversarials(self) -> dict[str, np.ndarray]:
        """Every adversarial stored in the parts, by sample id."""
        found: dict[str, np.ndarray] = {}
        for part in sorted(self.parts.glob("unit-*.npz")) if self.parts.is_dir() else []:
            with np.load(part, allow_pickle=False) as arrays:
                found.update((key, arrays[key]) for key in arrays.files)
        return found

    def finalise(self, order: Iterable[str]) -> None:
        """Rewrite ``results.jsonl`` in sample order (the ids ``order``) and assemble
        ``adversarials.npz`` (removed when no sample flipped)."""
        rows = [self.rows[s] for s in order if s in self.rows]
        text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
        parts = self.adversarials()
        flipped = [str(r["sample"]) for r in rows if r.get("status") == "flipped"]
        arrays = {s: parts[s] for s in flipped if s in parts}
        target = self.out / "adversarials.npz"
        if arrays:
            write_atomic(target, _npz(arrays, compressed=True))
        elif target.exists():
            target.unlink()
        write_atomic(self.path, text)


def _npz(arrays: dict[str, np.ndarray], *, compressed: bool) -> bytes:
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()
