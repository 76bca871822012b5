"""The report's plots: matplotlib figures returned as inline SVG text (no JavaScript).

Each function takes plain numbers and returns an ``<svg>`` fragment; text is drawn as
paths, so no font is needed, and every figure gets its own id salt so several SVGs can
share one page. matplotlib loads on first call (``mmargin --help`` stays instant).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLOURS = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16")


def new_figure(width: float = 5.6, height: float = 3.2) -> tuple[Figure, Axes]:
    """A figure and its axes (object API: no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as an ``<svg>`` element (XML header and doctype dropped)."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def robust_curve(
    margins: Sequence[float],
    lower_bounds: Sequence[float | None],
    units: str,
    certified_points: Mapping[float, float] | None = None,
    empirical_points: Mapping[float, float] | None = None,
) -> str:
    """Robust accuracy vs ε: the empirical curve from the margins (upper bounds) and, where
    lower bounds exist, the certified curve beside it (share of samples proven robust)."""
    m = np.asarray(margins, dtype=float)
    finite = m[np.isfinite(m)]
    top = float(finite.max()) * 1.1 if finite.size and finite.max() > 0 else 1.0
    grid = np.linspace(0.0, top, 300)
    fig, ax = new_figure()
    if m.size == 0:  # every sample failed: an empty plot says so
        ax.text(0.5, 0.5, "no sample to plot", ha="center", transform=ax.transAxes)
        return to_svg(fig, "robust")
    ax.step(grid, [np.mean(m > e) for e in grid], where="post", color=COLOURS[0],
            label="empirical (attack found no flip ≤ ε)")  # fmt: skip
    if empirical_points:
        eps = sorted(empirical_points)
        ax.plot(eps, [empirical_points[e] for e in eps], "o", color=COLOURS[0], ms=4)
    known = [b for b in lower_bounds if b is not None and not math.isnan(b)]
    if known:
        lb = np.array([-1.0 if b is None or math.isnan(b) else b for b in lower_bounds])
        ax.step(grid, [np.mean(lb > e) for e in grid], where="post", color=COLOURS[2], ls="--",
                label=f"certified (lower bound > ε; {len(known)}/{len(lb)} bounded)")  # fmt: skip
    if certified_points:
        eps = sorted(certified_points)
        ax.plot(eps, [certified_points[e] for e in eps], "s", color=COLOURS[2], ms=4,
                label="certified (summary)")  # fmt: skip
    ax.set_xlim(0, top)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"ε ({units})")
    ax.set_ylabel("robust accuracy")
    ax.legend(fontsize=8, frameon=False)
    return to_svg(fig, "robust")


def histogram(values: Sequence[float], xlabel: str, salt: str, log: bool = False,
              marker: float | None = None, marker_label: str = "") -> str:  # fmt: skip
    """A histogram of finite values (log-spaced bins when ``log``)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    fig, ax = new_figure(4.8, 3.0)
    if v.size:
        positive = v[v > 0]
        if log and positive.size and positive.min() < positive.max():
            bins: Any = np.geomspace(positive.min(), positive.max(), 20)
            ax.set_xscale("log")
            v = positive
        elif np.all(v == np.round(v)) and v.max() - v.min() <= 40:  # counts: one bar each
            bins = np.arange(v.min() - 0.5, v.max() + 1.5)
        else:
            bins = min(30, max(5, v.size // 2))
        ax.hist(v, bins=bins, color=COLOURS[0], alpha=0.85)
    if marker is not None and math.isfinite(marker):
        ax.axvline(marker, color=COLOURS[1], ls="--", label=marker_label)
        ax.legend(fontsize=8, frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("samples")
    return to_svg(fig, salt)


def per_class(groups: Mapping[str, Sequence[float]], ylabel: str) -> str:
    """Margins per true class as box plots with the samples drawn over them."""
    names = sorted(groups, key=lambda k: (len(k), k))
    fig, ax = new_figure(max(4.0, 0.45 * len(names) + 2.0), 3.0)
    data = [np.asarray(groups[n], dtype=float) for n in names]
    ax.boxplot(data, tick_labels=names, showfliers=False)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.plot(i + rng.uniform(-0.15, 0.15, d.size), d, ".", color=COLOURS[0], alpha=0.6)
    ax.set_xlabel("true class")
    ax.set_ylabel(ylabel)
    return to_svg(fig, "per-class")


def small_multiples(runs: Sequence[str], figures: Mapping[str, Sequence[float | None]]) -> str:
    """One panel per figure (its own scale), one labelled bar per run; a missing value is
    written as "n/a" instead of a bar."""
    from matplotlib.figure import Figure

    n = max(1, len(figures))
    fig = Figure(figsize=(max(4.0, 2.3 * n), 1.4 + 0.3 * len(runs)), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (label, values) in zip(axes, figures.items(), strict=False):
        for j, v in enumerate(values):
            ok = v is not None and math.isfinite(v)
            ax.barh(j, v if ok else 0.0, color=COLOURS[j % len(COLOURS)])
            ax.text(v if ok else 0.0, j, f" {v:.3g}" if ok else " n/a", va="center", fontsize=7)
        ax.set_yticks(range(len(runs)), list(runs) if ax is axes[0] else [""] * len(runs),
                      fontsize=7)  # fmt: skip
        ax.invert_yaxis()
        ax.set_title(label, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.margins(x=0.25)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return to_svg(fig, "bars")


def curves(runs: Sequence[str], values: Sequence[Sequence[float]], xlabel: str) -> str:
    """Share of samples whose unitless figure exceeds t, one line per run (a robustness
    curve on a scale every run shares)."""
    fig, ax = new_figure(5.6, 3.2)
    finite = [x for v in values for x in v if math.isfinite(x) and x > 0]
    if finite:
        grid = np.geomspace(min(finite) / 1.2, max(finite) * 1.2, 300)
        for j, (run, v) in enumerate(zip(runs, values, strict=True)):
            arr = np.asarray(v, dtype=float)
            if arr.size:
                ax.step(grid, [np.mean(arr > t) for t in grid], where="post",
                        color=COLOURS[j % len(COLOURS)], label=run)  # fmt: skip
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of samples above")
    ax.legend(fontsize=8, frameon=False)
    return to_svg(fig, "curves")
