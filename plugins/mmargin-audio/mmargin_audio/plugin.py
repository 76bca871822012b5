"""The audio plugin's hook implementations: the ``waveform`` space, the audio loaders and
models, the per-clip report (dB, 16-bit round trip, noise baseline) and the WAV artefacts.

Registered through the ``mmargin`` entry point (``audio = "mmargin_audio.plugin"``) like any
third-party plugin; torch, torchaudio and soundfile are imported inside the factories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmargin.plugin import Register, hookimpl
from mmargin_audio.examples import mmargin_summary_examples  # noqa: F401 - its hook

if TYPE_CHECKING:
    from mmargin.plugin import Dataset, SampleResult


def waveform_space(
    sample_rate: int = 16000,
    band: list[float] | None = None,
    window: list[float] | None = None,
    max_seconds: float = 600.0,
    roundtrip: bool = True,
    noise_draws: int = 8,
    noise_budget: int = 200,
    noise_seed: int = 0,
    write_wavs: bool = True,
    saved: str = "repair",
) -> Any:
    """Waveforms in ``[-1, 1]``; δ optionally limited to ``band`` = [low_hz, high_hz] and
    ``window`` = [start_s, end_s]. Each flipped clip is reported in dB, re-checked after a
    16-bit WAV round trip (``roundtrip``) and compared with the quietest white noise that
    flips it (``noise_draws`` seeded draws, ``noise_budget`` forward passes; 0 draws: off).
    ``write_wavs``: write clean / adversarial / perturbation WAVs into the run's folder.
    ``saved``: each flip is re-checked as the 16-bit WAV written and repaired to the
    smallest 16-bit flip (``"repair"``), only re-checked (``"check"``) or neither
    (``"off"``; ``roundtrip = false`` turns off both checks)."""
    from mmargin.plugin import NoiseConfig
    from mmargin_audio.space import WaveformSpace

    for key, value in (("band", band), ("window", window)):
        if value is not None and (not isinstance(value, (list, tuple)) or len(value) != 2):
            raise ValueError(f"{key}: expected a list of two numbers, got {value!r}")
    noise = None
    if noise_draws > 0:
        noise = NoiseConfig(draws=noise_draws, budget=noise_budget, seed=noise_seed)
    return WaveformSpace(
        sample_rate=int(sample_rate),
        band=None if band is None else (float(band[0]), float(band[1])),
        window=None if window is None else (float(window[0]), float(window[1])),
        max_seconds=float(max_seconds),
        roundtrip=bool(roundtrip),
        noise=noise,
        write_wavs=bool(write_wavs),
        saved=saved,
    )


@hookimpl
def mmargin_register_spaces(register: Register) -> None:
    register(
        "waveform",
        waveform_space,
        help="audio waveforms in [-1, 1]: optional band / time window, reported in dB",
    )


def _digits(
    split: str = "test",
    sample_rate: int | None = None,
    duration: float = 1.0,
    folder: str | None = None,
) -> Any:
    from mmargin_audio.data import load_spoken_digits

    return load_spoken_digits(split, sample_rate=sample_rate, duration=duration, folder=folder)


def _folder(
    path: str,
    sample_rate: int | None = None,
    duration: float = 1.0,
    long: str = "crop",
    max_seconds: float = 600.0,
    classes: list[str] | dict[str, int] | None = None,
) -> Any:
    from mmargin_audio.data import load_audio_folder

    return load_audio_folder(
        path,
        sample_rate=sample_rate,
        duration=duration,
        long=long,
        max_seconds=max_seconds,
        classes=classes,
    )


@hookimpl
def mmargin_register_datasets(register: Register) -> None:
    register(
        "spoken-digits",
        _digits,
        help="synthetic spoken digits 0-9 (espeak-ng / flite voices), mono, 8 kHz, 1 s",
    )
    register(
        "audio-folder",
        _folder,
        help="folder/<class>/*.wav, mixed down to mono, resampled to the model's rate",
    )


def _digits_kws(weights: str | None = None) -> Any:
    from mmargin_audio.models import digits_kws

    return digits_kws(weights)


def _hf_audio_classifier(path: str, sample_rate: int | None = None) -> Any:
    from mmargin_audio.models import hf_audio_classifier

    return hf_audio_classifier(path, sample_rate=sample_rate)


@hookimpl
def mmargin_register_models(register: Register) -> None:
    register("digits_kws", _digits_kws, help="log-mel keyword-spotting CNN for spoken digits")
    register("hf_audio_classifier", _hf_audio_classifier, help="local Hugging Face raw-waveform "
             "audio classifier (path = folder)")  # fmt: skip


def _is_waveform(space: Any) -> bool:
    from mmargin_audio.space import WaveformSpace

    return isinstance(space, WaveformSpace)


@hookimpl
def mmargin_sample_report(
    space: Any, model: Any, x: Any, x_adv: Any, labels: Any, goal: Any, distance: Any = None
) -> list[dict[str, Any]] | None:
    """Per flipped clip: dB figures, the 16-bit WAV round trip and the white-noise baseline
    (see :func:`mmargin_audio.report.clip_report`); flips judged by the run's goal, passes
    spent through the engine's counted adapter."""
    if not _is_waveform(space):
        return None
    from mmargin_audio.report import clip_report

    return clip_report(space, model, x, x_adv, labels, goal, distance)


@hookimpl
def mmargin_write_artifacts(
    space: Any, out: Path, results: Sequence[SampleResult], dataset: Dataset
) -> None:
    """``out/audio/``: clean, adversarial and perturbation WAVs, an index and a summary."""
    if not _is_waveform(space):
        return
    from mmargin_audio.report import write_audio_artifacts

    write_audio_artifacts(space, out, results, dataset)


@hookimpl
def mmargin_render_sample(space: Any, result: Any, dataset_item: Any) -> str | None:
    """Players and spectrograms of the clean and adversarial clips, for ``mmargin report``."""
    if result.modality != "audio" or result.adversarial is None:
        return None
    from mmargin_audio.render import render_clip

    rate = (result.extras or {}).get("sample_rate") or getattr(space, "sample_rate", 16000)
    return render_clip(result, dataset_item, int(rate))
