"""``mmargin compare RUN_A RUN_B ...``: several runs side by side on the scales they share.

Unitless figures (accuracy, attack success, the random-baseline ratio, the normalised
AUC) compare across models and modalities; native figures (margins in the distance's
units) only between runs that measure in the same space and distance, and a model
comparison needs the same data too. Each figure says what it requires
(:data:`FIGURES`); where the runs differ on that, the cells are marked ``†`` and a note
says which runs differ and how.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmargin.report import figures
from mmargin.report.html import Raw, esc, number, page, percent, table
from mmargin.report.run import ReportRun, component, read_run


@dataclass(frozen=True)
class Figure:
    """A row of the comparison: a summary key, its label, and what two runs must share for
    the figure to compare (``data``, ``space``, ``distance``)."""

    key: str
    label: str
    unitless: bool
    requires: tuple[str, ...] = ()
    fraction: bool = False


FIGURES = (
    Figure("clean_accuracy", "clean accuracy", True, ("data",), fraction=True),
    Figure("attack_success", "attack success", True, fraction=True),
    Figure("exact_fraction", "exact margins", True, fraction=True),
    Figure("random_ratio_median", "median adversarial / random margin", True),
    Figure("normalised_auc", "normalised robustness AUC", True),
    Figure(
        "relative_margin_median", "median relative margin ‖δ‖/‖x‖", False, ("space", "distance")
    ),
    Figure(
        "curve_auc", "AUC scaled by the run's largest margin", False, ("space", "distance", "data")
    ),
    Figure("margin_median", "median margin (native units)", False, ("space", "distance")),
    Figure("margin_q25", "margin 25th percentile", False, ("space", "distance")),
    Figure("margin_q75", "margin 75th percentile", False, ("space", "distance")),
)


def identity(run: ReportRun, what: str) -> str:
    """What a run's data / space / distance is, as a comparable string."""
    if what == "data":
        table_ = run.table("data")
        return json.dumps(
            {"data": table_, "samples": run.table("task").get("samples")},
            sort_keys=True,
            default=str,
        )
    return (
        json.dumps(run.table(what), sort_keys=True, default=str)
        if run.table(what)
        else run.first(what)
    )


def describe(run: ReportRun, what: str) -> str:
    """A short human label of a run's data / space / distance."""
    if what == "data":
        t = run.table("data")
        name, options = component(t)
        listed = ", ".join(f"{k}={v}" for k, v in options.items())
        samples = run.table("task").get("samples")
        count = f", first {samples} samples" if samples else ""
        if name is None and "in_memory" in t:
            return f"in-memory data ({t['in_memory']}){count}"
        return f"{name or 'in-memory'}({listed}){count}"
    return str(component(run.table(what))[0] or run.first(what))


def value(run: ReportRun, key: str) -> float | None:
    """A summary figure as a float (``None`` when the run lacks it)."""
    raw = run.summary.get(key)
    if not isinstance(raw, (int, float)) or isinstance(raw, bool) or math.isnan(raw):
        return None
    return float(raw)


def conflicts(runs: Sequence[ReportRun], figure: Figure) -> list[str]:
    """What the runs that carry ``figure`` differ in among what it requires (``data``,
    ``space``, ``distance``; empty: comparable)."""
    having = [r for r in runs if value(r, figure.key) is not None]
    return [w for w in figure.requires if len({identity(r, w) for r in having}) > 1]


def differences(runs: Sequence[ReportRun], what: str) -> str:
    """How the runs differ in ``what``: each distinct value and the runs that have it."""
    groups: dict[str, list[str]] = {}
    for r in runs:
        groups.setdefault(describe(r, what), []).append(r.name)
    return " vs ".join(f"{label} ({', '.join(names)})" for label, names in groups.items())


def notes(
    runs: Sequence[ReportRun], found: Sequence[tuple[Figure, list[str], list[str]]]
) -> list[str]:
    """One line per set of differences: the figures it makes incomparable, and how the runs
    differ (each difference spelled out once)."""
    by_reason: dict[tuple[str, ...], list[str]] = {}
    for figure, _, why in found:
        if why:
            by_reason.setdefault(tuple(why), []).append(figure.label)
    lines = [f"not comparable ({', '.join('different ' + w for w in why)}): {', '.join(labels)}"
             for why, labels in by_reason.items()]  # fmt: skip
    spelled = sorted({w for why in by_reason for w in why})
    return lines + [f"{w}: {differences(runs, w)}" for w in spelled]


