"""What a loader skipped or repaired, carried into the results and the CLI summary.

Loaders say it in their dataset's ``meta`` (a documented protocol, any plugin may use it):

* ``meta["skipped"]``: files not loaded, each ``{"file": id, "reason": str, "label": int}``
  (``label`` optional; a ``{file: reason}`` table is read too). Each becomes an ``error``
  record in ``results.jsonl`` (``message`` = the reason, ``extras["data_skipped"] =
  True``), so it counts in the summary's errors and is never lost in a plugin's file.
* ``meta["repaired"]``: ``{sample id: [note, ...]}`` for samples loaded after a change
  (resampled, mixed down, clipped, cropped, padded...). The notes go into that sample's
  ``extras["data_notes"]``.

:func:`with_data_notes` applies both to a run's results; :func:`describe` is the line
the CLI prints under its summary.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mmargin.data import Dataset
from mmargin.results import SampleResult, Status, result_record


def skipped_files(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``meta["skipped"]`` as a list of ``{"file", "reason", "label"?}``."""
    raw = meta.get("skipped") or []
    if isinstance(raw, Mapping):
        return [{"file": str(k), "reason": str(v)} for k, v in raw.items()]
    return [dict(entry) for entry in raw if isinstance(entry, Mapping) and "file" in entry]


def with_data_notes(
    results: Sequence[SampleResult], dataset: Dataset, modality: str, space: str, distance: str
) -> list[SampleResult]:
    """``results`` with each repaired sample's notes in ``extras["data_notes"]``, followed
    by one ``error`` record per skipped file."""
    repaired = dataset.meta.get("repaired") or {}
    out = []
    for r in results:
        notes = repaired.get(r.sample) if isinstance(repaired, Mapping) else None
        if notes:
            r = dataclasses.replace(r, extras={**r.extras, "data_notes": list(notes)})
        out.append(r)
    for entry in skipped_files(dataset.meta):
        label = entry.get("label")
        out.append(result_record(
            str(entry["file"]), int(label) if isinstance(label, int) else -1, Status.ERROR,
            modality=modality, space=space, distance=distance,
            message=f"skipped by the loader: {entry.get('reason', 'unreadable')}",
            extras={"data_skipped": True},
        ))  # fmt: skip
    return out


def describe(results: Sequence[SampleResult]) -> str | None:
    """One line: how many files the loader skipped and what it repaired (``None``: nothing)."""
    skipped = [r for r in results if r.extras.get("data_skipped")]
    kinds: Counter[str] = Counter()
    for r in results:
        for note in r.extras.get("data_notes", ()):
            kinds[_kind(str(note))] += 1
    parts = []
    if skipped:
        first = skipped[0]
        parts.append(f"{len(skipped)} file(s) skipped (error records; e.g. {first.sample}: "
                     f"{first.message.removeprefix('skipped by the loader: ')})")  # fmt: skip
    parts += [f"{n} {kind}" for kind, n in kinds.most_common()]
    return "; ".join(parts) if parts else None


def _kind(note: str) -> str:
    """A note without its per-file figures (``resampled 44100 -> 8000 Hz`` stays whole,
    ``clipped (peak 1.3)`` becomes ``clipped``)."""
    return note.split(" (")[0]
