"""Where a benchmark's figures go: ``<out>.json`` (the full record) and ``<out>.md`` (the
table the README quotes), both written by :func:`write_outputs`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_outputs(out: Path, record: Mapping[str, Any], table: str) -> None:
    """Write ``record`` as JSON (non-finite numbers as ``"inf"`` strings, anything else
    JSON cannot hold as its ``str``) and ``table`` beside it as Markdown; print the table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, default=str).replace("Infinity", '"inf"')
    out.write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
