"""The audio plugin's view of one sample in ``mmargin report``: players for the clean and
adversarial clips (and the perturbation, amplified so it can be heard), their
spectrograms, and the clip's dB figures. Clips are embedded as 16-bit WAV data URIs."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from mmargin.plugin import png_data_uri, spectrogram, wav_data_uri


def render_clip(result: Any, clean: np.ndarray | None, sample_rate: int) -> str:
    """Players and spectrograms (the adversarial alone when the run holds no clean clip)."""
    adv = np.asarray(result.adversarial, dtype=np.float64).ravel()
    clips: list[tuple[str, np.ndarray]] = []
    if clean is not None:
        clean = np.asarray(clean, dtype=np.float64).ravel()
        clips.append(("clean", clean))
    clips.append(("adversarial", adv))
    specs = [spectrogram(wave, sample_rate) for _, wave in clips]
    top = max(float(s.max()) for s in specs)
    views = [
        _clip(name, wave, spec, sample_rate, top)
        for (name, wave), spec in zip(clips, specs, strict=True)
    ]
    if clean is not None:
        delta = adv - clean
        peak = float(np.abs(delta).max())
        gain = 0.5 / peak if peak > 0 else 1.0
        views.append(_clip(f"perturbation ×{gain:.3g} ({20 * math.log10(gain):+.1f} dB)",
                           delta * gain, spectrogram(delta * gain, sample_rate), sample_rate,
                           None))  # fmt: skip
    return '<div class="views">' + "".join(views) + "</div>" + _figures(result)


def _clip(name: str, wave: np.ndarray, spec: np.ndarray, rate: int, top: float | None) -> str:
    hi = float(spec.max()) if top is None else top
    picture = png_data_uri(spec, vmin=hi - 80.0, vmax=hi, cmap="magma")
    label = html.escape(name)
    return (f'<figure><audio controls preload="metadata" src="{wav_data_uri(wave, rate)}"></audio>'
            f'<br><img class="spec" alt="spectrogram: {label}" src="{picture}">'
            f"<figcaption>{label} · {len(wave) / rate:.2f} s</figcaption></figure>")  # fmt: skip


def _figures(result: Any) -> str:
    names = {"snr_db": "SNR (dB)", "db_x": "perturbation vs clip peak (dB)",
             "noise_snr_db": "quietest flipping white noise SNR (dB)",
             "fragility_db": "adversarial vs noise (dB quieter)",
             "pcm16_flipped": "flip survives 16-bit WAV"}  # fmt: skip
    parts = []
    for key, label in names.items():
        value = result.extras.get(key)
        if isinstance(value, bool):
            parts.append(f"{label}: {'yes' if value else 'no'}")
        elif isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{label}: {value:.1f}")
    return f'<div class="muted">{html.escape(" · ".join(parts))}</div>' if parts else ""
