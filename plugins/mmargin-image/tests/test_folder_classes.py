"""Image folders that hold some of a model's classes: labels follow the model's class names
(or an explicit mapping), an unknown class folder is one clear error, and the clean
accuracy equals the model's own accuracy on the same 8-bit PNGs (the oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin.testing import run_cli as main

TASK = """
[task]
name = "png-subset"
out = "run"

[model]
factory = "{factory}"

[data]
loader = "image-folder"
path = "pngs"
{classes}

[space]
name = "image"

[distance]
name = "linf"

[search]
budget = 30
exact = "never"
"""

DIGITS = ("2", "5", "7")


def _write_pngs(folder: Path, per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Test-split 8x8 digits of classes 2, 5 and 7 as 8-bit PNGs ``pngs/<digit>/<i>.png``;
    returns the images as read back (float in [0, 1]) and their true digits."""
    from PIL import Image

    from mmargin_image.data import load_digits

    data = load_digits("test")
    xs, ys = [], []
    for digit in DIGITS:
        (folder / "pngs" / digit).mkdir(parents=True)
        rows = np.flatnonzero(data.y == int(digit))[:per_class]
        for k, row in enumerate(rows):
            codes = np.rint(data.x[row, 0] * 255).astype(np.uint8)
            Image.fromarray(codes, mode="L").save(folder / "pngs" / digit / f"{k}.png")
            xs.append(codes.astype(np.float32)[None] / 255)
            ys.append(int(digit))
    return np.stack(xs), np.array(ys)


def _summary(folder: Path) -> dict:
    return json.loads((folder / "run" / "summary.json").read_text())


def test_a_png_folder_of_3_of_10_classes_gives_the_models_accuracy(tmp_path: Path) -> None:
    from mmargin_image.models import digits_cnn

    x, y = _write_pngs(tmp_path)
    with torch.no_grad():
        expected = float((digits_cnn()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    (tmp_path / "task.toml").write_text(TASK.format(factory="digits_cnn", classes=""))
    assert main(["run", str(tmp_path / "task.toml"), "--quiet"]) == 0
    assert _summary(tmp_path)["clean_accuracy"] == pytest.approx(expected)
    assert expected > 0.8  # numbered 0, 1, 2 by folder order, almost every label was wrong
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    ]
    assert sorted({r["label"] for r in rows}) == [2, 5, 7]


def test_an_explicit_mapping_numbers_the_folders(tmp_path: Path) -> None:
    _, y = _write_pngs(tmp_path, per_class=2)
    table = 'classes = { "2" = 2, "5" = 5, "7" = 7 }'
    (tmp_path / "task.toml").write_text(TASK.format(factory="digits_cnn", classes=table))
    assert main(["run", str(tmp_path / "task.toml"), "--quiet"]) == 0
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    ]
    assert [r["label"] for r in rows] == y.tolist()


@pytest.mark.parametrize(
    ("classes", "words"),
    [("", "class folder(s) 'cat' are not among the model's classes"),
     ('classes = ["0", "1", "2", "3", "4", "5", "6", "7"]',
      "class folder(s) 'cat' are not in classes")],
)  # fmt: skip
def test_an_unknown_class_folder_is_one_clear_error(
    tmp_path: Path, classes: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_pngs(tmp_path, per_class=1)
    (tmp_path / "pngs" / "2").rename(tmp_path / "pngs" / "cat")
    (tmp_path / "task.toml").write_text(TASK.format(factory="digits_cnn", classes=classes))
    assert main(["run", str(tmp_path / "task.toml"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmargin: error: data") and words in err and "\n" not in err


LOCAL = """
from mmargin_image.models import digits_cnn


def anonymous():
    model = digits_cnn()
    del model.class_names
    return model
"""


def test_a_model_without_class_names_needs_the_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_pngs(tmp_path, per_class=1)
    (tmp_path / "anon_h13.py").write_text(LOCAL)
    (tmp_path / "task.toml").write_text(TASK.format(factory="anon_h13:anonymous", classes=""))
    assert main(["run", str(tmp_path / "task.toml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.classes: 3 class folder(s) (2, 5, 7) but the model scores 10 classes" in err
    names = 'classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    (tmp_path / "task.toml").write_text(TASK.format(factory="anon_h13:anonymous", classes=names))
    assert main(["run", str(tmp_path / "task.toml"), "--quiet"]) == 0
