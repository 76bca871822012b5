"""Plugins build on the one public surface: ``mmargin.plugin`` (and ``mmargin.testing`` in
tests, ``mmargin``'s own API for task runs) — never the engine's or the host's modules,
which may move. The tabular plugin's exact-model description reads the exact core's public
modules (``mmargin.exact``), and is the one exception (``exact.py`` and the model-dump
readers it uses, ``boosters.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"mmargin", "mmargin.plugin", "mmargin.testing"}
EXCEPTIONS = {"plugins/mmargin-tabular/mmargin_tabular/exact.py",
              "plugins/mmargin-tabular/mmargin_tabular/boosters.py"}  # fmt: skip
SOURCES = sorted(
    [*ROOT.glob("plugins/*/mmargin_*/**/*.py"), *ROOT.glob("plugins/*/tests/*.py"),
     *ROOT.glob("examples/*/mmargin_*/**/*.py"), *ROOT.glob("examples/*/tests/*.py")]
)  # fmt: skip


def _core_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [m for m in found if m == "mmargin" or m.startswith("mmargin.")]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_core_names_from_the_public_surface(path: Path) -> None:
    allowed = set(ALLOWED)
    if str(path.relative_to(ROOT)) in EXCEPTIONS:  # the exact core's public modules too
        allowed |= {m for m in _core_imports(path) if m.split(".")[:2] == ["mmargin", "exact"]}
    private = sorted(set(_core_imports(path)) - allowed)
    assert not private, f"{path.relative_to(ROOT)} imports {private}: use mmargin.plugin"


def test_the_scan_sees_every_plugin() -> None:
    packages = {p.parts[len(ROOT.parts) + 1] for p in SOURCES}
    assert {"mmargin-image", "mmargin-text", "mmargin-tabular", "mmargin-audio",
            "mmargin-example-plugin"} <= packages  # fmt: skip


def test_importing_the_plugin_surface_and_the_plugins_loads_no_torch() -> None:
    """``mmargin.plugin`` resolves heavy names on first use, and the plugins import only
    those they need inside their factories: loading every plugin stays instant."""
    import subprocess
    import sys

    code = (
        "import sys, mmargin.plugin, mmargin_image.plugin, mmargin_text.plugin, "
        "mmargin_tabular.plugin, mmargin_audio.plugin\n"
        "from mmargin.plugin import Register, hookimpl\n"
        "print(sorted(m for m in ('torch', 'transformers', 'torchaudio', 'sklearn') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_every_name_of_the_plugin_surface_resolves() -> None:
    import mmargin.plugin

    missing = [name for name in mmargin.plugin.__all__ if not hasattr(mmargin.plugin, name)]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'minimal_flip'"):
        _ = mmargin.plugin.minimal_flip  # the engine is not part of a plugin's surface
