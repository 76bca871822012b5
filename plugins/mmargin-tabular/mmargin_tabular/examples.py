"""The tabular plugin's lines in a run's CLI summary: a few flips as feature diffs.

Backs the ``mmargin_summary_examples`` hook for the schema space: for the smallest,
median and largest flips, the cost in the distance's units and every changed feature as
``name before -> after unit`` in the schema's own terms (raw amounts, category names), from
the per-sample report in each result's ``extras``, and how it compares with random
schema-respecting moves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmargin.plugin import SampleResult, hookimpl, pick_examples, ratio_note

MAX_FEATURES = 4
"""Changed features listed per line (the rest are counted)."""


def _value(value: Any) -> str:
    """A reported value: reports round to each feature's precision already, so up to the 7
    significant digits a float32 row holds (``436.33``, never ``69.29000091552734``)."""
    return f"{value:.7g}" if isinstance(value, float) else str(value)


def feature_diff(changes: Sequence[Mapping[str, Any]], units: Mapping[str, str]) -> str:
    """``amount 120 -> 95.5 USD, merchant retail -> travel (+2 more)``."""
    parts = []
    for c in changes[:MAX_FEATURES]:
        unit = units.get(str(c.get("feature")), "")
        text = f"{c.get('feature')} {_value(c.get('before'))} -> {_value(c.get('after'))}"
        parts.append(f"{text} {unit}".rstrip())
    more = len(changes) - MAX_FEATURES
    return ", ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def tabular_line(result: SampleResult, units: Mapping[str, str]) -> str:
    """One flip: classes, its margin and cost and the changed features in raw units."""
    changes = result.extras.get("changes") or []
    size = f"{result.distance} {result.margin:.4g}"
    cost = result.extras.get("cost")
    if isinstance(cost, (int, float)) and result.distance != "tabular-l1":
        size += f" (cost {cost:.4g} points)"
    parts = [size, feature_diff(changes, units) if changes else "", ratio_note(result)]
    detail = "; ".join(p for p in parts if p)
    return f"{result.sample!r} class {result.label} -> {result.adv_label}: {detail}"


@hookimpl
def mmargin_summary_examples(space: Any, results: Sequence[SampleResult]) -> list[str] | None:
    from mmargin_tabular.space import TabularSpace

    if not isinstance(space, TabularSpace) or space.schema is None:
        return None
    units = {f.name: f.unit for f in space.schema.features if f.unit}
    return [tabular_line(r, units) for r in pick_examples(results)]
