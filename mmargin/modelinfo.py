"""What a model says about the data it expects, and data made to fit it.

A model may declare

* its **class names**, by label index: ``class_names`` (a list), ``class_to_idx`` (name →
  index, as torchvision's ``ImageFolder`` has it), a Hugging Face ``config.id2label`` or a
  scikit-learn ``classes_``; see :func:`class_names`;
* **input facts a loader needs**, as attributes named like the loader's option
  (:data:`DECLARED`: ``sample_rate`` for audio models).

:func:`loader_options` fills a declared option the task left out (so 16 kHz clips are
resampled to the 8 kHz model's rate, and the run says so), :func:`check_declared` refuses
data loaded at another value than the model declares (never fed at the wrong rate), and
:func:`align_classes` maps a folder loader's class names onto the model's label indices
(a folder may hold any subset of the model's classes; a name the model does not know is
an error naming it).

A loader that numbers classes by its sorted folder names sets ``meta["class_map"] =
"folders"`` and ``meta["classes"]`` (names by label index); one given an explicit mapping
sets ``"explicit"``, which is left as it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmargin.data import Dataset
from mmargin.errors import InvalidTaskError

DECLARED = ("sample_rate",)
"""Loader options a model may declare as an attribute of the same name."""


def class_names(model: Any) -> list[str] | None:
    """The model's class names by label index, if it declares them (else ``None``)."""
    for holder in (model, getattr(model, "model", None)):
        if holder is None:
            continue
        names = getattr(holder, "class_names", None)
        if isinstance(names, (list, tuple)) and names:
            return [str(n) for n in names]
        mapping = getattr(holder, "class_to_idx", None)
        if isinstance(mapping, Mapping) and mapping:
            return _by_index({str(k): int(v) for k, v in mapping.items()})
        id2label = getattr(getattr(holder, "config", None), "id2label", None)
        if isinstance(id2label, Mapping) and id2label:
            return _by_index({str(v): int(k) for k, v in id2label.items()})
        classes = getattr(holder, "classes_", None)
        if classes is not None and len(classes) and not hasattr(holder, "forward"):
            return [str(c) for c in classes]
    return None


def _by_index(mapping: Mapping[str, int]) -> list[str]:
    names = [""] * (max(mapping.values()) + 1)
    for name, index in mapping.items():
        names[index] = name
    return names


def declared(model: Any, key: str) -> Any:
    """What the model declares for loader option ``key`` (``None`` when it does not)."""
    for holder in (model, getattr(model, "model", None)):
        value = getattr(holder, key, None) if holder is not None else None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return value
    return None


def loader_options(
    factory: Callable[..., Any], options: Mapping[str, Any], model: Any
) -> dict[str, Any]:
    """``options`` plus each :data:`DECLARED` value the model declares that the task left out
    and the loader accepts (a keyword of ``factory``)."""
    try:
        accepted = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return dict(options)
    out = dict(options)
    for key in DECLARED:
        value = declared(model, key)
        if value is not None and key in accepted and key not in out:
            out[key] = value
    return out


def check_declared(values: Mapping[str, Any], model: Any, field: str = "data") -> None:
    """Refuse data (its ``meta``) or a space (its attributes, as a mapping) set to another
    value of a :data:`DECLARED` option than the model declares."""
    for key in DECLARED:
        want, got = declared(model, key), values.get(key)
        if want is not None and got is not None and got != want:
            raise InvalidTaskError(f"{field}.{key}", f"the model expects {key} = {want!r}, but "
                                   f"{field} is at {got!r}; leave {key} out (the model's is "
                                   f"then used) or set it to {want!r}")  # fmt: skip


def align_classes(
    dataset: Dataset, model: Any, outputs: int | None, field: str = "data"
) -> Dataset:
    """Relabel a folder loader's dataset by the model's class names.

    ``meta["class_map"] == "folders"``: each folder's name is looked up among the model's
    :func:`class_names`; a name it lacks raises :class:`InvalidTaskError` naming it. A model
    without class names keeps the folder order, unless the folders are fewer or more than
    its ``outputs`` (then the label numbering cannot be right, and the error says how to
    give it: ``classes``). Other datasets are returned unchanged.
    """
    if dataset.meta.get("class_map") != "folders":
        return dataset
    folders = [str(c) for c in dataset.meta.get("classes", [])]
    names = class_names(model)
    if names is None:
        if outputs is not None and outputs != len(folders):
            raise InvalidTaskError(f"{field}.classes", (
                f"{len(folders)} class folder(s) ({', '.join(folders[:6])}"
                f"{', ...' if len(folders) > 6 else ''}) but the model scores {outputs} classes "
                "and names none; give the mapping: classes = [all class names in the model's "
                'order] or classes = { "<folder>" = <index>, ... }'
            ))  # fmt: skip
        return dataset
    index = {name: i for i, name in enumerate(names)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        shown = ", ".join(repr(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
        listed = ", ".join(map(repr, unknown))
        raise InvalidTaskError(f"{field}.classes", f"class folder(s) {listed} are not among "
                               f"the model's classes ({shown})")  # fmt: skip
    lookup = np.array([index[f] for f in folders], dtype=np.int64)
    meta = {**dataset.meta, "classes": names, "class_map": "model",
            "folder_classes": folders}  # fmt: skip
    skipped = meta.get("skipped")
    if isinstance(skipped, list):  # skipped files keep their folder's (now the model's) label
        meta["skipped"] = [
            {**e, "label": int(lookup[e["label"]])} if isinstance(e.get("label"), int) else e
            for e in skipped
        ]
    return Dataset(dataset.x, lookup[dataset.y], list(dataset.ids), meta)
