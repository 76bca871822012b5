"""The image benchmark's timing at the peer's quality (``image_timing.matched_timing``) on
hand-made rows, with the stopwatch replaced: which budget of mmargin is timed, against
which peer at which budget, and what is recorded when no budget reaches the peer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import image_report
import image_timing
from peers import METHODS


def _row(method: str, optimality: float, seconds: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "library": "mmargin" if method == "mmargin" else method.split(".")[0],
        "attack": method.split(".")[-1].upper(),
        "status": "ok",
        "seconds": seconds,
        "optimality": optimality,
        **extra,
    }


def _runs() -> dict[int, list[dict[str, Any]]]:
    return {
        100: [_row("mmargin", 0.90), _row("foolbox.deepfool", 0.93, 0.3)],
        250: [_row("mmargin", 0.96), _row("foolbox.deepfool", 0.93, 0.3)],
        1000: [
            _row("mmargin", 0.999, 3.0),
            _row("foolbox.deepfool", 0.93, 0.3),  # the fastest >= 0.9: the one timed
            _row("adv_lib.alma", 0.98, 2.0),
            _row("adv_lib.ddn", 0.5, 0.1),  # faster, but below 0.9
        ],
    }


def _args(**extra: Any) -> argparse.Namespace:
    base = {"timing_repeats": 3, "timing_samples": 2, "matched_timing": True, "seed": 0}
    return argparse.Namespace(methods=["mmargin", "foolbox.deepfool"], **{**base, **extra})


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every timed run as (method key, budget); mmargin takes budget / 1000 s, a peer 0.5 s."""
    seen: list[tuple[str, int]] = []
    ours = METHODS["mmargin"]

    def fake(method: Any, norm: str, budget: int, *rest: Any) -> float:
        key = "mmargin" if method is ours else next(k for k, m in METHODS.items() if m is method)
        seen.append((key, budget))
        return budget / 1000 if key == "mmargin" else 0.5

    monkeypatch.setattr(image_timing, "_timed", fake)
    return seen


def _time(runs: dict[int, list[dict[str, Any]]], **extra: Any) -> None:
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    image_timing.matched_timing(runs, "l2", 1000, _args(**extra), None, x, y)


def test_matched_budget_is_the_smallest_reaching_the_figure() -> None:
    runs = _runs()
    assert image_timing.matched_budget(runs, 0.93) == 250
    assert image_timing.matched_budget(runs, 0.90) == 100  # equal counts
    assert image_timing.matched_budget(runs, 0.999) == 1000
    assert image_timing.matched_budget(runs, 0.9995) is None
    runs[250][0]["status"] = "error"
    assert image_timing.matched_budget(runs, 0.93) == 1000


def test_mmargin_at_the_matched_budget_against_the_peer_at_the_main_one(
    calls: list[tuple[str, int]],
) -> None:
    runs = _runs()
    _time(runs)
    # three pairs, alternating which goes first; the peer always at the main budget
    assert calls == [
        ("mmargin", 250), ("foolbox.deepfool", 1000),
        ("foolbox.deepfool", 1000), ("mmargin", 250),
        ("mmargin", 250), ("foolbox.deepfool", 1000),
    ]  # fmt: skip
    record = runs[1000][1]["matched_timing"]
    assert record["mmargin_budget"] == 250
    assert record["mmargin_optimality"] == pytest.approx(0.96)
    assert record["method_optimality"] == pytest.approx(0.93)
    assert record["median_ratio"] == pytest.approx(0.25 / 0.5)
    assert record["samples"] == 2
    assert not any("matched_timing" in r for r in runs[1000][2:])


def test_at_the_main_budget_the_paired_figure_is_reused(calls: list[tuple[str, int]]) -> None:
    runs = _runs()
    runs[250][0]["optimality"] = 0.92  # only the main budget reaches 0.93
    runs[1000][1]["paired_timing"] = {"median_ratio": 1.7, "samples": 2}
    _time(runs)
    assert calls == []  # nothing timed again
    record = runs[1000][1]["matched_timing"]
    assert record["mmargin_budget"] == 1000 and record["median_ratio"] == 1.7
    assert record["same_as_paired"] is True


def test_no_budget_reaches_the_peer(calls: list[tuple[str, int]]) -> None:
    runs = _runs()
    for rows in runs.values():
        rows[0]["optimality"] = 0.5
    _time(runs)
    assert calls == []
    assert runs[1000][1]["matched_timing"] == {"mmargin_budget": None, "method_optimality": 0.93}
    text = image_report._matched_cell(image_report._matched(runs[1000]))
    assert text == "– (no budget reaches foolbox DEEPFOOL)"


def test_switched_off_or_no_qualifying_peer_times_nothing(calls: list[tuple[str, int]]) -> None:
    runs = _runs()
    _time(runs, matched_timing=False)
    _time(runs, timing_repeats=0)
    runs[1000][1]["optimality"] = 0.8
    runs[1000][2]["optimality"] = 0.85
    _time(runs)
    assert calls == []
    assert not any("matched_timing" in r for r in runs[1000])


def test_a_crash_in_the_timing_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> float:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(image_timing, "_timed", boom)
    runs = _runs()
    _time(runs)
    peer = runs[1000][1]
    assert "matched_timing" not in peer
    assert peer["matched_timing_error"] == "RuntimeError: out of memory"
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    image_timing.paired_timing(runs[1000], ["foolbox.deepfool"], "l2", 1000, _args(), None, x, y)
    assert "paired_timing" not in peer
    assert peer["paired_timing_error"] == "RuntimeError: out of memory"


def test_the_headline_shows_the_ratio_and_the_budget(calls: list[tuple[str, int]]) -> None:
    runs = _runs()
    _time(runs)
    assert image_report._matched_cell(image_report._matched(runs[1000])) == "0.50 (@250)"
    assert image_report._matched_cell(image_report._matched(runs[100])) == "–"
