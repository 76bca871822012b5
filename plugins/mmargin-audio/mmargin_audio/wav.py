"""Waveform I/O and conversions: WAV through soundfile, resampling, mix-down, 16-bit PCM.

torchaudio's ``load``/``save`` need FFmpeg libraries; soundfile bundles libsndfile and
reads and writes WAV (and FLAC / OGG) with nothing else, so every file in this plugin goes
through it. Waveforms are float32 in ``[-1, 1]``, shaped ``(channels, samples)`` when read.
16-bit PCM follows the usual reading convention: sample value ``k`` means ``k / 32768``, so
one 16-bit step is ``1 / 32768`` (−90.3 dBFS).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np

PCM16_STEP = 1.0 / 32768.0
"""One 16-bit PCM step in float units (full scale 1.0)."""


def read_audio(path: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """A sound file as float32 ``(channels, samples)`` and its sample rate.

    Raises ``ValueError`` naming the file when it is not a readable sound file (corrupt,
    empty, another format), so loaders can skip it with that message.
    """
    import soundfile as sf

    name = getattr(path, "name", path)
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (
        RuntimeError,
        TypeError,
        ValueError,
        OSError,
    ) as exc:  # LibsndfileError is a RuntimeError
        raise ValueError(f"{name}: not a readable sound file ({exc})") from None
    if data.shape[0] == 0:
        raise ValueError(f"{name}: the file holds no samples")
    return np.ascontiguousarray(data.T), int(rate)


def to_mono(wave: np.ndarray) -> np.ndarray:
    """Mix ``(channels, samples)`` down to ``(samples,)`` by averaging the channels."""
    return wave.mean(axis=0) if wave.ndim == 2 else wave


def resample(wave: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """``wave`` (``(..., samples)``) resampled with ``torchaudio.functional.resample``."""
    if orig_rate == new_rate:
        return wave
    import torch
    import torchaudio.functional as F

    out = F.resample(
        torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
        int(orig_rate),
        int(new_rate),
    )
    return out.numpy()


def quantize_pcm16(wave: np.ndarray) -> np.ndarray:
    """``wave`` rounded to the nearest 16-bit PCM code (int16; clipped at full scale)."""
    scaled = np.round(np.asarray(wave, dtype=np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def write_pcm16(target: str | Path | BinaryIO, wave: np.ndarray, sample_rate: int) -> None:
    """Write ``(samples,)`` or ``(channels, samples)`` as a 16-bit PCM WAV file."""
    import soundfile as sf

    codes = quantize_pcm16(wave)
    frames = codes.T if codes.ndim == 2 else codes
    sf.write(target, frames, int(sample_rate), subtype="PCM_16", format="WAV")


def read_pcm16(source: str | Path | BinaryIO) -> tuple[np.ndarray, int]:
    """A 16-bit WAV as float32 ``k / 32768`` in its stored layout, and its sample rate."""
    import soundfile as sf

    codes, rate = sf.read(source, dtype="int16", always_2d=True)
    wave = codes.T.astype(np.float32) / np.float32(32768.0)
    return wave, int(rate)


def pcm16_roundtrip(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """``wave`` written to an in-memory 16-bit WAV file and read back, in its own shape.

    The same encoder and decoder as a file on disk: what a listener (or a deployed model
    reading the file) would get.
    """
    buffer = io.BytesIO()
    write_pcm16(buffer, wave, sample_rate)
    buffer.seek(0)
    back, _ = read_pcm16(buffer)
    return back.reshape(np.shape(wave))
