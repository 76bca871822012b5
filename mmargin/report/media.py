"""Media as data URIs, so a report embeds pictures and sounds and works offline.

Plugins build their gallery views with these (exported from :mod:`mmargin.plugin`):
:func:`png_data_uri` for images, heat maps and spectrograms, :func:`wav_data_uri` for
``<audio>`` players, :func:`spectrogram` for a clip's log-power picture. Only the
standard library, numpy and (for colour maps) matplotlib are used; matplotlib loads on
first use.
"""

from __future__ import annotations

import base64
import io
import wave

import numpy as np

from mmargin.saved import PCM16


def png_data_uri(
    array: np.ndarray,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str | None = None,
) -> str:
    """A ``data:image/png;base64,...`` URI of an image.

    ``array`` is ``(H, W)`` (grey, or coloured with ``cmap``), ``(H, W, 3)``/``(H, W, 4)``
    or channels-first ``(C, H, W)`` with C in 1, 3, 4; values are scaled from
    ``[vmin, vmax]`` (default: the array's own range) to the full colour range.
    """
    from matplotlib import image

    pic = np.asarray(array, dtype=np.float64)
    if pic.ndim == 3 and pic.shape[0] in (1, 3, 4) and pic.shape[-1] not in (3, 4):
        pic = np.moveaxis(pic, 0, -1)
    if pic.ndim == 3 and pic.shape[-1] == 1:
        pic = pic[..., 0]
    if pic.ndim not in (2, 3):
        raise ValueError(f"png_data_uri: expected an image, got shape {np.shape(array)}")
    lo = float(np.nanmin(pic)) if vmin is None else vmin
    hi = float(np.nanmax(pic)) if vmax is None else vmax
    scaled = np.clip((pic - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(pic)
    buffer = io.BytesIO()
    if scaled.ndim == 2:
        image.imsave(buffer, scaled, format="png", cmap=cmap or "gray", vmin=0.0, vmax=1.0)
    else:
        image.imsave(buffer, scaled, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def wav_data_uri(wave_data: np.ndarray, sample_rate: int) -> str:
    """A ``data:audio/wav;base64,...`` URI: a mono 16-bit PCM WAV of ``wave_data`` (floats
    in [-1, 1]), coded as the exported WAVs are (nearest code of ``x · 32768``, clipped at
    full scale: :data:`mmargin.saved.PCM16`), so a player plays the very samples whose flip
    was checked as saved."""
    samples = np.asarray(wave_data, dtype=np.float64).ravel()
    pcm = np.clip(np.rint(samples * PCM16.scale), PCM16.low, PCM16.high).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(sample_rate))
        fh.writeframes(pcm.tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def spectrogram(wave_data: np.ndarray, sample_rate: int, window_ms: float = 32.0) -> np.ndarray:
    """Log power (dB, floor −100) of a clip, ``(frequencies, frames)`` with the lowest
    frequency in the last row (ready for :func:`png_data_uri`)."""
    from scipy import signal

    samples = np.asarray(wave_data, dtype=np.float64).ravel()
    size = max(16, int(sample_rate * window_ms / 1000))
    _, _, power = signal.spectrogram(samples, fs=sample_rate, nperseg=min(size, samples.size))
    return np.asarray(10 * np.log10(np.maximum(power, 1e-10)))[::-1]
