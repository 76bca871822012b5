"""The HTML shell both pages share: one inline stylesheet, escaping, tables, numbers.

Nothing here fetches anything: no script, no web font, no external stylesheet. Every value
passes through :func:`esc` (``html.escape``) unless it is a fragment built by this package
or a plugin's gallery hook (which escapes its own text).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
:root { --fg:#1d232b; --muted:#5b6572; --line:#d9dee5; --bg:#ffffff; --panel:#f5f7fa;
        --accent:#2b6cb0; --warn:#b7791f; --bad:#c53030; --good:#2f855a; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; color: var(--fg); background: var(--bg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 14px 0 6px; }
p.sub, .muted { color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; background: #fff; }
.side { max-width: 480px; }
.figure svg { max-width: 100%; height: auto; display: block; }
.headline { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.metric { background: var(--panel); border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.metric .v { font-size: 20px; font-weight: 600; }
.metric .k { color: var(--muted); font-size: 12px; }
.note { border-left: 4px solid var(--warn); background: #fffaf0; padding: 6px 12px; margin: 8px 0; }
.note.bad { border-color: var(--bad); background: #fff5f5; }
.gallery { display: flex; flex-direction: column; gap: 14px; }
.sample { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
.sample .head { color: var(--muted); margin-bottom: 6px; }
.sample .head b { color: var(--fg); }
.views { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.views figure { margin: 0; text-align: center; }
.views figcaption { color: var(--muted); font-size: 12px; }
img.pixels { image-rendering: pixelated; width: 168px; height: auto;
             border: 1px solid var(--line); }
img.spec { width: 260px; height: 120px; border: 1px solid var(--line); }
del { color: var(--bad); } ins { color: var(--good); text-decoration: none; font-weight: 600; }
.sentence { font-size: 15px; line-height: 1.7; max-width: 900px; }
code { background: var(--panel); padding: 0 3px; border-radius: 3px; }
sup.nc { color: var(--bad); font-weight: 700; }
"""


def esc(value: Any) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 3) -> str:
    """A figure for people: ``—`` for missing, ``∞`` for inf, 3 significant digits."""
    if value is None or isinstance(value, str):
        return "—" if value in (None, "") else str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    value = float(value)
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def percent(value: Any) -> str:
    """A fraction as a percentage (``—`` when missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{100 * float(value):.1f}%"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are escaped unless wrapped in :class:`Raw`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell.html if isinstance(cell, Raw) else esc(cell)
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw:
    """An HTML fragment that is already safe (built here or by a plugin's hook)."""

    def __init__(self, fragment: str) -> None:
        self.html = fragment


def metric(label: str, value: str, hint: str = "") -> str:
    """One headline figure box."""
    title = f' title="{esc(hint)}"' if hint else ""
    return (f'<div class="metric"{title}><div class="v">{esc(value)}</div>'
            f'<div class="k">{esc(label)}</div></div>')  # fmt: skip


def page(title: str, body: str) -> str:
    """A whole self-contained document: inline style, no script, no external resource."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; media-src data:; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
