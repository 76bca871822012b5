"""The report's gallery: the smallest, median and largest margins, each in its modality's
own view (the ``mmargin_render_sample`` hook), with a plain fallback for any sample no
plugin renders."""

from __future__ import annotations

import math

from mmargin.report.html import esc, number
from mmargin.report.run import ReportRun


def pick(run: ReportRun) -> list[tuple[str, int]]:
    """``(role, index)`` of the flipped samples with the smallest, median and largest
    finite margin (fewer when there are fewer flipped samples)."""
    order = sorted(run.flipped(), key=lambda i: run.results[i].margin)
    if not order:
        return []
    chosen = [("smallest margin", order[0]), ("median margin", order[(len(order) - 1) // 2]),
              ("largest margin", order[-1])]  # fmt: skip
    seen: set[int] = set()
    out = []
    for role, i in chosen:
        if i not in seen:
            seen.add(i)
            out.append((role, i))
    return out


def render(run: ReportRun, index: int) -> str:
    """The plugin's view of one sample, or the plain fallback."""
    from mmargin import plugins

    result = run.results[index]
    item = run.inputs.get(result.sample)
    try:
        fragment = plugins.manager().hook.mmargin_render_sample(
            space=run.space(), result=result, dataset_item=item
        )
    except Exception as exc:  # noqa: BLE001 - one plugin's bad view never sinks the report
        return fallback(run, index) + (
            f'<div class="note bad">the {esc(result.modality)} view failed: '
            f"{esc(type(exc).__name__)}: {esc(exc)}</div>"
        )
    return fragment if fragment else fallback(run, index)


def fallback(run: ReportRun, index: int) -> str:
    """What every run can show: the extras as a small table."""
    result = run.results[index]
    extras = [(k, v) for k, v in result.extras.items() if isinstance(v, (int, float, str, bool))]
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(number(v) if not isinstance(v, str) else v)}"
                   "</td></tr>" for k, v in extras[:12])  # fmt: skip
    note = "no plugin renders this modality; its recorded figures:" if rows else ""
    return f'<div class="muted">{esc(note)}</div><table>{rows}</table>' if rows else ""


def section(run: ReportRun) -> str:
    """The whole gallery block."""
    picks = pick(run)
    if not picks:
        return '<p class="muted">No flipped sample to show.</p>'
    blocks = []
    for role, i in picks:
        r = run.results[i]
        ratio = run.value(i, "random_ratio")
        extra = ""
        if isinstance(ratio, (int, float)) and math.isfinite(ratio):
            extra += f" · adversarial / random {esc(number(ratio))}"
        indicators = run.value(i, "indicators") or []
        if indicators:
            extra += " · ⚠ " + esc(", ".join(map(str, indicators)))
        bound = ""
        if r.lower_bound is not None and not math.isnan(r.lower_bound):
            method = run.value(i, "bound_method")
            how = f", {esc(method)}" if method else ""
            bound = (
                f" (exact{how})" if r.exact else f" (certified ≥ {esc(number(r.lower_bound))}{how})"
            )
        blocks.append(
            f'<div class="sample" data-sample="{esc(r.sample)}" data-modality="{esc(r.modality)}">'
            f'<div class="head"><b>{esc(role)}</b> · sample <code>{esc(r.sample)}</code> · '
            f"margin <b>{esc(number(r.margin, 4))}</b> {esc(run.units)}{bound} · "
            f"class {esc(r.label)} → {esc(r.adv_label)}{extra}</div>"
            f"{render(run, i)}</div>"
        )
    return '<div class="gallery">' + "".join(blocks) + "</div>"


def gallery_item_missing(run: ReportRun) -> bool:
    """True when the run stores no clean inputs although its inputs are arrays (an older
    run): the views then show the adversarial alone."""
    return not run.inputs and any(
        not isinstance(r.adversarial, str) and r.adversarial is not None for r in run.results
    )
