"""Class labels of a ``root/<class>/<file>`` folder, as every folder loader numbers them.

Like torchvision's ``ImageFolder.class_to_idx``, but a folder may hold any subset of the
model's classes: :func:`folder_classes` numbers the class sub-folders

* by an explicit ``classes`` option: a list of class names in the model's order (index =
  position; names without a sub-folder are fine) or a table ``{ name = index }``;
* else by their sorted names, marked ``class_map = "folders"`` so that the run maps them
  onto the model's own class names when it declares them (:mod:`mmargin.modelinfo`).

A sub-folder the mapping does not name is a ``ValueError`` naming it (the task's
``[data]`` error line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FolderClasses:
    """``labels``: class sub-folder name → label; ``names``: class names by label index
    (``""`` where an explicit table skips an index); ``class_map``: ``"explicit"`` or
    ``"folders"``. ``meta()`` is what a loader puts in its dataset's ``meta``."""

    labels: Mapping[str, int]
    names: list[str]
    class_map: str
    missing: list[str] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        """``classes``, ``class_map`` and (when given) ``classes_without_folder``."""
        out: dict[str, Any] = {"classes": list(self.names), "class_map": self.class_map}
        if self.missing:
            out["classes_without_folder"] = list(self.missing)
        return out


def folder_classes(
    root: str | Path, classes: Sequence[str] | Mapping[str, int] | None = None
) -> FolderClasses:
    """The labels of ``root``'s class sub-folders (hidden ones ignored); see the module."""
    root = Path(root)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{root}: expected class sub-folders (one sub-folder per class: "
                         "root/<class>/...), found none")  # fmt: skip
    if classes is None:
        return FolderClasses({f: i for i, f in enumerate(folders)}, folders, "folders")
    if isinstance(classes, Mapping):
        index = dict(classes)
        for name, value in index.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"classes: expected a label index >= 0 for {name!r}, "
                                 f"got {value!r}")  # fmt: skip
        if len(set(index.values())) != len(index):
            raise ValueError("classes: two class names share one label index")
    elif isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes: a class name is listed twice in {list(classes)}")
        index = {name: i for i, name in enumerate(classes)}
    else:
        raise ValueError(f"classes: expected a list of class names or a table "
                         f"{{ name = index }}, got {classes!r}")  # fmt: skip
    unknown = [f for f in folders if f not in index]
    if unknown:
        known = ", ".join(map(repr, list(index)[:12])) + (", ..." if len(index) > 12 else "")
        raise ValueError(f"{root}: class folder(s) {', '.join(map(repr, unknown))} are not "
                         f"in classes ({known})")  # fmt: skip
    names = [""] * (max(index.values()) + 1)
    for name, i in index.items():
        names[i] = name
    missing = [n for n in index if n not in folders]
    return FolderClasses({f: index[f] for f in folders}, names, "explicit", missing)
