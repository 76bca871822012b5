"""``exact_ratio.py --stored``: the search re-scored against a committed record's proven
MILP margins, without solving any MILP."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import exact_ratio
import zoo

BENCH = Path(__file__).resolve().parent

POINTS = 4


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    """The shipped digits MLP's record, cut to its first :data:`POINTS` points."""
    full = json.loads((BENCH / "results" / "exact_ratio_digits_mlp.json").read_text())
    cut = copy.deepcopy(full)
    cut["points"] = POINTS
    for rec in cut["norms"]:
        rec["rows"] = rec["rows"][:POINTS]
    return cut


def test_stored_ratios_divide_the_search_by_the_proven_margins(record: dict[str, Any]) -> None:
    model = zoo.load(record["model"])
    trimmed = copy.deepcopy(record)
    dropped = trimmed["norms"][0]["rows"][1]
    dropped["optimal"] = False  # a point the MILP did not prove leaves the ratios
    got = exact_ratio.stored_ratios(model, trimmed, ["linf", "l1"], 1000, 0)
    assert set(got) == {"linf", "l1"}
    for rec in trimmed["norms"]:
        ratios = got[rec["norm"]]
        proven = [r["id"] for r in rec["rows"] if r["optimal"]]
        assert [i for _, i in ratios] == proven
        # the oracle relation (never below a proven minimum) and the bound
        assert all(1 - exact_ratio.TOL <= q <= 1.02 for q, _ in ratios), ratios
    assert dropped["id"] not in [i for _, i in got[trimmed["norms"][0]["norm"]]]
    line = exact_ratio.summary(got["l1"])
    assert line.startswith(f"points {len(got['l1'])} ") and "below 0" in line


def test_a_record_of_other_points_is_refused(record: dict[str, Any]) -> None:
    model = zoo.load(record["model"])
    other = copy.deepcopy(record)
    rows = other["norms"][0]["rows"]
    rows[0], rows[1] = rows[1], rows[0]
    with pytest.raises(SystemExit, match="not this model's"):
        exact_ratio.stored_ratios(model, other, [other["norms"][0]["norm"]], 1000, 0)


@pytest.mark.parametrize(
    ("name", "norm", "point"),
    [
        # the exact flip in a class no probe tried (the L-inf ``next`` probe)
        ("exact_ratio_tune_digits_mlp.json", "linf", "digits-test-0124"),
        # the right class on the wrong support (the polish's fixed-point exit)
        ("exact_ratio_tune_digits_mlp_l1_300.json", "l1", "digits-test-0499"),
    ],
)
def test_the_tuning_mlps_former_worst_misses_are_within_one_percent(
    name: str, norm: str, point: str
) -> None:
    """Two points of the second tuning digits MLP the search once missed by 2.1 % (L∞) and
    14 % (L1): searched alone at 1000 passes, within 1 % above their proven minima."""
    record = json.loads((BENCH / "results" / name).read_text())
    model = zoo.load(record["model"])
    x, y, ids = exact_ratio.load_points(model, record["points"])
    (row,) = [r for rec in record["norms"] if rec["norm"] == norm
              for r in rec["rows"] if r["id"] == point]  # fmt: skip
    assert row["optimal"]
    i = ids.index(point)
    found = exact_ratio.found_margins(model, x[i : i + 1], y[i : i + 1], norm, 1000, 0)
    assert 1 - exact_ratio.TOL <= float(found[0]) / row["exact"] <= 1.01
