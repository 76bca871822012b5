"""``mmargin report RUN_DIR``: one run folder → one self-contained HTML page.

Sections: the task and versions; headline figures; robust accuracy vs ε (certified beside
it where lower bounds exist); the margin distribution and margins per class; adversarial /
random-noise ratios (when the run has them); attack-failure warnings (when raised); the
gallery (:mod:`mmargin.report.gallery`).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from mmargin.report import figures
from mmargin.report.gallery import gallery_item_missing, section
from mmargin.report.html import Raw, esc, metric, number, page, percent, table
from mmargin.report.run import ReportRun, read_run
from mmargin.results import Status


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a run folder (default ``RUN_DIR/report.html``); returns the path."""
    run = read_run(run_dir)
    target = Path(out) if out is not None else run.path / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_report(run), encoding="utf-8")
    return target


def render_report(run: ReportRun) -> str:
    """The report page of a run, as HTML text."""
    parts = [
        f"<h1>mmargin report: {esc(run.name)}</h1>",
        f'<p class="sub">{esc(run.first("modality"))} · space <code>{esc(run.first("space"))}'
        f"</code> · distance <code>{esc(run.first('distance'))}</code> · "
        f"{len(run.results)} samples · folder <code>{esc(run.path)}</code></p>",
        "<h2>Headline figures</h2>",
        headline(run),
        "<h2>Robust accuracy vs ε</h2>",
        robustness(run),
        "<h2>Margins</h2>",
        margins(run),
    ]
    ratio = random_ratios(run)
    if ratio:
        parts += ["<h2>Adversarial / random-noise ratio</h2>", ratio]
    parts += ["<h2>Attack-failure checks</h2>", warnings(run)]
    parts += ["<h2>Gallery: smallest, median and largest margins</h2>"]
    if gallery_item_missing(run):
        parts.append('<div class="note">This run folder holds no <code>inputs.npz</code> (it '
                     "was written before reports existed): views that need the clean input "
                     "show less. Re-run the task to get them.</div>")  # fmt: skip
    parts += [section(run), "<h2>Task and versions</h2>", task_tables(run)]
    return page(f"mmargin report: {run.name}", '<div class="figure">' + "\n".join(parts) + "</div>")


def headline(run: ReportRun) -> str:
    """Headline figure boxes and the full summary table."""
    s, units = run.summary, run.units
    boxes = [
        metric("clean accuracy", percent(s.get("clean_accuracy"))),
        metric("attack success", percent(s.get("attack_success"))),
        metric(f"median margin ({units})", number(s.get("margin_median"))),
        metric("median relative margin", number(s.get("relative_margin_median")),
               "‖δ‖/‖x‖ in the run's distance: its meaning differs between modalities"),
    ]  # fmt: skip
    if s.get("random_ratio_median") is not None:
        boxes.append(metric("median adversarial / random", number(s["random_ratio_median"]),
                            "margin / smallest flipping random perturbation; < 1: the attack "
                            "is that much smaller than noise"))  # fmt: skip
    if s.get("normalised_auc") is not None:
        boxes.append(metric("normalised AUC", number(s["normalised_auc"]),
                            f"normalised by {s.get('normalised_scale') or '?'}"))  # fmt: skip
    if s.get("certified_robust_accuracy"):
        boxes.append(metric("bounded samples", percent(_bounded_share(run))))
    skip = {"robust_accuracy", "certified_robust_accuracy", "indicator_counts"}
    rows = [(k, _fmt(k, v)) for k, v in s.items() if k not in skip]
    return (f'<div class="headline">{"".join(boxes)}</div>'
            + table(["figure", "value"], rows, numeric=[1]))  # fmt: skip


def _fmt(key: str, value: Any) -> str:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (key.endswith(("accuracy", "success", "fraction")))
    ):
        return percent(value)
    return number(value, 4) if not isinstance(value, (dict, list)) else str(value)


def _bounded_share(run: ReportRun) -> float:
    bounds = [r.lower_bound for r in run.results if r.status is Status.FLIPPED]
    return sum(b is not None for b in bounds) / len(bounds) if bounds else math.nan


