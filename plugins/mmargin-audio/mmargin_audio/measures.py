"""Loudness figures of a perturbation, in the units audio people use.

For a clip ``x`` and a perturbation ``δ`` (float, full scale 1.0):

- ``db_x  = 20·log10(max|δ| / max|x|)``: the perturbation's peak relative to the clip's peak;
- ``snr_db = 10·log10(Σx² / Σδ²)``: signal-to-perturbation energy ratio;
- ``dbfs  = 20·log10(max|δ|)``: the perturbation's peak relative to digital full scale.

Every function takes batches ``(B, ...)`` (numpy) and returns ``(B,)`` float64 arrays:
``-inf`` dB for a zero perturbation, ``nan`` where the figure is undefined (a silent clip
has no peak to be relative to).
"""

from __future__ import annotations

import numpy as np

from mmargin_audio.wav import PCM16_STEP


def _flat(a: np.ndarray) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1)


def peak(a: np.ndarray) -> np.ndarray:
    """Per-sample largest absolute value."""
    return np.abs(_flat(a)).max(axis=1)


def energy(a: np.ndarray) -> np.ndarray:
    """Per-sample sum of squares."""
    return (_flat(a) ** 2).sum(axis=1)


def ratio_db(num: np.ndarray, den: np.ndarray, power: bool = False) -> np.ndarray:
    """``20·log10(num/den)`` (``10·`` when ``power``); ``nan`` where ``den`` is 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (10.0 if power else 20.0) * np.log10(num / den)
    return np.where(den > 0, value, np.nan)


def db_x(x: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Peak of ``delta`` relative to the peak of ``x``, in dB (``nan`` for silent clips)."""
    return ratio_db(peak(delta), peak(x))


def snr_db(x: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Signal-to-perturbation ratio in dB (``+inf`` for a zero perturbation)."""
    return -ratio_db(energy(delta), energy(x), power=True)


def dbfs(delta: np.ndarray) -> np.ndarray:
    """Peak of ``delta`` in dB relative to full scale (1.0)."""
    return ratio_db(peak(delta), np.ones(np.shape(delta)[0]))


def pcm16_steps(delta: np.ndarray) -> np.ndarray:
    """Peak of ``delta`` in 16-bit PCM steps (below 1: lost or rounding noise in a WAV file)."""
    return peak(delta) / PCM16_STEP
