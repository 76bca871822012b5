"""The image plugin's view of one sample in ``mmargin report``: clean, adversarial and
the perturbation amplified to the full colour range, side by side (PNG data URIs)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from mmargin.plugin import png_data_uri


def render_image(result: Any, clean: np.ndarray | None) -> str:
    """Three pictures and the amplification factor; the adversarial alone when the run
    holds no clean input (an older run folder)."""
    adv = np.asarray(result.adversarial, dtype=np.float64)
    views = []
    if clean is not None:
        views.append(_figure(png_data_uri(clean, vmin=0.0, vmax=1.0), "clean"))
    views.append(_figure(png_data_uri(adv, vmin=0.0, vmax=1.0), "adversarial"))
    if clean is not None:
        delta = adv - np.asarray(clean, dtype=np.float64).reshape(adv.shape)
        peak = float(np.abs(delta).max())
        gain = 0.5 / peak if peak > 0 else 1.0
        picture = delta.mean(axis=0) if delta.ndim == 3 and delta.shape[0] == 3 else delta
        uri = png_data_uri(picture * gain, vmin=-0.5, vmax=0.5, cmap="RdBu_r")
        views.append(_figure(uri, f"perturbation ×{gain:.3g} (red +, blue −; peak {peak:.3g})"))
    return '<div class="views">' + "".join(views) + "</div>"


def _figure(uri: str, caption: str) -> str:
    return (f'<figure><img class="pixels" alt="{html.escape(caption)}" src="{uri}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
