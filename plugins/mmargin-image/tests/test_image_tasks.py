"""The image plugin end to end: shipped tasks run through the CLI on built-in data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmargin.plugin import InvalidInputError
from mmargin.testing import run_cli as main
from mmargin_image.plugin import image_space

TASKS = Path(__file__).resolve().parents[3] / "tasks"


@pytest.mark.parametrize("norm", ["l0", "l1", "l2", "linf"])
def test_mnist_task_for_each_norm_runs(norm: str, tmp_path: Path) -> None:
    out = tmp_path / norm
    code = main(["run", str(TASKS / f"image-mnist-{norm}.toml"), "--samples", "3",
                 "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["status"] in {"flipped", "misclassified"}
        assert row["distance"] == norm and row["queries"] <= 1000
    with np.load(out / "adversarials.npz") as advs:
        for row in rows:
            if row["status"] == "flipped":
                adv = advs[row["sample"]]
                assert adv.shape == (1, 28, 28) and adv.min() >= 0 and adv.max() <= 1


def test_image_space_rejects_non_images_and_values_outside_the_box() -> None:
    space = image_space()
    with pytest.raises(InvalidInputError, match="3-dim samples"):
        space.check(np.zeros((2, 28, 28), dtype=np.float32))
    x = np.zeros((2, 1, 4, 4), dtype=np.float32)
    x[1, 0, 0, 0] = 1.5
    assert space.check(x) == [None, space.check(x)[1]]
    assert "outside the bounds" in str(space.check(x)[1])
    with pytest.raises(ValueError, match="lower must be < upper"):
        image_space(lower=1.0, upper=0.0)
