"""The tabular plugin's view of one sample in ``mmargin report``: the changed features in
raw units with their unit labels (before, after, change), the cost of each change and its
size in standard deviations.

It reads the per-row table the sample report recorded (``extras["changes"]``, see
:mod:`mmargin_tabular.report`); for a run without it, it rebuilds the table from the clean
row and the adversarial through the schema. Units come from the schema (``unit = "$"``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmargin_tabular.report import row_report
from mmargin_tabular.schema import Schema


def row_figures(result: Any, schema: Schema | None, clean: Any) -> Mapping[str, Any] | None:
    """The row's report (``changes``, ``cost`` ...): recorded in the extras, else rebuilt
    from the clean row and the adversarial (``None`` when neither is possible)."""
    if isinstance(result.extras.get("changes"), list):
        return dict(result.extras)
    if schema is None or clean is None or result.adversarial is None:
        return None
    import torch

    x = torch.as_tensor(np.asarray(clean, dtype=np.float64)).reshape(1, -1)
    adv = torch.as_tensor(np.asarray(result.adversarial, dtype=np.float64)).reshape(1, -1)
    return row_report(schema, x, adv)[0]


def render_row(result: Any, schema: Schema | None, clean: Any) -> str | None:
    """An HTML table of the changed features, or ``None`` when there is nothing to show."""
    figures = row_figures(result, schema, clean)
    if figures is None:
        return None
    rows = [_row(c, schema) for c in figures["changes"]]
    names = ("feature", "before", "after", "change", "cost (points)", "change (std)")
    head = "".join(f"<th>{h}</th>" for h in names)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in rows)  # fmt: skip
    total = figures.get("cost")
    footer = f"total cost {total:.4g} points" if isinstance(total, (int, float)) else ""
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        f'<div class="muted">{len(rows)} feature(s) changed. {html.escape(footer)}</div>'
    )


def _row(change: Mapping[str, Any], schema: Schema | None) -> Sequence[str]:
    name = str(change.get("feature", "?"))
    unit = _unit(schema, name)
    delta = change.get("change")
    std = change.get("std_change")
    return (
        name,
        _with_unit(change.get("before"), unit),
        _with_unit(change.get("after"), unit),
        _with_unit(f"{delta:+.4g}", unit) if isinstance(delta, (int, float)) else "category",
        f"{change['cost']:.4g}" if isinstance(change.get("cost"), (int, float)) else "",
        f"{std:+.3g} σ" if isinstance(std, (int, float)) else "",
    )


def _unit(schema: Schema | None, name: str) -> str:
    if schema is None:
        return ""
    try:
        return schema.feature(name).unit
    except (KeyError, ValueError):
        return ""


def _with_unit(value: Any, unit: str) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    if not unit or not isinstance(value, (int, float, str)) or text == "category":
        return text
    if unit in ("$", "€", "£"):  # currency first, sign before it: −$20.67
        return f"{text[0]}{unit}{text[1:]}" if text[:1] in "+-" else f"{unit}{text}"
    return f"{text} {unit}"
