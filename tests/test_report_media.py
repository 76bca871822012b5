"""The report's data URIs decode back to what was given: PNG pixels within one grey level,
WAV samples within one 16-bit step, and spectrograms put a tone's energy at its frequency."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from mmargin.plugin import png_data_uri, spectrogram, wav_data_uri


def _payload(uri: str, kind: str) -> bytes:
    head, _, data = uri.partition(",")
    assert head == f"data:{kind};base64"
    return base64.b64decode(data)


def test_png_round_trip_grey_and_channels_first() -> None:
    from matplotlib import image

    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 1, (1, 7, 5))
    back = image.imread(io.BytesIO(_payload(png_data_uri(grey, vmin=0, vmax=1), "image/png")))
    assert back.shape[:2] == (7, 5)
    np.testing.assert_allclose(back[..., 0], grey[0], atol=1 / 255 + 1e-6)
    rgb = rng.uniform(0, 1, (3, 4, 6))
    back = image.imread(io.BytesIO(_payload(png_data_uri(rgb, vmin=0, vmax=1), "image/png")))
    np.testing.assert_allclose(back[..., :3], np.moveaxis(rgb, 0, -1), atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="expected an image"):
        png_data_uri(np.zeros((2, 2, 2, 2)))


def test_wav_round_trip_within_one_pcm_step() -> None:
    t = np.arange(800) / 8000
    clip = 0.6 * np.sin(2 * np.pi * 440 * t)
    with wave.open(io.BytesIO(_payload(wav_data_uri(clip, 8000), "audio/wav"))) as fh:
        assert (fh.getnchannels(), fh.getsampwidth(), fh.getframerate()) == (1, 2, 8000)
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2")
    np.testing.assert_allclose(pcm / 32768, clip, atol=0.5 / 32768)


def test_wav_codes_are_the_exported_codes() -> None:
    """Samples already on the 16-bit grid (what a repaired, saved adversarial holds) come
    back as the very codes the audio plugin writes, full scale included."""
    codes = np.array([-32768, -32767, -1, 0, 1, 12345, 32767], dtype=np.int64)
    with wave.open(io.BytesIO(_payload(wav_data_uri(codes / 32768, 8000), "audio/wav"))) as fh:
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), dtype="<i2")
    np.testing.assert_array_equal(pcm, codes)


def test_spectrogram_puts_a_tone_at_its_frequency() -> None:
    rate, freq = 8000, 1000
    t = np.arange(rate) / rate
    spec = spectrogram(np.sin(2 * np.pi * freq * t), rate)
    rows = spec.shape[0]  # lowest frequency in the last row, Nyquist (4000 Hz) in the first
    peak_row = int(np.argmax(spec.mean(axis=1)))
    peak_hz = (rows - 1 - peak_row) * (rate / 2) / (rows - 1)
    assert abs(peak_hz - freq) <= rate / 2 / (rows - 1)
