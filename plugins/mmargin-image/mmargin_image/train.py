"""Deterministically (re)train the reference models and write their weights.

Usage::

    python -m mmargin_image.train [--only mnist_cnn|digits_cnn|digits_mlp] [--out DIR]

Training runs on the CPU with fixed seeds, ``torch.use_deterministic_algorithms(True)``, a
fixed thread count and a data order drawn from a seeded generator, so the same command on
the same torch version reproduces the same weights. Each model is trained with plain Adam
for a few epochs, its test accuracy is printed, and its state_dict is written to
``DIR/<name>.pt`` (default: the package's ``weights/`` folder) together with
``manifest.json`` (machine-readable) and ``README.md`` recording architecture, command,
hyper-parameters, seed, test accuracy, file size and sha256 of every model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmargin.plugin import Dataset
from mmargin_image.data import load_digits, load_mnist
from mmargin_image.models import MODEL_NAMES, WEIGHTS_DIR, build


@dataclass(frozen=True)
class Recipe:
    """How one model is trained: which data, how long, with which optimiser settings."""

    name: str
    data: str  # "mnist" or "digits"
    epochs: int
    batch_size: int
    lr: float
    lr_decay: float = 1.0  # the learning rate is multiplied by this after every epoch
    seed: int = 0


RECIPES: dict[str, Recipe] = {
    "mnist_cnn": Recipe("mnist_cnn", "mnist", epochs=6, batch_size=64, lr=1e-3, lr_decay=0.7),
    "digits_cnn": Recipe("digits_cnn", "digits", epochs=40, batch_size=32, lr=1e-3),
    "digits_mlp": Recipe("digits_mlp", "digits", epochs=80, batch_size=32, lr=1e-3),
}
assert tuple(RECIPES) == MODEL_NAMES


def _splits(data: str) -> tuple[Dataset, Dataset]:
    """(train, test) datasets for a recipe's data source."""
    if data == "mnist":
        return load_mnist("train"), load_mnist("test")
    return load_digits("train", seed=0), load_digits("test", seed=0)


@torch.no_grad()
def accuracy(model: nn.Module, data: Dataset, batch_size: int = 1000) -> float:
    """Fraction of ``data`` that ``model`` (put in eval mode) classifies correctly."""
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        xb = torch.from_numpy(data.x[start : start + batch_size])
        pred = model(xb).argmax(dim=1).numpy()
        correct += int((pred == data.y[start : start + batch_size]).sum())
    return correct / len(data)


