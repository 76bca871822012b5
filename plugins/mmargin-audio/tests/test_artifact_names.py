"""Per-clip WAV names are unique per sample id: clips whose ids differ only by a space and
an underscore (or by case) get their own files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmargin.plugin import Dataset, SampleResult, Status
from mmargin_audio.report import write_audio_artifacts
from mmargin_audio.space import WaveformSpace


def test_ids_that_slug_alike_write_separate_wavs(tmp_path: Path) -> None:
    ids = ["clip a", "clip_a", "Clip_a"]
    x = np.zeros((3, 800), dtype=np.float32)
    data = Dataset(x, np.zeros(3, dtype=np.int64), ids, {"sample_rate": 8000})
    results = [
        SampleResult(sample=s, modality="audio", space="waveform", distance="l2", label=0,
                     pred_label=0, adv_label=1, margin=0.1, lower_bound=None, verified=True,
                     queries=1, seconds=0.0, status=Status.FLIPPED, strategy="gradient",
                     adversarial=x[i] + 0.01 * (i + 1))
        for i, s in enumerate(ids)
    ]  # fmt: skip
    folder = write_audio_artifacts(WaveformSpace(sample_rate=8000, noise=None), tmp_path,
                                   results, data)  # fmt: skip
    index = json.loads((folder / "index.json").read_text())
    files = [f for entry in index for f in entry["files"]]
    assert len(files) == len(set(files)) == 9
    assert len({f.lower() for f in files}) == 9  # also on case-insensitive disks
    assert all((folder / f).is_file() for f in files)
