"""The command's allocator setting (:mod:`mmargin.allocator`): opt-out, the user's own
``MALLOC_*`` setting, non-glibc systems, and that importing the library sets nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mmargin import allocator


def test_opt_out_and_user_setting_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ENV, "0")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv(allocator.ENV)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123456")
    assert allocator.keep_freed_memory() is False


def test_skipped_off_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    assert allocator.keep_freed_memory() is False


def test_glibc_takes_the_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    monkeypatch.delenv(allocator.ENV, raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    code = "from mmargin.allocator import keep_freed_memory as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"  # every mallopt call accepted (one refused: False)


def test_importing_the_library_leaves_the_allocator_alone() -> None:
    code = (
        "import sys, mmargin, mmargin.distances, mmargin.engine.gradient\n"
        "print('mmargin.allocator' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
