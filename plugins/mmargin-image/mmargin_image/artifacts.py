"""What the image plugin adds to a run: the 8-bit check of each flip, and PNGs after it.

:func:`png8_report` backs the ``mmargin_sample_report`` hook (see
:func:`mmargin.plugin.check_saved`). :func:`write_image_artifacts` backs
``mmargin_write_artifacts``: ``out/images/<id>.clean.png`` and, for every flip the check
verified as saved, ``<id>.adv.png`` (that verified 8-bit adversarial: read back and
re-classified it flips). A flip with no verified 8-bit version is written as
``<id>.not-adversarial.png`` (the plain 8-bit rounding of the search's adversarial), so no
file named adversarial fails to flip. ``index.json`` lists every sample's files, both
margins and whether its file is adversarial.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmargin.plugin import PNG8, check_saved, saved_codes

if TYPE_CHECKING:
    from mmargin.plugin import Dataset, SampleResult
    from mmargin_image.space import ImageSpace


def png8_report(
    space: ImageSpace, model: Any, x: Any, x_adv: Any, labels: Any, goal: Any, distance: Any
) -> list[dict[str, Any]]:
    """Per row: the flip re-checked as an 8-bit PNG (and repaired with ``saved="repair"``)."""
    return check_saved(model, goal, distance, x, x_adv, labels, PNG8,
                       repair=space.saved == "repair")  # fmt: skip


def write_png(path: Path, codes: np.ndarray) -> None:
    """``codes`` ``(C, H, W)`` in 0..255 as a grayscale (C = 1) or RGB (C = 3) PNG."""
    from PIL import Image

    pixels = np.asarray(codes, dtype=np.uint8)
    image = pixels[0] if pixels.shape[0] == 1 else np.transpose(pixels, (1, 2, 0))
    Image.fromarray(np.ascontiguousarray(image), mode="L" if pixels.shape[0] == 1 else "RGB").save(
        path
    )


def write_image_artifacts(
    space: ImageSpace, out: Path, results: Sequence[SampleResult], dataset: Dataset
) -> Path | None:
    """Write ``out/images/`` (see the module); nothing for images that are not 1 or 3
    channels. Returns the folder, or ``None`` when nothing was written."""
    if dataset.x.ndim != 4 or dataset.x.shape[1] not in (1, 3):
        return None
    folder = Path(out) / "images"
    position = {str(s): i for i, s in enumerate(dataset.ids)}
    index = []
    for r in results:
        if r.status.value != "flipped" or r.adversarial is None or r.sample not in position:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        clean = np.asarray(dataset.x[position[r.sample]], dtype=np.float32)
        adv = np.asarray(r.adversarial, dtype=np.float32).reshape(clean.shape)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", r.sample)
        write_png(folder / f"{stem}.clean.png", PNG8.codes(clean, clean))
        codes = saved_codes(clean, adv, r.extras, PNG8)
        name = f"{stem}.adv.png" if codes is not None else f"{stem}.not-adversarial.png"
        write_png(folder / name, codes if codes is not None else PNG8.codes(clean, adv))
        index.append({
            "sample": r.sample, "label": r.label, "adv_label": r.adv_label,
            "margin": r.margin, "saved_margin": r.extras.get("saved_margin"),
            "saved_flips": r.extras.get("saved_flips"), "adversarial": codes is not None,
            "files": [f"{stem}.clean.png", name],
        })  # fmt: skip
    if not index:
        return None
    (folder / "index.json").write_text(json.dumps(_json(index), indent=1) + "\n")
    return folder


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value
