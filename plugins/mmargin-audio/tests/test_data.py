"""Loaders: the committed spoken digits, and a user's folder full of awkward files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mmargin_audio.data import DIGITS_DIR, fit_length, load_audio_folder, load_spoken_digits


def test_committed_digits_are_balanced_fixed_length_mono_clips() -> None:
    test = load_spoken_digits("test")
    assert test.x.shape == (120, 8000) and test.x.dtype == np.float32
    assert np.bincount(test.y).tolist() == [12] * 10
    assert np.abs(test.x).max() <= 1.0 and (np.abs(test.x).max(axis=1) > 0.1).all()
    assert test.ids[0] == "digits-test-0-es-cb-m1" and len(set(test.ids)) == 120
    train = load_spoken_digits("train")
    assert len(train) == 240 and not set(test.meta["voices"]) & set(train.meta["voices"])
    assert "resampled" not in test.meta
    total = sum(f.stat().st_size for f in DIGITS_DIR.rglob("*.wav"))
    assert total < 4_000_000  # "a few MB at most"


def test_digits_at_another_rate_are_resampled_and_say_so() -> None:
    data = load_spoken_digits("test", sample_rate=16000, duration=0.5)
    assert data.x.shape == (120, 8000)
    assert data.meta["resampled"] == {"from": 8000, "to": 16000, "files": 120}
    with pytest.raises(ValueError, match="split"):
        load_spoken_digits("valid")


def test_fit_length_pads_crops_chunks_and_rejects() -> None:
    short = np.ones(3, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(short, 7)[0], [0, 0, 1, 1, 1, 0, 0])
    long = np.concatenate([np.zeros(10), np.ones(4), np.zeros(10)]).astype(np.float32)
    assert fit_length(long, 4, "crop")[0].sum() == 4  # the loudest window
    chunks = fit_length(long, 10, "chunk")
    assert len(chunks) == 3 and all(c.shape == (10,) for c in chunks)
    assert fit_length(long, 10, "reject") == []
    with pytest.raises(ValueError, match="long"):
        fit_length(long, 10, "trim")


def _tone(seconds: float, rate: int, channels: int = 1, peak: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = peak * np.sin(2 * np.pi * 440 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_folder_loader_survives_awkward_files(tmp_path: Path) -> None:
    yes, no = tmp_path / "yes", tmp_path / "no"
    yes.mkdir()
    no.mkdir()
    sf.write(yes / "stereo44k.wav", _tone(0.5, 44100, channels=2), 44100, subtype="PCM_16")
    sf.write(yes / "mono16k.wav", _tone(0.8, 16000), 16000, subtype="PCM_16")
    sf.write(
        yes / "loud.wav", _tone(0.5, 16000, peak=1.5).astype(np.float32), 16000, subtype="FLOAT"
    )
    sf.write(no / "long.wav", _tone(2.5, 8000), 8000, subtype="PCM_16")
    sf.write(no / "huge.wav", _tone(5.0, 8000), 8000, subtype="PCM_16")
    sf.write(no / "silent.flac", np.zeros(4000), 8000)
    (no / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (no / "notes.txt").write_text("not audio")
    sf.write(no / "empty.wav", np.zeros(0), 8000, subtype="PCM_16")

    data = load_audio_folder(
        str(tmp_path), sample_rate=16000, duration=1.0, long="chunk", max_seconds=3.0
    )
    assert data.meta["classes"] == ["no", "yes"]
    assert data.x.shape[1] == 16000 and np.abs(data.x).max() <= 1.0
    assert sorted(data.ids) == sorted(
        [
            "no/long.wav#0",
            "no/long.wav#1",
            "no/long.wav#2",
            "no/silent.flac",
            "yes/loud.wav",
            "yes/mono16k.wav",
            "yes/stereo44k.wav",
        ]
    )
    meta = data.meta
    assert meta["mixed_down"] == [{"file": "yes/stereo44k.wav", "channels": 2}]
    assert {r["file"] for r in meta["resampled"]} == {
        "yes/stereo44k.wav",
        "no/long.wav",
        "no/silent.flac",
    }
    assert meta["clipped"][0]["file"] == "yes/loud.wav"
    assert meta["chunked"] == ["no/long.wav"] and meta["ignored_files"] == 1
    skipped = {s["file"]: s["reason"] for s in meta["skipped"]}
    assert set(skipped) == {"no/huge.wav", "no/corrupt.wav", "no/empty.wav"}
    assert "max_seconds" in skipped["no/huge.wav"]
    assert "not a readable sound file" in skipped["no/corrupt.wav"]
    assert "mixed down" in meta["mono"]
    json.dumps(meta)  # the notes are written beside the results

    cropped = load_audio_folder(str(tmp_path), sample_rate=8000, long="reject", max_seconds=3)
    assert "no/long.wav" not in cropped.ids
    assert any(s["file"] == "no/long.wav" for s in cropped.meta["skipped"])


def test_folder_loader_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        load_audio_folder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="one sub-folder per class"):
        load_audio_folder(str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "bad.wav").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"no usable sound files.*bad\.wav"):
        load_audio_folder(str(tmp_path))


@pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None,
    reason="needs Debian's espeak-ng and flite",
)
def test_synthesis_reproduces_a_committed_clip(tmp_path: Path) -> None:
    from mmargin_audio.synth import VOICES, speak
    from mmargin_audio.wav import read_pcm16, write_pcm16

    manifest = json.loads((DIGITS_DIR / "manifest.json").read_text())
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    if manifest["tools"]["espeak-ng"] not in version:
        pytest.skip("another espeak-ng version than the one that made the files")
    voice = next(v for v in VOICES if v.split == "test" and v.engine == "espeak-ng")
    peak = next(v["peak"] for v in manifest["voices"] if v["name"] == voice.name)
    wave = speak(voice, "seven", tmp_path)
    write_pcm16(tmp_path / "7.wav", wave * (peak / np.abs(wave).max()), 8000)
    ours, _ = read_pcm16(tmp_path / "7.wav")
    committed, _ = read_pcm16(DIGITS_DIR / "test" / "7" / f"{voice.name}.wav")
    assert ours.shape == committed.shape
    assert np.abs(ours - committed).max() <= 1 / 32768  # the level is rounded in the manifest
