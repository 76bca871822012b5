"""Task files and the CLI: malformed tasks fail in one line naming the field; a good task
runs end to end and writes every artefact the issue lists."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin.cli import main
from mmargin.errors import InvalidTaskError
from mmargin.resolve import resolve
from mmargin.tasks import load_task, parse_task

GOOD = """
[task]
name = "toy"
samples = 6
batch_size = 4
out = "{out}"

[model]
factory = "toy_linear"

[data]
loader = "npz"
path = "{data}"

[space]
name = "box"
lower = -3.0
upper = 3.0

[distance]
name = "{distance}"

[search]
budget = 300

[report]
epsilons = [0.1, 0.5]
"""


@pytest.fixture
def toy(tmp_path: Path) -> dict[str, str]:
    from mmargin.testing import toy_linear

    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0)).clamp(-2, 2)
    y = toy_linear()(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # one misclassified sample
    data = tmp_path / "toy.npz"
    np.savez(data, x=x.numpy(), y=y.numpy())
    return {"data": str(data), "out": str(tmp_path / "run"), "distance": "l2"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.toml"
    path.write_text(text)
    return path


def test_good_task_runs_end_to_end_and_writes_artifacts(
    tmp_path: Path, toy: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, GOOD.format(**toy))
    assert main(["run", str(path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "clean accuracy" in printed and "robust accuracy @ 0.5" in printed
    out = Path(toy["out"])
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    required = {"sample", "label", "adv_label", "margin", "lower_bound", "distance",
                "verified", "queries", "seconds", "status"}  # fmt: skip
    assert all(required <= set(r) for r in rows)
    assert rows[0]["status"] == "misclassified" and rows[0]["margin"] == 0.0
    assert all(r["status"] == "flipped" and r["verified"] for r in rows[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clean_accuracy"] == pytest.approx(5 / 6)
    assert summary["attack_success"] == 1.0
    resolved = load_task_copy(out / "task.resolved.toml")
    assert resolved["search"]["budget"] == 300 and "torch" in resolved["versions"]
    with np.load(out / "adversarials.npz") as advs:
        assert sorted(advs.files) == [f"toy-{i}" for i in range(1, 6)]  # flipped ones only


def load_task_copy(path: Path) -> dict:
    import tomllib

    return tomllib.loads(path.read_text())


def test_cli_overrides_samples_and_out(tmp_path: Path, toy: dict[str, str]) -> None:
    path = _write(tmp_path, GOOD.format(**toy))
    assert main(["run", str(path), "--quiet", "--samples", "2", "--out", str(tmp_path / "o")]) == 0
    assert len((tmp_path / "o" / "results.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (("[search]", "[search]\nbudgett = 3"), "search.budgett", "unknown key"),
        (("budget = 300", 'budget = "many"'), "search.budget", "positive integer"),
        (("budget = 300", "budget = 0"), "search.budget", "positive integer"),
        (('name = "toy"', "name = 3"), "task.name", "expected a string"),
        (("[report]", "[reporting]"), "reporting", "unknown table"),
        (('loader = "npz"', 'loader = "nope"'), "data.loader", "unknown dataset 'nope'"),
        (('name = "box"', 'name = "sphere"'), "space.name", "unknown space 'sphere'"),
        (("lower = -3.0", "lowr = -3.0"), "space", "unexpected keyword argument 'lowr'"),
        (('factory = "toy_linear"', 'factory = "nowhere.mod:f"'),
         "model.factory", "package 'nowhere' is not allowed"),
        (('factory = "toy_linear"', 'factory = "toy_linearr"'),
         "model.factory", "not a registered model"),
        (('factory = "toy_linear"', 'factory = "mmargin.testing:toy_linear"'),
         "model.factory", "registered model 'toy_linear' may be what you want"),
        (("[model]", '[model]\nweights = "missing.pt"'), "model.weights", "file not found"),
        (("[search]", '[goal]\nkind = "targeted"\n[search]'), "goal.target", "needs a target"),
    ],
)  # fmt: skip
def test_malformed_tasks_name_the_field(
    tmp_path: Path, toy: dict[str, str], edit: tuple[str, str], field: str, words: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    text = GOOD.format(**toy).replace(*edit)
    path = _write(tmp_path, text)
    with pytest.raises(InvalidTaskError) as info:
        resolve(load_task(path))
    assert info.value.field == field and words in str(info.value)
    assert main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mmargin: error: {field}") and "\n" not in err
    assert "Traceback" not in err


def test_missing_data_file_and_bad_toml(tmp_path: Path, toy: dict[str, str]) -> None:
    bad = _write(tmp_path, GOOD.format(**{**toy, "data": str(tmp_path / "nope.npz")}))
    with pytest.raises(InvalidTaskError, match="data: no such file"):
        resolve(load_task(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text("[task\nname=1")
    with pytest.raises(InvalidTaskError, match="not valid TOML"):
        load_task(broken)
    with pytest.raises(InvalidTaskError, match="task file not found"):
        load_task(tmp_path / "absent.toml")


def test_parse_task_fills_defaults() -> None:
    task = parse_task({"model": {"factory": "a.b:c"}, "data": {"loader": "npz"},
                       "space": {"name": "box"}, "distance": {"name": "l2"}})  # fmt: skip
    assert task.budget == 1000 and task.goal == "untargeted" and task.exact == "auto"
    assert not math.isnan(task.batch_size)


def test_help_and_import_do_not_import_torch() -> None:
    code = (
        "import sys, mmargin, mmargin.cli\n"
        "try:\n    mmargin.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'mmargin_image' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage: mmargin" in done.stdout


def test_shipped_tasks_parse(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    tasks = sorted(root.joinpath("tasks").glob("*.toml"))
    assert len(tasks) >= 5
    for path in tasks:  # out is relative to the task file: runs/ at the repository root
        task = load_task(path)
        assert task.out is not None and Path(task.out).parent == root / "runs", path


def test_plugins_listing_into_a_closed_pipe_exits_quietly() -> None:
    """``mmargin plugins | head -1``: the reader leaves before the listing is printed (loading
    the plugins takes seconds); no traceback, status 0."""
    code = "import sys; from mmargin.cli import main; sys.exit(main(['plugins']))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.close()  # nobody reads: every write the listing makes hits a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err