def rows(runs: Sequence[ReportRun]) -> list[tuple[Figure, list[str], list[str]]]:
    """Per figure any run carries: its formatted cells and its comparability notes."""
    out = []
    for figure in FIGURES:
        values = [value(r, figure.key) for r in runs]
        if all(v is None for v in values):
            continue
        cells = [percent(v) if figure.fraction else number(v) for v in values]
        if figure.key.startswith("margin_"):
            cells = [
                f"{c} {r.short_units}" if c != "—" else c for c, r in zip(cells, runs, strict=True)
            ]
        out.append((figure, cells, conflicts(runs, figure)))
    return out


def compare_table(run_dirs: Sequence[str | Path]) -> str:
    """The comparison as a plain-text table for the terminal (notes under it)."""
    runs = [read_run(p) for p in run_dirs]
    found = rows(runs)
    header = ["figure", *[r.name for r in runs]]
    body = [[f.label + (" †" if why else ""), *cells] for f, cells, why in found]
    native = next((i for i, (f, _, _) in enumerate(found) if not f.unitless), None)
    if native is not None:  # unitless figures first, then each run's own terms
        body.insert(native, ["(in each run's own terms)", *[""] * len(runs)])
    described = [f"{r.first('modality')} / {r.first('distance')}" for r in runs]
    body.insert(0, ["modality / distance", *described])
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *body]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    below = [f"† {line}" for line in notes(runs, found)]
    return "\n".join(lines + (["", *below] if below else [])) + "\n"


def write_compare(run_dirs: Sequence[str | Path], out: str | Path = "compare.html") -> Path:
    """Write the comparison page of several run folders; returns its path."""
    runs = [read_run(p) for p in run_dirs]
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_compare(runs), encoding="utf-8")
    return target


def render_compare(runs: Sequence[ReportRun]) -> str:
    """The comparison page as HTML text."""
    found = rows(runs)
    who = table(["run", "modality", "space", "distance", "data", "samples", "folder"],
                [(r.name, r.first("modality"), describe(r, "space"), describe(r, "distance"),
                  describe(r, "data"), len(r.results), str(r.path)) for r in runs])  # fmt: skip
    header = ["figure", *[r.name for r in runs]]
    body: list[list[Any]] = []
    for unitless in (True, False):
        scale = "unitless: compares across models and modalities" if unitless else (
            "in each run's own terms: same space and distance needed")  # fmt: skip
        body.append([Raw(f"<b>{esc(scale)}</b>"), *[""] * len(runs)])
        for f, cells, why in found:
            if f.unitless is unitless:
                mark = '<sup class="nc" title="not comparable across these runs">†</sup>'
                body.append([Raw(esc(f.label) + (mark if why else "")), *cells])
    notes_html = "".join(
        f'<div class="note bad">† {esc(line)}</div>' if line.startswith("not comparable")
        else f'<div class="muted">{esc(line)}</div>' for line in notes(runs, found)
    )  # fmt: skip
    unitless_values = {f.label: [value(r, f.key) for r in runs] for f in FIGURES if f.unitless
                       and any(value(r, f.key) is not None for r in runs)}  # fmt: skip
    chart = figures.small_multiples([r.name for r in runs], unitless_values)
    ratios = [[float(v) for i in range(len(r.results))
               if isinstance(v := r.value(i, "random_ratio"), (int, float)) and math.isfinite(v)]
              for r in runs]  # fmt: skip
    curve = ""
    if any(ratios):
        curve = ('<div class="card"><h3>Share of samples whose adversarial / random ratio '
                 "exceeds t</h3>"
                 + figures.curves([r.name for r in runs], ratios, "t = margin / random margin")
                 + "</div>")  # fmt: skip
    body_html = (
        f"<h1>mmargin compare</h1><p class=\"sub\">{len(runs)} runs</p>{who}"
        "<h2>Figures</h2>" + table(header, body, numeric=list(range(1, 1 + len(runs))))
        + '<p class="muted">Unitless figures compare across models and modalities. Native '
        "figures are in each run's own units and compare only between runs with the same "
        "space and distance (and, for a model comparison, the same data). † marks a figure "
        "on which these runs differ in what it requires.</p>" + notes_html
        + '<h2>Unitless figures</h2><div class="grid">'
        + f'<div class="card figure">{chart}</div>' + curve + "</div>"
    )  # fmt: skip
    return page("mmargin compare", body_html)
