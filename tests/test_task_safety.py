"""What a task file can execute: registered models, modules in its own folder, packages the
user allowed outside it. Hostile tasks are refused in one line before anything runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin.cli import main
from mmargin.errors import InvalidTaskError
from mmargin.resolve import resolve
from mmargin.tasks import load_task

TASK = """
[task]
name = "safety"
samples = 3
out = "{out}"

[model]
factory = "{factory}"
{options}

[data]
loader = "npz"
path = "{data}"

[space]
name = "box"

[distance]
name = "l2"

[search]
budget = 60
exact = "never"
"""


@pytest.fixture
def data(tmp_path: Path) -> Path:
    from mmargin.testing import toy_linear

    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    path = tmp_path / "toy.npz"
    np.savez(path, x=x.numpy(), y=toy_linear()(x).argmax(1).numpy())
    return path


def _task(folder: Path, data: Path, factory: str, options: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.toml"
    out = folder / "run"
    path.write_text(TASK.format(factory=factory, options=options, data=data, out=out))
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmargin: error: ") and "\n" not in err and "Traceback" not in err
    return err


HOSTILE = [
    ("os:system", 'options = {{ command = "id > {marker}" }}'),
    ("posix:system", 'options = {{ command = "id > {marker}" }}'),
    ("subprocess:run", 'options = {{ args = "id > {marker}", shell = true }}'),
    ("subprocess:getoutput", 'options = {{ cmd = "id > {marker}" }}'),
    ("builtins:exec", "options = {{ source = \"open('{marker}', 'w')\" }}"),
    ("builtins:eval", "options = {{ source = \"open('{marker}', 'w')\" }}"),
    ("importlib:import_module", 'options = {{ name = "antigravity" }}'),
    ("shutil:rmtree", 'options = {{ path = "{marker}" }}'),
    ("pathlib:Path.write_text", 'options = {{ data = "{marker}" }}'),
    ("os.path:join", ""),
    ("system", 'options = {{ command = "id > {marker}" }}'),
    ("__import__", ""),
    ("mmargin.testing:__builtins__", ""),
]


@pytest.mark.parametrize(("factory", "options"), HOSTILE)
def test_hostile_factories_are_refused_before_anything_runs(
    tmp_path: Path, data: Path, factory: str, options: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "f"
    path = _task(tmp_path / "t", data, factory, options.format(marker=marker))
    assert main(["run", str(path), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "model.factory" in err
    assert not marker.exists(), "the hostile command ran"
    assert not (tmp_path / "t" / "run").exists()
    with pytest.raises(InvalidTaskError, match=r"model\.factory"):
        resolve(load_task(path))
    assert main(["check", str(path)]) == 2
    _one_line_error(capsys)
    assert not marker.exists()


@pytest.mark.parametrize("package", ["os", "subprocess", "builtins", "importlib"])
def test_the_standard_library_cannot_be_allowed(
    tmp_path: Path, data: Path, package: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    marker = tmp_path / "f"
    path = _task(tmp_path, data, f"{package}:system", f'options = {{ command = "id > {marker}" }}')
    assert main(["run", str(path), "--quiet", "--allow-import", package]) == 2
    assert "standard library" in _one_line_error(capsys)
    monkeypatch.setenv("MMARGIN_ALLOW_IMPORTS", package)
    assert main(["run", str(path), "--quiet"]) == 2
    assert "standard library" in _one_line_error(capsys)
    assert not marker.exists()


@pytest.mark.parametrize(
    "grant", ['[model]\nallow_imports = ["os"]', '[task]\nallow_imports = ["os"]']
)
def test_a_task_cannot_grant_itself_permission(
    tmp_path: Path, data: Path, grant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "f"
    path = _task(tmp_path, data, "os:system", f'options = {{ command = "id > {marker}" }}')
    table, line = grant.split("\n")
    path.write_text(path.read_text().replace(table, f"{table}\n{line}", 1))
    assert main(["run", str(path), "--quiet"]) == 2
    assert "allow_imports" in _one_line_error(capsys)
    assert not marker.exists()


LOCAL = """
import torch

from mmargin.testing import toy_linear

IMPORTED = True


def build(scale: float = 1.0) -> torch.nn.Module:
    model = toy_linear()
    with torch.no_grad():
        model.weight.mul_(scale)
    return model
