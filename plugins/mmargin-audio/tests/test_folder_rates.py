"""Audio folders a user brings: clips at another rate are resampled to the rate the model
declares (and the run says so), never fed at the wrong one; a folder with a few classes
works; skipped files are error records in results.jsonl and a line under the summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin.testing import run_cli as main
from mmargin_audio.data import DIGITS_DIR
from mmargin_audio.wav import read_audio, resample, write_pcm16

TASK = """
[task]
name = "wav-subset"
out = "run"

[model]
factory = "digits_kws"

[data]
loader = "audio-folder"
path = "wavs"
{data}

[space]
name = "waveform"
noise_draws = 0
roundtrip = false
{space}

[distance]
name = "linf"

[search]
budget = 20
exact = "never"
"""

DIGITS = ("1", "4", "8")


@pytest.fixture
def wavs(tmp_path: Path) -> Path:
    """``wavs/<digit>/<voice>.wav``: stereo 16 kHz copies of four test voices of three
    digits, and one corrupt file."""
    for digit in DIGITS:
        (tmp_path / "wavs" / digit).mkdir(parents=True)
        for file in sorted((DIGITS_DIR / "test" / digit).glob("*.wav"))[:4]:
            wave, rate = read_audio(file)
            up = resample(wave[0], rate, 16000)
            write_pcm16(tmp_path / "wavs" / digit / file.name, np.stack([up, 0.5 * up]), 16000)
    (tmp_path / "wavs" / "4" / "broken.wav").write_bytes(b"RIFF....not a wav")
    return tmp_path


def _rows(folder: Path) -> list[dict]:
    lines = (folder / "run" / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_clips_are_resampled_to_the_models_rate_and_the_run_says_so(
    wavs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmargin_audio.data import load_audio_folder
    from mmargin_audio.models import digits_kws

    (wavs / "task.toml").write_text(TASK.format(data="", space=""))
    assert main(["run", str(wavs / "task.toml"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "data: 1 file(s) skipped (error records; e.g. 4/broken.wav" in printed
    assert "12 resampled 16000 -> 8000 Hz; 12 mixed down from 2 channels" in printed
    rows = _rows(wavs)
    broken = [r for r in rows if r["sample"] == "4/broken.wav"]
    assert broken and broken[0]["status"] == "error" and broken[0]["label"] == 4
    loaded = [r for r in rows if r["status"] != "error"]
    assert len(loaded) == 12 and {r["label"] for r in loaded} == {1, 4, 8}
    assert all("resampled 16000 -> 8000 Hz" in r["extras"]["data_notes"] for r in loaded)
    # oracle: the model on the same folder loaded at its 8 kHz, labels by digit name
    data = load_audio_folder(str(wavs / "wavs"), sample_rate=8000)
    with torch.no_grad():
        pred = digits_kws()(torch.from_numpy(data.x)).argmax(1).numpy()
    truth = np.array([int(data.meta["classes"][y]) for y in data.y])
    summary = json.loads((wavs / "run" / "summary.json").read_text())
    assert summary["clean_accuracy"] == pytest.approx(float((pred == truth).mean()))
    assert summary["errors"] == 1


@pytest.mark.parametrize(
    ("data", "space", "field"),
    [("sample_rate = 16000", "", "data.sample_rate"),
     ("", "sample_rate = 16000", "space.sample_rate")],
)  # fmt: skip
def test_data_at_another_rate_than_the_model_is_refused(
    wavs: Path, data: str, space: str, field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (wavs / "task.toml").write_text(TASK.format(data=data, space=space))
    assert main(["run", str(wavs / "task.toml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{field}: the model expects sample_rate = 8000" in err


def test_without_a_model_rate_the_files_own_rate_is_kept(wavs: Path) -> None:
    from mmargin_audio.data import load_audio_folder

    data = load_audio_folder(str(wavs / "wavs"))
    assert data.meta["sample_rate"] == 16000 and "resampled" not in data.meta
    write_pcm16(wavs / "wavs" / "1" / "odd.wav", np.zeros(800), 8000)
    with pytest.raises(ValueError, match=r"different sample rates \(8000 Hz.*16000 Hz"):
        load_audio_folder(str(wavs / "wavs"))


def test_a_class_list_may_name_classes_without_a_folder(wavs: Path) -> None:
    from mmargin_audio.data import load_audio_folder

    names = [str(d) for d in range(10)]
    data = load_audio_folder(str(wavs / "wavs"), sample_rate=8000, classes=names)
    assert sorted(set(data.y.tolist())) == [1, 4, 8]
    assert data.meta["classes_without_folder"] == ["0", "2", "3", "5", "6", "7", "9"]
    with pytest.raises(ValueError, match=r"class folder\(s\) '8' are not in classes"):
        load_audio_folder(str(wavs / "wavs"), classes=names[:5])
