"""What ran in an image-benchmark run: package versions, the mmargin source (git HEAD,
uncommitted files, module hashes) and the libraries imported before any timing."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def version(name: str) -> str | None:
    """The installed version of distribution ``name`` (None if it is not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance() -> dict[str, Any]:
    """Which mmargin source ran: git HEAD, uncommitted files, a hash of each loaded module."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", "mmargin", "plugins/mmargin-image")
    sources = {}
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in ("mmargin", "mmargin_image") and path:
            sources[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return {
        "git_head": git("rev-parse", "HEAD"),
        "uncommitted": status.splitlines() if status else [],
        "module_sha256": sources,
    }


def import_libraries(keys: list[str]) -> None:
    """Import what the methods ``keys`` import, so no timing pays for an import."""
    import importlib

    modules = {
        "mmargin": ["mmargin.engine.flip", "mmargin.adapters", "mmargin_image.plugin"],
        "foolbox": ["foolbox"],
        "adv_lib": ["adv_lib.attacks"],
        "torchattacks": ["torchattacks"],
    }
    for library in sorted({key.split(".")[0] for key in keys}):
        for name in modules[library]:
            importlib.import_module(name)
