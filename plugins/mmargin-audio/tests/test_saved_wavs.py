"""Adversarial WAVs that survive saving: every file a run names adversarial flips when it is
read back from disk and re-classified by the model outside the run (the oracle), for a
mono 8 kHz folder and for a stereo 44.1 kHz folder (mixed down and resampled to the model's
8 kHz on loading; the files are written at the rate the model was fed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin.testing import run_cli as main
from mmargin_audio.data import DIGITS_DIR
from mmargin_audio.wav import read_audio, read_pcm16, resample, write_pcm16

TASK = """
[task]
name = "wav-saved"
out = "run"

[model]
factory = "digits_kws"

[data]
loader = "audio-folder"
path = "wavs"

[space]
name = "waveform"
noise_draws = 0

[distance]
name = "{distance}"

[search]
budget = 130
report_passes = 30
exact = "never"
"""


def _folder(root: Path, rate: int, stereo: bool) -> None:
    """Two test voices of every digit, written at ``rate`` (stereo: a quieter right channel)."""
    for digit in range(10):
        (root / "wavs" / str(digit)).mkdir(parents=True)
        for file in sorted((DIGITS_DIR / "test" / str(digit)).glob("*.wav"))[:2]:
            wave, stored = read_audio(file)
            mono = resample(wave[0], stored, rate)
            write_pcm16(root / "wavs" / str(digit) / file.name,
                        np.stack([mono, 0.6 * mono]) if stereo else mono, rate)  # fmt: skip


@pytest.mark.parametrize(
    ("rate", "stereo", "distance"),
    [(8000, False, "linf"), (8000, False, "l2"), (44100, True, "l2")],
)
def test_every_wav_named_adversarial_flips_when_read_back(
    tmp_path: Path, rate: int, stereo: bool, distance: str
) -> None:
    from mmargin_audio.models import digits_kws

    _folder(tmp_path, rate, stereo)
    (tmp_path / "task.toml").write_text(TASK.format(distance=distance))
    assert main(["run", str(tmp_path / "task.toml"), "--quiet"]) == 0
    index = json.loads((tmp_path / "run" / "audio" / "index.json").read_text())
    named = [e for e in index if e["adversarial"]]
    assert named and all(e["files"][1].endswith(".adv.wav") for e in named)
    model = digits_kws()
    for entry in named:
        wave, stored = read_pcm16(tmp_path / "run" / "audio" / entry["files"][1])
        assert stored == 8000 and wave.shape[0] == 1
        with torch.no_grad():
            label = int(model(torch.from_numpy(wave)).argmax())
        assert label != entry["label"], entry["sample"]
        assert entry["saved_margin"] >= 0
    assert any(not e["saved_flips"] for e in named)  # flips lost as saved were repaired
    others = [e for e in index if not e["adversarial"]]
    assert all(e["files"][1].endswith(".not-adversarial.wav") for e in others)
