"""The runnable tasks end to end, and what a run says when a flip cannot exist."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mmargin
from mmargin import load_task, run_task
from mmargin.plugin import Status, Threshold
from mmargin.testing import run_cli as main
from mmargin_tabular import models
from mmargin_tabular.distances import make_distance
from mmargin_tabular.schema import parse_schema
from mmargin_tabular.space import TabularSpace

TASKS = sorted((Path(__file__).parents[3] / "tasks").glob("tabular-*.toml"))


def test_there_are_tasks_for_the_three_model_families() -> None:
    names = {t.stem for t in TASKS}
    assert {"tabular-fraud-logreg", "tabular-fraud-gbm", "tabular-fraud-mlp"} <= names


@pytest.mark.parametrize("path", TASKS, ids=[t.stem for t in TASKS])
def test_task_runs_and_writes_changed_features(path: Path, tmp_path: Path) -> None:
    task = load_task(path)
    assert task.goal == "threshold" and task.goal_options["threshold"] == 0.3
    out = run_task(task, out=tmp_path, samples=6)
    assert len(out.results) == 6 and not any(r.status is Status.ERROR for r in out.results)
    flipped = [r for r in out.results if r.status is Status.FLIPPED]
    assert flipped, [r.message for r in out.results]
    for r in flipped:
        assert r.verified and r.queries <= task.budget + 1  # + the exact point's re-check
        assert r.extras["cost"] == pytest.approx(r.margin, rel=1e-4)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    record = next(json.loads(line) for line in lines if '"flipped"' in line)
    change = record["extras"]["changes"][0]
    assert {"feature", "before", "after", "cost"} <= set(change)


def _schema(only: set[str]) -> TabularSpace:
    import tomllib
    from importlib import resources

    raw = tomllib.loads(resources.files("mmargin_tabular").joinpath("schemas/fraud.toml")
                        .read_text(encoding="utf-8"))  # fmt: skip
    for name, spec in raw["features"].items():
        spec["mutable"] = name in only
    return TabularSpace(schema=parse_schema(raw))


@pytest.mark.parametrize(
    ("mutable", "reason"),
    [(set(), "no flip exists in this space (proven by exact:schema: no feature of this row "
              "may change)"),
     ({"card_country"}, "no flip exists in this space (proven by exact:tree-milp)")],
)  # fmt: skip
def test_impossible_flips_are_not_flipped_with_the_reason(test_rows, flagged, mutable,
                                                          reason) -> None:  # fmt: skip
    x, y = test_rows
    model = models.fraud_gbm()
    idx = flagged(model.predict_proba(x.astype(np.float64))[:, 1], y, n=3)
    space = _schema(mutable)
    results = mmargin.evaluate(
        model,
        x[idx],
        y[idx],
        make_distance("l1", space.schema),
        space=space,
        goal=Threshold(0.3),
        budget=200,
    )  # type: ignore[arg-type]
    for r in results:
        assert r.status is Status.NOT_FLIPPED and r.message == reason
        assert r.lower_bound == float("inf")


def test_bad_tasks_fail_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = (TASKS[0].read_text(encoding="utf-8")
            .replace('factory = "fraud_gbm"', 'factory = "sklearn.svm:LinearSVC"')
            .replace('factory = "fraud_logreg"', 'factory = "sklearn.svm:LinearSVC"'))  # fmt: skip
    bad = tmp_path / "bad.toml"
    bad.write_text(text, encoding="utf-8")
    assert main(["run", str(bad), "--quiet", "--allow-import", "sklearn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "LinearSVC is not a fitted classifier" in err
    bad.write_text(
        TASKS[0].read_text(encoding="utf-8").replace('schema = "fraud"', 'schema = "nope"', 1)
    )
    assert main(["run", str(bad), "--quiet"]) == 2
    assert "not a built-in schema" in capsys.readouterr().err
