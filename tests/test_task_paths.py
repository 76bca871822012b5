"""Paths like a user expects: a task's relative paths resolve against the task file (not the
working directory), its folder's modules are model factories, and the ``task.resolved.toml``
a run writes runs again to the same results."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin.cli import main
from mmargin.taskfile import dump_toml, task_tables
from mmargin.tasks import FIELDS, load_task, parse_task

TASK = """
[task]
name = "paths"
samples = 5
out = "run"

[model]
factory = "{factory}"
{weights}

[data]
loader = "npz"
path = "data/toy.npz"

[space]
name = "box"
lower = -3.0
upper = 3.0

[distance]
name = "l2"

[goal]
kind = "targeted"
target = 2

[search]
budget = 120
exact = "never"
"""

HELPER = "SCALE = 2.0\n"
LOCAL = """
import torch

from helper_h13 import SCALE  # a sibling module, imported while the factory module loads
from mmargin.testing import toy_linear


def build() -> torch.nn.Module:
    model = toy_linear()
    with torch.no_grad():
        model.weight.mul_(SCALE)
    return model
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``tmp/project/``: a task, ``data/toy.npz`` and ``weights/w.pt`` beside it."""
    from mmargin.testing import toy_linear

    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "weights").mkdir()
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(5)).clamp(-2, 2)
    model = toy_linear()
    np.savez(folder / "data" / "toy.npz", x=x.numpy(), y=model(x).argmax(1).numpy())
    torch.save(model.state_dict(), folder / "weights" / "w.pt")
    return folder


def _rows(out: Path) -> list[dict]:
    keep = ("sample", "label", "adv_label", "margin", "status", "queries", "verified")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in keep} for r in rows]


def test_relative_paths_resolve_against_the_task_file_not_the_cwd(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = project / "task.toml"
    task.write_text(TASK.format(factory="toy_linear", weights='weights = "weights/w.pt"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    parsed = load_task("../project/task.toml")
    assert parsed.data is not None and parsed.model is not None
    assert parsed.data.options["path"] == str(project / "data" / "toy.npz")
    assert parsed.model.weights == str(project / "weights" / "w.pt")
    assert main(["run", "../project/task.toml", "--quiet"]) == 0
    assert len(_rows(project / "run")) == 5 and not (elsewhere / "run").exists()


def test_a_module_in_the_task_folder_imports_its_siblings(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "helper_h13.py").write_text(HELPER)
    (project / "local_h13.py").write_text(LOCAL)
    (project / "task.toml").write_text(TASK.format(factory="local_h13:build", weights=""))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(project / "task.toml"), "--quiet"]) == 0
    assert len(_rows(project / "run")) == 5


def test_the_resolved_task_runs_again_to_the_same_results(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / "task.toml").write_text(
        TASK.format(factory="toy_linear", weights='weights = "weights/w.pt"')
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(project / "task.toml"), "--quiet"]) == 0
    resolved = project / "run" / "task.resolved.toml"
    written = tomllib.loads(resolved.read_text())
    assert "torch" in written["versions"] and written["search"]["budget"] == 120
    again = tmp_path / "again"
    assert main(["run", str(resolved), "--quiet", "--out", str(again)]) == 0
    first = _rows(project / "run")
    assert any(r["status"] == "flipped" for r in first)
    assert _rows(again) == first


def test_task_tables_invert_parse_task(tmp_path: Path) -> None:
    raw = {
        "task": {"name": 'odd "name"\nwith ünïcode', "seed": 7, "out": "o"},
        "model": {"factory": "toy_linear", "adapter_options": {"mean": [0.5], "std": [2.0]},
                  "options": {"weights_path": "w.pt", "depth": 3}},
        "data": {"loader": "npz", "path": "d.npz", "limit": 4},
        "space": {"name": "box", "mask": [1.0, 0.0, 1.0, 1.0]},
        "distance": {"name": "l1"},
        "goal": {"kind": "threshold", "threshold": 0.25, "positive": 1},
        "search": {"strategy": "decision", "budget": 33},
        "report": {"epsilons": [0.1, 2.0]},
    }  # fmt: skip
    task = parse_task(raw, base=tmp_path)
    assert task.model is not None and task.model.options["weights_path"] == str(tmp_path / "w.pt")
    again = parse_task(tomllib.loads(dump_toml(task_tables(task, FIELDS))), base=tmp_path / "x")
    assert again == task.__class__(**{**task.__dict__, "base": tmp_path / "x"})
