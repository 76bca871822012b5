"""The CLI summary's example lines: the core picks the smallest, median and largest flips
and keeps lines printable; each of the four plugins words them in its own units (grey
levels, edited words, raw feature values, dB); a real run prints them with its units and
unit-free figures, and the same plain text under ``--quiet`` as anywhere else."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from mmargin.cli import main
from mmargin.examples import pick_examples, printable, summary_examples
from mmargin.hookspecs import hookimpl
from mmargin.results import SampleResult, Status, result_record


def _flip(sample: str, margin: float, distance: str = "l2", **fields: Any) -> SampleResult:
    return result_record(sample, 1, Status.FLIPPED, margin=margin, adv_label=0,
                         modality="x", space="x", distance=distance, **fields)  # fmt: skip


def test_picks_are_the_smallest_median_and_largest_flips() -> None:
    margins = [0.7, 0.1, 2.5, 0.4, 1.3]
    results = [_flip(str(i), m) for i, m in enumerate(margins)]
    results.append(result_record("n", 1, Status.NOT_FLIPPED, margin=math.inf, modality="x",
                                 space="x", distance="l2"))  # fmt: skip
    ordered = sorted(margins)
    picked = [r.margin for r in pick_examples(results)]
    assert picked == [ordered[0], ordered[len(ordered) // 2], ordered[-1]]
    assert [r.margin for r in pick_examples(results[:1])] == [margins[0]]
    assert pick_examples(results[-1:]) == []


def test_printable_lines_carry_no_control_characters_and_are_cut() -> None:
    line = printable("evil \x1b[31mred\x1b[0m\nnext line\t" + "x" * 500, limit=80)
    assert "\x1b" not in line and "\n" not in line and "\t" not in line
    assert len(line) == 80 and line.endswith("...")


def test_image_lines_are_in_grey_levels() -> None:
    from mmargin_image.examples import image_line

    r = _flip("a", 0.02, distance="linf", random_margin=0.5, random_ratio=0.04)
    line = image_line(r)
    assert f"{0.02 * 255:.3g}/255" in line and "1/25" in line


def test_text_lines_mark_each_edit_in_the_sentence() -> None:
    from mmargin_text.examples import text_line

    original = "the film is dull and the plot <script>x</script> slow"
    extras = {
        "original_text": original,
        "words_seen": 10,
        "edits": [{"position": 3, "value": "boring"}, {"position": 1, "value": "movie"}],
    }
    line = text_line(_flip("s", 2.0, distance="word-edits", extras=extras))  # fmt: skip
    assert "[dull -> boring]" in line and "[film -> movie]" in line
    assert "2 of 10 words edited" in line and "<script>x</script>" in line


def test_embedding_lines_list_the_projected_token_changes() -> None:
    from mmargin_text.examples import text_line

    extras = {
        "projection": "a fine film",
        "projection_flips": True,
        "token_edits": [{"token": 1, "from": "good", "to": "fine"}],
    }
    line = text_line(_flip("e", 0.4, distance="embedding-l2", extras=extras))  # fmt: skip
    assert "embedding-l2 0.4" in line and "[good -> fine] (still flips)" in line


def test_tabular_lines_list_changed_features_in_raw_units() -> None:
    from mmargin_tabular.examples import feature_diff

    changes = [
        {"feature": "amount", "before": 120.0, "after": 95.5, "cost": 0.2},
        {"feature": "merchant", "before": "retail", "after": "travel", "cost": 1.0},
    ]
    text = feature_diff(changes, {"amount": "USD"})  # fmt: skip
    assert text == "amount 120 -> 95.5 USD, merchant retail -> travel"


def test_audio_lines_are_in_db() -> None:
    from mmargin_audio.examples import audio_line

    extras = {"db_x": -38.25, "snr_db": 31.5, "noise_snr_db": 12.0, "pcm16_flipped": False}
    line = audio_line(_flip("c", 0.01, extras=extras, random_margin=0.1, random_ratio=0.1))
    assert "-38.2 dB re clip peak" in line and "lost in 16-bit WAV" in line
    assert "20.0 dB below random noise" in line  # 20·log10(1 / 0.1)


def test_only_the_space_owner_answers_the_hook() -> None:
    from mmargin.spaces import box

    results = [_flip("a", 0.02, distance="linf")]
    assert summary_examples(box(modality="image"), results)[0].startswith("'a' class 1 -> 0")
    assert summary_examples(box(modality="features"), results) == []


class _Broken:
    """A plugin whose examples hook raises for its own modality."""

    @hookimpl
    def mmargin_summary_examples(self, space: Any, results: Any) -> list[str] | None:
        if getattr(space, "modality", None) != "broken":
            return None
        raise RuntimeError("bad \x1b[31mplugin\x1b[0m")


def test_a_failing_examples_hook_gives_one_plain_line_not_an_exception() -> None:
    from mmargin import plugins
    from mmargin.spaces import box

    pm = plugins.manager()
    pm.register(_Broken(), name="test-broken-examples")
    try:
        lines = summary_examples(box(modality="broken"), [_flip("a", 1.0)])
    finally:
        pm.unregister(name="test-broken-examples")
    assert lines == ["(no examples: RuntimeError: bad [31mplugin [0m)"]


TASK = """
[task]
name = "digits-examples"
samples = 6
batch_size = 6
out = "{out}"

[model]
factory = "digits_mlp"

[data]
loader = "digits"
split = "test"

[space]
name = "image"

[distance]
name = "linf"

[search]
budget = 200
exact = "never"
baseline_passes = 24
"""


def test_a_run_prints_units_unitless_figures_and_examples_as_plain_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "task.toml"
    path.write_text(TASK.format(out=tmp_path / "run"))
    assert main(["run", str(path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed
    assert re.search(r"^units +linf of the image perturbation$", printed, re.MULTILINE)
    assert "examples (smallest, median, largest flip):" in printed and "/255 grey" in printed
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    ratios = sorted(r["random_ratio"] for r in rows if r["random_ratio"] is not None)
    assert ratios and summary["random_ratio_median"] == pytest.approx(
        (ratios[(len(ratios) - 1) // 2] + ratios[len(ratios) // 2]) / 2
    )
    assert summary["normalised_scale"] == "random_margin"
    assert 0 <= summary["normalised_auc"] <= 1
    assert max(r["queries"] for r in rows) <= 200
