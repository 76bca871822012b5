"""The example plugin end to end: registered with the host, searched by the engine through
``mmargin.evaluate``, run from a task file that names its loader, space, distance and
model, with its report and artefact hooks.

Oracle: every sample of the data set lies in the space, so the distance from ``x`` to the
nearest sample the model puts in another class is an upper bound on ``x``'s margin."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import mmargin
from mmargin.plugin import Status
from mmargin.testing import plugin_manager, registered
from mmargin_series import plugin
from mmargin_series.data import load_sines
from mmargin_series.model import sine_filters


@pytest.fixture(scope="module")
def host() -> Iterator[None]:
    """The example registered as a plugin for this module's tests (unless it is installed,
    and so already loaded through its entry point)."""
    if plugin_manager().has_plugin("series"):
        yield
        return
    with registered(plugin, name="series"):
        yield


def test_evaluate_finds_verified_margins_below_the_nearest_other_class(host: None) -> None:
    data = load_sines(n=30, seed=5)
    model = sine_filters()
    results = mmargin.evaluate(model, data.x, data.y, "energy", space="series", budget=300)
    with torch.no_grad():
        predicted = model(torch.as_tensor(data.x)).argmax(dim=1).numpy()
    x = np.asarray(data.x, dtype=np.float64)
    flipped = [r for r in results if r.status is Status.FLIPPED]
    assert len(flipped) >= 25
    for i, r in enumerate(results):
        if r.status is not Status.FLIPPED:
            continue
        adv = np.asarray(r.adversarial, dtype=np.float64)
        assert r.verified and r.queries <= 300
        assert np.linalg.norm(adv - x[i]) == pytest.approx(r.margin, rel=1e-4)
        with torch.no_grad():
            again = model(torch.as_tensor(adv[None], dtype=torch.float32)).argmax(1).item()
        assert again != data.y[i]
        others = (predicted != predicted[i]) & (predicted == data.y)
        nearest = np.linalg.norm(x[others] - x[i], axis=1).min()
        assert r.margin <= nearest * (1 + 1e-6)
        assert r.extras["peak_change"] == pytest.approx(np.abs(adv - x[i]).max(), rel=1e-5)
        assert 0 <= r.extras["peak_step"] < x.shape[1]


def test_a_window_keeps_the_rest_of_the_series(host: None) -> None:
    data = load_sines(n=6, seed=6)
    results = mmargin.evaluate(sine_filters(), data.x, data.y, "energy", space="series",
                               space_options={"window": [20, 44]}, budget=300)  # fmt: skip
    for i, r in enumerate(results):
        if r.status is Status.FLIPPED:
            delta = np.asarray(r.adversarial) - data.x[i]
            assert np.abs(delta[:20]).max() == 0 and np.abs(delta[44:]).max() == 0
            assert r.extras["peak_step"] in range(20, 44)


TASK = """
[task]
name = "series-energy"
samples = 12

[model]
factory = "sine_filters"

[data]
loader = "sines"
n = 12
seed = 3

[space]
name = "series"

[distance]
name = "energy"

[search]
budget = 200
"""


def test_a_task_file_runs_and_writes_the_plugins_artefacts(host: None, tmp_path: Path) -> None:
    task = tmp_path / "series.toml"
    task.write_text(TASK)
    out = mmargin.run_task(task, out=tmp_path / "run")
    results = out.results
    assert len(results) == 12
    flipped = [r for r in results if r.status is Status.FLIPPED]
    assert flipped and all(math.isfinite(r.margin) for r in flipped)
    with open(tmp_path / "run" / "series" / "adversarials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["sample"] for r in rows} == {r.sample for r in flipped}
    clean = {r["sample"]: r for r in rows if r["kind"] == "clean"}
    assert len(clean) == len(flipped)
    first = flipped[0]
    values = np.array(clean[first.sample]["values"].split(), dtype=np.float64)
    ids = list(load_sines(n=12, seed=3).ids)
    assert np.allclose(values, load_sines(n=12, seed=3).x[ids.index(first.sample)], atol=1e-5)
    # the report's gallery shows the plugin's own view, drawn from the stored clean input
    stored = np.load(tmp_path / "run" / "inputs.npz")[first.sample]
    np.testing.assert_array_equal(stored, load_sines(n=12, seed=3).x[ids.index(first.sample)])
    page = mmargin.write_report(tmp_path / "run").read_text()
    for kind in ("clean", "adversarial"):
        found = re.findall(rf'<polyline class="{kind}"[^>]* points="([^"]*)"', page)
        assert found and all(len(points.split()) == stored.size for points in found)
