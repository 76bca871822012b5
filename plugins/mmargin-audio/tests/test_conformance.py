"""The conformance kit on everything the audio plugin registers: the ``waveform`` space
(plain, band-limited, windowed), the ``spoken-digits`` and ``audio-folder`` loaders and the
``digits_kws`` model behind the core's torch adapter — looked up through the registry."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmargin import plugins
from mmargin.testing import (
    Case,
    Check,
    adapter_case,
    loader_case,
    parametrize_with_checks,
    space_case,
    unchecked_registrations,
)
from mmargin.testing import (
    build_registered as _make,
)

RATE = 8000


@functools.cache
def _clips() -> np.ndarray:
    data = _make("datasets", "spoken-digits")
    return np.asarray(data.x[:: max(1, len(data) // 5)][:5])


def _waveform(**options: Any) -> Any:
    return _make("spaces", "waveform", sample_rate=RATE, **options)


def _folder() -> str:
    from mmargin_audio.wav import write_pcm16

    root = Path(tempfile.mkdtemp(prefix="mmargin-audio-"))
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 16000
    for label, freq in (("high", 1200.0), ("low", 300.0)):
        (root / label).mkdir()
        for i in range(2):
            wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
            write_pcm16(root / label / f"{i}.wav", wave.astype(np.float32), 16000)
    return str(root)


CLIPPING = "the final clamp adds out-of-band content where a clip clips (see the space's doc)"

CASES: list[Case] = [
    space_case("waveform", _waveform, _clips),
    space_case(
        "waveform-band",
        lambda: _waveform(band=[300.0, 3000.0]),
        _clips,
        skip={"check_space_project_idempotent": CLIPPING},
    ),
    space_case("waveform-window", lambda: _waveform(window=[0.2, 0.6]), _clips),
    adapter_case(
        "torch-digits_kws",
        lambda: _make("adapters", "torch", _make("models", "digits_kws")),
        _clips,
    ),
    loader_case(
        "spoken-digits", plugins.lookup("datasets", "spoken-digits").factory, {}, space=_waveform
    ),
    loader_case(
        "audio-folder",
        plugins.lookup("datasets", "audio-folder").factory,
        {"path": _folder(), "sample_rate": RATE, "duration": 0.25},
        space=_waveform,
    ),
]


@parametrize_with_checks(CASES)
def test_audio_conformance(case: Case, check: Check) -> None:
    check(case)


def test_every_audio_registration_is_checked() -> None:
    """A space, loader or shipped model added without a case fails here (the Hugging Face
    loader needs a local model folder: its adapter is the text plugin's torch path)."""
    missing = unchecked_registrations("audio", CASES, also={"hf_audio_classifier"})
    assert not missing, f"audio registrations without a conformance case: {missing}"
