"""The series plugin's view of one sample in ``mmargin report``: the clean and the
adversarial series drawn as one small inline SVG (no library needed: a third-party
plugin can render its modality with plain text)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np


def render_series(
    result: Any, clean: np.ndarray | None, width: int = 480, height: int = 120
) -> str:
    """Both series as polylines (clean grey, adversarial red) on a shared vertical scale."""
    adv = np.asarray(result.adversarial, dtype=np.float64).ravel()
    lines = [("adversarial", adv, "#c53030")]
    if clean is not None:
        lines.insert(0, ("clean", np.asarray(clean, dtype=np.float64).ravel(), "#718096"))
    lo = min(float(v.min()) for _, v, _ in lines)
    hi = max(float(v.max()) for _, v, _ in lines)
    span = hi - lo if hi > lo else 1.0
    shapes = []
    for name, values, colour in lines:
        xs = np.linspace(2, width - 2, values.size)
        ys = height - 2 - (values - lo) / span * (height - 4)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        shapes.append(f'<polyline class="{html.escape(name)}" fill="none" stroke="{colour}" '
                      f'stroke-width="1.5" points="{points}"/>')  # fmt: skip
    legend = " · ".join(f"{'grey' if name == 'clean' else 'red'}: {name}" for name, _, _ in lines)
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="{html.escape(legend)}">{"".join(shapes)}</svg>'
            f'<div class="muted">{html.escape(legend)}</div>')  # fmt: skip
