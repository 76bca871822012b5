"""The audio plugin's lines in a run's CLI summary: a few flips in dB.

Backs the ``mmargin_summary_examples`` hook for the waveform space: for the smallest,
median and largest flips, the perturbation's level relative to the clip's peak (dB_x) and
as a signal-to-noise ratio, the white-noise SNR that flips the same clip (the plugin's
noise baseline) and whether the flip survives a 16-bit WAV round trip — the figures the
per-sample report put in each result's ``extras`` — and how many dB below the engine's
random-perturbation margin the flip lies (``20·log10(1 / random_ratio)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmargin.plugin import SampleResult, hookimpl, pick_examples, ratio_note


def _db(extras: Mapping[str, Any], key: str) -> float | None:
    value = extras.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def audio_line(result: SampleResult) -> str:
    """One flip: classes, δ in dB relative to the clip, the noise baseline and the 16-bit
    round trip (figures the report skipped are left out)."""
    e = result.extras
    parts = []
    if (db_x := _db(e, "db_x")) is not None:
        parts.append(f"delta at {db_x:.1f} dB re clip peak")
    if (snr := _db(e, "snr_db")) is not None:
        parts.append(f"SNR {snr:.1f} dB")
    if (noise := _db(e, "noise_snr_db")) is not None:
        parts.append(f"white noise flips it at SNR {noise:.1f} dB")
    if "pcm16_flipped" in e:
        parts.append("survives 16-bit WAV" if e["pcm16_flipped"] else "lost in 16-bit WAV")
    if not parts:
        parts.append(f"{result.distance} {result.margin:.4g}")
    if result.random_ratio is not None and result.random_ratio > 0:
        parts.append(f"{-20 * math.log10(result.random_ratio):.1f} dB below random noise")
    elif note := ratio_note(result):
        parts.append(note)
    return f"{result.sample!r} class {result.label} -> {result.adv_label}: {', '.join(parts)}"


@hookimpl
def mmargin_summary_examples(space: Any, results: Sequence[SampleResult]) -> list[str] | None:
    if getattr(space, "modality", None) != "audio":
        return None
    return [audio_line(r) for r in pick_examples(results)]
