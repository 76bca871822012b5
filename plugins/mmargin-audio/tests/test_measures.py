"""dB figures against hand-computed values, and the 16-bit PCM conversions."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from mmargin_audio import measures
from mmargin_audio.wav import (
    PCM16_STEP,
    pcm16_roundtrip,
    quantize_pcm16,
    read_audio,
    read_pcm16,
    write_pcm16,
)


def _clip_and_delta() -> tuple[np.ndarray, np.ndarray]:
    """A 0.5-peak sine over whole periods and a ±0.005 square perturbation."""
    n = 800
    t = np.arange(n)
    x = 0.5 * np.sin(2 * np.pi * t / 80)  # 10 whole periods: mean square exactly 0.125
    delta = np.where(t % 2 == 0, 0.005, -0.005)
    return x[None], delta[None]


def test_db_figures_match_hand_computed_values() -> None:
    x, delta = _clip_and_delta()
    # 20·log10(0.005 / 0.5) = -40 dB exactly
    assert measures.db_x(x, delta)[0] == pytest.approx(-40.0, abs=1e-9)
    # Σx² / Σδ² = 0.125 / 0.005² = 5000 → 10·log10(5000) = 36.9897 dB
    assert measures.snr_db(x, delta)[0] == pytest.approx(10 * math.log10(5000), abs=1e-9)
    assert measures.snr_db(x, delta)[0] == pytest.approx(36.98970004, abs=1e-6)
    # 20·log10(0.005) = -46.0206 dBFS
    assert measures.dbfs(delta)[0] == pytest.approx(-46.02059991, abs=1e-6)
    assert measures.pcm16_steps(delta)[0] == pytest.approx(0.005 * 32768)


def test_batches_and_channels_are_per_sample() -> None:
    x = np.stack([np.full((2, 10), 0.5), np.full((2, 10), 0.25)])
    delta = np.stack([np.full((2, 10), 0.05), np.full((2, 10), 0.05)])
    np.testing.assert_allclose(measures.db_x(x, delta), [-20.0, 20 * math.log10(0.2)])
    np.testing.assert_allclose(measures.snr_db(x, delta), [20.0, 20 * math.log10(5.0)])


def test_undefined_and_zero_cases() -> None:
    silent = np.zeros((1, 16))
    delta = np.full((1, 16), 0.01)
    assert math.isnan(measures.db_x(silent, delta)[0])
    assert math.isnan(measures.snr_db(silent, delta)[0])
    x = np.full((1, 16), 0.3)
    assert measures.db_x(x, np.zeros((1, 16)))[0] == -math.inf
    assert measures.snr_db(x, np.zeros((1, 16)))[0] == math.inf
    assert measures.dbfs(np.zeros((1, 16)))[0] == -math.inf


def test_pcm16_codes_and_round_trip_are_exact_on_the_grid() -> None:
    codes = np.array([-32768, -1, 0, 1, 12345, 32767], dtype=np.int16)
    wave = codes.astype(np.float64) / 32768.0
    np.testing.assert_array_equal(quantize_pcm16(wave), codes)
    np.testing.assert_array_equal(pcm16_roundtrip(wave.astype(np.float32), 8000), wave)
    # full scale clips to the largest code; half a step rounds to the nearest code
    assert quantize_pcm16(np.array([1.0, -1.5]))[0] == 32767
    assert quantize_pcm16(np.array([1.0, -1.5]))[1] == -32768
    off_grid = np.array([0.4 * PCM16_STEP, 0.6 * PCM16_STEP], dtype=np.float32)
    np.testing.assert_array_equal(pcm16_roundtrip(off_grid, 8000), [0.0, PCM16_STEP])


def test_stereo_files_keep_their_layout() -> None:
    wave = np.stack([np.linspace(-0.5, 0.5, 50), np.zeros(50)]).astype(np.float32)
    buffer = io.BytesIO()
    write_pcm16(buffer, wave, 16000)
    buffer.seek(0)
    back, rate = read_pcm16(buffer)
    assert rate == 16000 and back.shape == (2, 50)
    np.testing.assert_allclose(back, wave, atol=PCM16_STEP)
    buffer.seek(0)
    again, _ = read_audio(buffer)
    np.testing.assert_array_equal(again, back)


def test_read_audio_names_unreadable_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValueError, match="not a readable sound file"):
        read_audio(bad)
