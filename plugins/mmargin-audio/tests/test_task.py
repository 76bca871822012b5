"""The audio task files end to end: results with dB extras, and WAV files beside them."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mmargin import load_task, run_task
from mmargin.plugin import Status
from mmargin.testing import run_cli as main
from mmargin_audio.wav import read_pcm16

TASKS = Path(__file__).resolve().parents[3] / "tasks"


@pytest.mark.parametrize("name", ["audio-digits-linf", "audio-digits-l2", "audio-digits-band-l2"])
def test_task_files_parse_and_name_installed_components(name: str) -> None:
    task = load_task(TASKS / f"{name}.toml")
    assert task.space.name == "waveform" and task.data.name == "spoken-digits"
    assert task.budget - task.report_passes <= 1000 and task.samples == 120


def test_linf_task_writes_results_and_wavs(tmp_path: Path) -> None:
    task = replace(
        load_task(TASKS / "audio-digits-linf.toml"),
        budget=330,  # 120 for the search, 210 set aside for the report (noise baseline)
        samples=8,
        batch_size=8,
        out=str(tmp_path),
    )
    output = run_task(task)
    flipped = [r for r in output.results if r.status is Status.FLIPPED]
    assert len(flipped) >= 6
    for r in flipped:
        assert r.extras["db_x"] < 0 and r.extras["snr_db"] > 0 and r.extras["dbfs"] < 0
        assert r.extras["db_x"] == pytest.approx(
            20 * math.log10(r.margin / r.extras["peak_x"]), abs=1e-3
        )
        assert {"pcm16_flipped", "below_pcm16_step", "noise_snr_db", "fragility_db"} <= set(
            r.extras
        )
    audio = tmp_path / "audio"
    index = json.loads((audio / "index.json").read_text())
    assert [e["sample"] for e in index] == [r.sample for r in flipped]
    first = flipped[0]
    adv, rate = read_pcm16(audio / index[0]["files"][1])
    assert rate == 8000 and adv.shape == (1, 8000)  # (channels, samples)
    # the file holds the 16-bit version the report verified: the search's adversarial
    # rounded to the nearest code (half a step) or away from the clean clip (under a step)
    assert index[0]["adversarial"] and first.extras["saved_scale"] == 1.0
    step = 1 / 65536 if first.extras["saved_rounding"] == "nearest" else 1 / 32768
    assert np.abs(adv[0] - np.asarray(first.adversarial)).max() <= step + 1e-9
    summary = json.loads((audio / "summary.json").read_text())
    assert summary["flipped"] == len(flipped) and summary["data"]["split"] == "test"
    assert summary["median_db_x"] < 0 and 0 <= summary["pcm16_flip_survives"] <= 1
    assert (tmp_path / "results.jsonl").is_file()


def test_cli_runs_the_l2_task_on_two_clips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            str(TASKS / "audio-digits-l2.toml"),
            "--samples",
            "2",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "audio-digits-l2" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["space"] == "waveform" for r in rows)
    assert len(list((tmp_path / "audio").glob("*.adv.wav"))) == sum(
        r["status"] == "flipped" for r in rows
    )
