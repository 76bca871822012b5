"""File names for per-sample artefacts."""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def artifact_stem(sample_id: str) -> str:
    """A filesystem-safe file stem unique per sample id: a readable slug of the id plus a
    short hash of the exact id, so ``"a b"`` and ``"a_b"`` (or ``"A"`` and ``"a"`` on a
    case-insensitive disk) never share a file."""
    slug = _UNSAFE.sub("_", sample_id).strip("._")[:48] or "sample"
    digest = hashlib.blake2b(sample_id.encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug}-{digest}"