def train_model(recipe: Recipe, log: Any = print) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model from scratch following ``recipe``; returns it and a record of the run."""
    train_set, test_set = _splits(recipe.data)
    torch.manual_seed(recipe.seed)
    model = build(recipe.name)
    order = torch.Generator().manual_seed(recipe.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimiser, gamma=recipe.lr_decay)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(train_set.x)
    y = torch.from_numpy(train_set.y)
    started = time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        perm = torch.randperm(len(train_set), generator=order)
        total = 0.0
        for start in range(0, len(train_set), recipe.batch_size):
            idx = perm[start : start + recipe.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        schedule.step()
        if epoch == recipe.epochs or epoch % max(1, recipe.epochs // 4) == 0:
            log(
                f"  {recipe.name} epoch {epoch}/{recipe.epochs}: "
                f"loss {total / len(train_set):.4f}, test acc {accuracy(model, test_set):.4f}"
            )
    seconds = time.perf_counter() - started
    record = {
        **asdict(recipe),
        "train_samples": len(train_set),
        "test_samples": len(test_set),
        "train_accuracy": round(accuracy(model, train_set), 4),
        "test_accuracy": round(accuracy(model, test_set), 4),
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": str(model),
    }
    return model.eval(), record


def _sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


_DATA_TEXT = {
    "mnist": "MNIST via `load_mnist`: train on the 50,000 `train` images, test on the "
    "10,000 official `test` images",
    "digits": "sklearn digits via `load_digits(seed=0, test_fraction=0.3)`: train on its "
    "`train` split, test on its `test` split",
}


def render_readme(manifest: dict[str, dict[str, Any]]) -> str:
    """The ``weights/README.md`` text describing every model in ``manifest``."""
    lines = [
        "# Reference model weights",
        "",
        (
            "State dicts (`torch.save(model.state_dict())`) of the models in "
            "`mmargin_image.models`, loaded by the factories `mnist_cnn()`, `digits_cnn()` "
            "and `digits_mlp()` with "
            '`torch.load(..., map_location="cpu", weights_only=True)`.'
        ),
        (
            "Generated by `python -m mmargin_image.train`; do not edit by hand "
            "(`manifest.json` holds the same facts for programs)."
        ),
        "",
        (
            "Training is deterministic: CPU, `torch.manual_seed(seed)`, "
            "`torch.use_deterministic_algorithms(True)`, a fixed thread count, data order "
            "from a seeded `torch.Generator`, plain Adam (optionally with an exponential "
            "per-epoch learning-rate decay), cross-entropy. Re-running the command with the "
            "same torch version and thread count reproduces the files."
        ),
        "",
        "| model | test accuracy | epochs | batch | lr | seed | size (bytes) | sha256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(manifest):
        r = {"lr_decay": 1.0, **manifest[name]}
        lines.append(
            f"| `{name}.pt` | {r['test_accuracy']:.4f} | {r['epochs']} | {r['batch_size']} | "
            f"{r['lr']:g} x{r['lr_decay']:g}/epoch | {r['seed']} | {r['file_bytes']} | "
            f"`{r['sha256']}` |"
        )
    for name in sorted(manifest):
        r = {"lr_decay": 1.0, **manifest[name]}
        lines += [
            "",
            f"## {name}",
            "",
            f"- command: `{r['command']}`",
            f"- data: {_DATA_TEXT[r['data']]} ({r['train_samples']} / {r['test_samples']})",
            (
                f"- epochs {r['epochs']}, batch size {r['batch_size']}, Adam lr {r['lr']:g} "
                f"(times {r['lr_decay']:g} after each epoch), seed {r['seed']}, "
                f"{r['threads']} CPU thread(s), torch {r['torch']}"
            ),
            (
                f"- train accuracy {r['train_accuracy']:.4f}, "
                f"**test accuracy {r['test_accuracy']:.4f}**"
            ),
            (
                f"- {r['parameters']} parameters; file {r['file_bytes']} bytes, sha256 "
                f"`{r['sha256']}`; trained in {r['train_seconds']} s on {r['machine']}"
            ),
            "",
            "```text",
            r["architecture"],
            "```",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mmargin_image.train", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--only", choices=MODEL_NAMES, help="train just this model")
    parser.add_argument(
        "--out", type=Path, default=WEIGHTS_DIR, help=f"output folder (default: {WEIGHTS_DIR})"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="CPU threads (part of the reproducible setup)"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    manifest_file = out / "manifest.json"
    manifest: dict[str, dict[str, Any]] = {}
    if manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text())
    names = [args.only] if args.only else list(MODEL_NAMES)
    for name in names:
        recipe = RECIPES[name]
        print(f"training {name} ({recipe.data}, {recipe.epochs} epochs)", flush=True)
        model, record = train_model(recipe, log=lambda msg: print(msg, flush=True))
        file = out / f"{name}.pt"
        torch.save(model.state_dict(), file)
        command = f"python -m mmargin_image.train --only {name}"
        if args.threads != 2:
            command += f" --threads {args.threads}"
        record.update(
            command=command,
            threads=args.threads,
            torch=torch.__version__,
            numpy=np.__version__,
            machine=f"{platform.machine()} {platform.system()}",
            file_bytes=file.stat().st_size,
            sha256=_sha256(file),
        )
        manifest[name] = record
        print(
            f"{name}: test accuracy {record['test_accuracy']:.4f} "
            f"({record['train_seconds']} s, {record['file_bytes']} bytes) -> {file}",
            flush=True,
        )
    manifest_file.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(render_readme(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