"""


def test_a_module_in_the_task_folder_runs_and_is_shown(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "shared"
    path = _task(folder, data, "h3_local_models:build", "options = { scale = 2.0 }")
    (folder / "h3_local_models.py").write_text(LOCAL)
    assert main(["check", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "model factory 'build' from module 'h3_local_models' in the task's folder" in shown
    assert "nothing was run" in shown and not (folder / "run").exists()
    assert main(["run", str(path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("imports: model factory 'build' from module 'h3_local_models'")
    assert (folder / "run" / "results.jsonl").is_file()


@pytest.mark.parametrize(
    ("source", "attr", "options", "words"),
    [("from os import system", "system", 'command = "id > {marker}"', "not a function"),
     ("from shutil import rmtree", "rmtree", 'path = "{folder}"', "re-exported"),
     ("from subprocess import getoutput", "getoutput", 'cmd = "id > {marker}"', "re-exported")],
)  # fmt: skip
def test_a_local_module_that_re_exports_a_system_call_is_refused(
    tmp_path: Path, data: Path, source: str, attr: str, options: str, words: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    marker = tmp_path / "f"
    folder = tmp_path / "t"
    table = "options = {{ " + options + " }}"
    path = _task(folder, data, f"h3_reexport:{attr}", table.format(marker=marker, folder=folder))
    (folder / "h3_reexport.py").write_text(source + "\n")
    assert main(["run", str(path), "--quiet"]) == 2
    assert words in _one_line_error(capsys)
    assert not marker.exists() and path.exists()


@pytest.mark.parametrize(("name", "words"), [("json", "standard library"),
                                             ("numpy", "shadow the installed module")])  # fmt: skip
def test_a_local_module_may_not_shadow_an_installed_one(
    tmp_path: Path, data: Path, name: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "f"
    folder = tmp_path / "t"
    path = _task(folder, data, f"{name}:build")
    (folder / f"{name}.py").write_text(f"open({str(marker)!r}, 'w')\ndef build(): pass\n")
    assert main(["run", str(path), "--quiet"]) == 2
    assert words in _one_line_error(capsys)
    assert not marker.exists()


PACKAGE = """
from mmargin.testing import toy_linear


def build():
    return toy_linear()
"""


def test_a_package_runs_only_once_the_user_allows_it(
    tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    site = tmp_path / "site"
    (site / "h3_allowed_pkg").mkdir(parents=True)
    (site / "h3_allowed_pkg" / "__init__.py").write_text("")
    (site / "h3_allowed_pkg" / "models.py").write_text(PACKAGE)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MMARGIN_SETTINGS", str(tmp_path / "absent.toml"))
    path = _task(tmp_path / "t", data, "h3_allowed_pkg.models:build")
    assert main(["run", str(path), "--quiet"]) == 2
    assert "--allow-import h3_allowed_pkg" in _one_line_error(capsys)

    assert main(["run", str(path), "--quiet", "--allow-import", "h3_allowed_pkg"]) == 0
    assert "package 'h3_allowed_pkg' allowed by --allow-import" in capsys.readouterr().out

    monkeypatch.setenv("MMARGIN_ALLOW_IMPORTS", "other, h3_allowed_pkg")
    assert main(["check", str(path)]) == 0
    assert "allowed by $MMARGIN_ALLOW_IMPORTS" in capsys.readouterr().out

    monkeypatch.delenv("MMARGIN_ALLOW_IMPORTS")
    settings = tmp_path / "settings.toml"
    settings.write_text('allow_imports = ["h3_allowed_pkg"]\n')
    monkeypatch.setenv("MMARGIN_SETTINGS", str(settings))
    assert main(["run", str(path), "--quiet", "--dry-run"]) == 0
    assert f"allowed by the settings file {settings}" in capsys.readouterr().out


def test_a_registered_model_is_shown_with_its_plugin(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _task(tmp_path, data, "toy_linear")
    assert main(["run", str(path), "--dry-run", "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "model factory 'toy_linear', registered by plugin 'core'" in shown
    assert "'npz' from plugin 'core'" in shown and not (tmp_path / "run").exists()


def test_shipped_tasks_name_registered_models(capsys: pytest.CaptureFixture[str]) -> None:
    tasks = sorted(Path(__file__).resolve().parents[1].joinpath("tasks").glob("*.toml"))
    for path in tasks:
        assert main(["check", str(path)]) == 0, path
        assert "registered by plugin" in capsys.readouterr().out


def test_textattack_objects_named_by_a_task_must_be_textattack_classes(tmp_path: Path) -> None:
    """The text plugin builds TextAttack objects a task names: never one of its functions
    (``unzip_file`` would write wherever the task says)."""
    import zipfile

    bridge = pytest.importorskip("mmargin_text.textattack_bridge")
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.txt", "x")
    dest = tmp_path / "unzipped"
    spec = {"class": "textattack.shared.utils:unzip_file", "path_to_zip_file": str(archive),
            "dest_dir": str(dest)}  # fmt: skip
    with pytest.raises(ValueError, match="not a class defined in TextAttack"):
        bridge.ta_object(spec)
    assert not dest.exists()
    with pytest.raises(ValueError, match="not a class defined in TextAttack"):
        bridge.ta_object("textattack.shared.utils:os")
