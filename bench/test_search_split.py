"""``bench/search_split.py``: it refuses the evaluation set, and its split adds up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import search_split


def test_evaluation_models_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert search_split.main(["--models", "eval_mlp"]) == 2
    assert "tuning models only" in capsys.readouterr().err


def test_the_split_of_a_small_search_adds_up() -> None:
    r = search_split.split("digits_mlp", "l2", samples=4, budget=40)
    assert r["forward_s"] > 0 and r["bare_s"] > 0
    # the search's own time holds its model calls' forward time; the engine is the rest
    assert r["search_s"] >= r["forward_s"]
    assert r["engine_s"] == pytest.approx(r["search_s"] - r["bare_s"])
    assert r["engine_share"] == pytest.approx(r["engine_s"] / r["search_s"])
