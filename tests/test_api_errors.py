"""Run-level mistakes stop the run in one line with a non-zero exit: a plugin that fails to
load, a model that does not fit the data, a normalisation or target that cannot be right,
a device or seed that does not exist. Per-sample trouble stays per sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin import plugins
from mmargin.cli import main
from mmargin.errors import PluginError
from mmargin.hookspecs import hookimpl

TASK = """
[task]
name = "errors"
out = "{out}"
{task}

[model]
factory = "{factory}"
{model}

[data]
loader = "npz"
path = "{data}"

[space]
name = "box"

[distance]
name = "l2"

[search]
budget = 40
exact = "never"
{extra}
"""

MODELS = """
import torch


def five() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(5, 3)


def nine() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(9, 3)
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    x = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    np.savez(tmp_path / "nine.npz", x=x.numpy(), y=np.arange(6) % 3)
    (tmp_path / "h3_error_models.py").write_text(MODELS)
    return tmp_path


def _run(folder: Path, *args: str, factory: str = "h3_error_models:nine", task: str = "",
         model: str = "", extra: str = "") -> int:  # fmt: skip
    path = folder / "task.toml"
    path.write_text(TASK.format(out=folder / "run", data=folder / "nine.npz", factory=factory,
                                task=task, model=model, extra=extra))  # fmt: skip
    return main(["run", str(path), "--quiet", *args])


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmargin: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_the_fixture_task_runs(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(folder) == 0
    assert "clean accuracy" in capsys.readouterr().out


def test_a_model_for_five_features_given_nine_stops_the_run(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(folder, factory="h3_error_models:five") == 2
    err = _one_line(capsys)
    assert "5" in err and "9" in err, err
    assert not (folder / "run" / "results.jsonl").exists()


def test_a_target_class_the_model_does_not_have_stops_the_run(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(folder, extra='[goal]\nkind = "targeted"\ntarget = 7') == 2
    assert "7" in _one_line(capsys)
    assert not (folder / "run" / "results.jsonl").exists()
    assert _run(folder, extra='[goal]\nkind = "targeted"\ntarget = 2') == 0


@pytest.mark.parametrize(
    ("options", "words"),
    [("adapter_options = { mean = [0.1, 0.2] }", "model.adapter_options.mean: expected one "
      "value or 9"),
     ("adapter_options = { std = [1.0, 2.0, 3.0] }", "model.adapter_options.std"),
     ("adapter_options = { std = 0.0 }", "model.adapter_options.std: a standard deviation of 0"),
     ("adapter_options = { median = 1.0 }", "model.adapter_options")],
)  # fmt: skip
def test_normalisation_that_cannot_fit_the_data_is_caught_before_the_search(
    folder: Path, options: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(folder, model=f'adapter = "torch"\n{options}') == 2
    assert words in _one_line(capsys)


@pytest.mark.parametrize("device", ["gpu9", "cuda:x", "CPU", ""])
def test_a_device_that_cannot_exist_is_one_line(
    folder: Path, device: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(folder, task=f'device = "{device}"') == 2
    assert "task.device" in _one_line(capsys)
    assert _run(folder, "--device", device) == 2
    assert "--device" in _one_line(capsys)


def test_cuda_without_a_gpu_is_one_line(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _run(folder, "--device", "cuda") == 2
    assert "--device: 'cuda' asked for, but CUDA is not available" in _one_line(capsys)
    assert _run(folder, task='device = "cuda:0"') == 2
    assert "task.device" in _one_line(capsys)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cuda_index_beyond_the_machine_is_one_line(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(folder, "--device", "cuda:99") == 2
    assert "CUDA device(s)" in _one_line(capsys)


@pytest.mark.parametrize("seed", [2**32, 2**40 + 1, 2**63 - 1])
def test_large_seeds_work(folder: Path, seed: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(folder, task=f"seed = {seed}") == 0
    assert "clean accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("seed", ["-1", "-9223372036854775808", "1.5", '"zero"'])
def test_bad_seeds_are_one_line(
    folder: Path, seed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(folder, task=f"seed = {seed}") == 2
    assert "task.seed" in _one_line(capsys)


def test_a_seed_beyond_63_bits_is_refused() -> None:
    from mmargin.errors import InvalidTaskError
    from mmargin.tasks import parse_task

    raw = {"task": {"seed": 2**63}, "space": {"name": "box"}, "distance": {"name": "l2"}}
    with pytest.raises(InvalidTaskError, match=r"task.seed: expected an integer in \[0, 2\*\*63"):
        parse_task(raw)


@pytest.fixture
def broken_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution whose ``mmargin`` entry point raises on import."""
    site = tmp_path / "site"
    info = site / "h3_broken_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: h3-broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mmargin]\nbroken = h3_broken_plugin\n")
    (site / "h3_broken_plugin.py").write_text("raise RuntimeError('cannot find libfoo.so\\n')\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_pm", None)
    monkeypatch.setattr(plugins, "_registries", None)


@pytest.mark.usefixtures("broken_dist")
def test_a_plugin_that_raises_on_import_stops_every_command(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PluginError, match="plugin 'broken' failed to load"):
        plugins.manager()
    assert _run(folder) == 2
    err = _one_line(capsys)
    assert "plugin 'broken' failed to load (RuntimeError: cannot find libfoo.so)" in err
    assert "MMARGIN_DISABLE_PLUGINS=broken" in err
    assert main(["plugins"]) == 2
    _one_line(capsys)
    monkeypatch.setenv("MMARGIN_DISABLE_PLUGINS", "broken")
    assert _run(folder) == 0  # blocked: the rest of the house works
    monkeypatch.setattr(plugins, "_pm", None)
    monkeypatch.setattr(plugins, "_registries", None)


def test_a_plugin_whose_registration_raises_is_named() -> None:
    class Buggy:
        @hookimpl
        def mmargin_register_models(self, register: object) -> None:
            raise KeyError("oops")

    with (
        plugins.registered(Buggy(), name="buggy"),
        pytest.raises(PluginError, match="plugin 'buggy' failed while registering its models"),
    ):
        plugins.registries()
