"""The example installs like any third-party plugin: ``pip install`` puts its entry point
where the host finds it, in a fresh process that only has the installed copy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
from mmargin import plugins
for kind, name in [("spaces", "series"), ("distances", "energy"), ("datasets", "sines"),
                   ("models", "sine_filters")]:
    print(kind, name, plugins.lookup(kind, name).plugin)
import mmargin_series
print(mmargin_series.__file__)
"""


def test_pip_install_makes_the_entry_point_discoverable(tmp_path: Path) -> None:
    source = tmp_path / "source"  # pip builds in the tree: keep its egg-info out of ours
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns("*.egg-info", "build", "tests",
                                                                 "__pycache__"))  # fmt: skip
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[:4] == [
        "spaces series series",
        "distances energy series",
        "datasets sines series",
        "models sine_filters series",
    ]
    assert lines[4].startswith(str(target))  # the installed copy, not the source folder