def robustness(run: ReportRun) -> str:
    """The curve, and the summary's ε points as a table (certified beside when present)."""
    usable = [r for r in run.results if r.status is not Status.ERROR]
    margins = [r.margin for r in usable]
    bounds = [_bound(r) for r in usable]
    empirical = {
        float(k): float(v) for k, v in dict(run.summary.get("robust_accuracy") or {}).items()
    }
    certified_raw = dict(run.summary.get("certified_robust_accuracy") or {})
    certified = {float(k): float(v) for k, v in certified_raw.items()}
    svg = figures.robust_curve(
        margins, bounds, run.short_units, certified or None, empirical or None
    )
    eps = sorted(set(empirical) | set(certified))
    header = [f"ε ({run.short_units})", "robust accuracy (empirical, upper bound)"]
    if certified:
        header.append("certified (lower bound)")
    elif any(b is not None for b in bounds):  # per-sample bounds without a summary figure
        header.append("proven (lower bound > ε)")
        certified = {e: sum(b is not None and b > e for b in bounds) / len(bounds) for e in eps}
    rows = [[number(e), percent(empirical.get(e))] + ([percent(certified.get(e))] if certified
            else []) for e in eps]  # fmt: skip
    note = ("" if any(b is not None for b in bounds) else
            '<p class="muted">No lower bounds in this run: only the empirical curve (an upper '
            "bound on true robust accuracy) is shown.</p>")  # fmt: skip
    side = f'<div class="side">{table(header, rows, [1, 2])}{note}</div>'
    return f'<div class="grid"><div class="card">{svg}</div>{side}</div>'


def _bound(r: Any) -> float | None:
    if r.status is Status.MISCLASSIFIED:
        return 0.0 if r.lower_bound is not None else None
    return r.lower_bound


def margins(run: ReportRun) -> str:
    """Histogram of the flipped margins and box plots per true class."""
    idx = run.flipped()
    values = [run.results[i].margin for i in idx]
    if not values:
        return '<p class="muted">No flipped sample: no margin to plot.</p>'
    finite = [v for v in values if v > 0]
    log = bool(finite) and max(finite) / min(finite) > 50
    hist = figures.histogram(values, f"margin ({run.short_units})", "margins", log=log)
    groups: dict[str, list[float]] = {}
    for i in idx:
        groups.setdefault(str(run.results[i].label), []).append(run.results[i].margin)
    boxes = figures.per_class(groups, f"margin ({run.short_units})")
    counts = Counter(r.status.value for r in run.results)
    status = table(["status", "samples"], sorted(counts.items()), numeric=[1])
    return (f'<div class="grid"><div class="card"><h3>Distribution (flipped samples)</h3>{hist}'
            f'</div><div class="card"><h3>Per true class</h3>{boxes}</div>'
            f"<div>{status}</div></div>")  # fmt: skip


def random_ratios(run: ReportRun) -> str:
    """Histogram of margin / random margin, when the run carries them."""
    values = [run.value(i, "random_ratio") for i in range(len(run.results))]
    ratios = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not ratios:
        return ""
    positive = [r for r in ratios if r > 0]
    svg = figures.histogram(positive, "adversarial margin / random margin", "ratios", log=True,
                            marker=1.0, marker_label="as small as random noise")  # fmt: skip
    zero = len(ratios) - len(positive)
    never = (f" For {zero} of them no random perturbation flipped the input within the "
             "baseline's passes (ratio 0, left out of the plot)." if zero else "")  # fmt: skip
    return (
        f'<div class="grid"><div class="card">{svg}</div><div class="side"><p class="muted">'
        f"{len(ratios)} samples. A ratio r below 1 means the attack's flip is 1/r times "
        f"smaller than the smallest flipping random perturbation of the same kind.{never}"
        "</p></div></div>"
    )


def warnings(run: ReportRun) -> str:
    """Attack-failure indicators: counts and the samples that raised them."""
    counts = {str(k): int(v) for k, v in dict(run.summary.get("indicator_counts") or {}).items()
              if v}  # fmt: skip
    flagged = []
    for i, r in enumerate(run.results):
        names = run.value(i, "indicators") or []
        if names:
            flagged.append((r.sample, ", ".join(map(str, names))))
            if not run.summary.get("indicator_counts"):
                for n in names:
                    counts[str(n)] = counts.get(str(n), 0) + 1
    if "indicator_counts" not in run.summary and not flagged:
        return ('<p class="muted">This run records no attack-failure indicators (written '
                "before they existed).</p>")  # fmt: skip
    if not counts:
        return '<p class="muted">No attack-failure indicator was raised.</p>'
    items = "".join(f"<li><b>{esc(k)}</b>: {v} sample(s)</li>" for k, v in sorted(counts.items()))
    sample_table = table(["sample", "indicators"], flagged[:50]) if flagged else ""
    return (
        f'<div class="note bad">The attack may have failed on some samples: their margins '
        f"can be too large.<ul>{items}</ul></div>{sample_table}"
    )


def task_tables(run: ReportRun) -> str:
    """The task copy's tables and the package versions."""
    blocks = []
    for name in ("task", "model", "data", "space", "distance", "goal_options"):
        flat = _flatten(run.table(name))
        if flat:
            blocks.append(
                f'<div class="card"><h3>{esc(name)}</h3>{table(["key", "value"], flat)}</div>'
            )
    versions = list(run.table("versions").items())
    blocks.append(
        f'<div class="card"><h3>versions</h3>{table(["package", "version"], versions)}</div>'
    )
    return '<div class="grid">' + "".join(blocks) + "</div>"


def _flatten(table_: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in table_.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", Raw(esc(value))))
    return out
