"""What ran in an image-benchmark run: package versions, the mmargin source (git HEAD,
uncommitted files, module hashes), the CPU's kernels and the libraries imported before any
timing."""

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


#: Environment variables that choose which CPU kernels torch and oneDNN run: the same
#: search on the same commit rounds differently under each, and on adversarially trained
#: models those rounding differences grow into different flips.
KERNEL_ENVIRONMENT = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA")

#: The instruction-set extensions that decide which kernels torch and oneDNN pick.
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_kernels() -> dict[str, Any]:
    """Which CPU kernels a run used: the CPU model, its vector extensions, torch's kernel
    level and the environment variables that cap torch's and oneDNN's choice.

    Two runs of one commit agree to the bit only when these agree: a convolution computed
    with AVX2 and with AVX-512 kernels rounds differently. Session 11 traced a committed L1
    figure that a rerun on the same commit did not reproduce to exactly this: the rerun
    matches it with ``DNNL_MAX_CPU_ISA=AVX2``.
    """
    import os
    import platform

    import torch

    model = platform.processor() or None
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: None)()
    return {
        "model": model,
        "isa_flags": [flag for flag in _ISA_FLAGS if flag in flags],
        "torch_capability": capability,
        "environment": {k: os.environ.get(k) for k in KERNEL_ENVIRONMENT},
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
