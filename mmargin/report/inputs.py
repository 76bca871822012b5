"""The clean inputs a report needs beside the adversarials: ``inputs.npz`` in a run folder.

``adversarials.npz`` holds what the search found; a gallery that shows a perturbation also
needs the input it started from. The core plugin's ``mmargin_write_artifacts`` writes the
clean inputs of the samples that have a stored adversarial (the only ones a gallery shows),
keyed by sample id like ``adversarials.npz``, when the data set holds numeric arrays (text
data sets carry their sentences in the results' extras instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmargin.data import Dataset
    from mmargin.results import SampleResult

INPUTS_FILE = "inputs.npz"


def write_inputs(out: Path, results: Sequence[SampleResult], dataset: Dataset) -> Path | None:
    """Write ``out/inputs.npz`` for the flipped samples with an adversarial; ``None`` when
    the data set is not numeric or no sample qualifies (nothing is written then)."""
    x = np.asarray(dataset.x) if not isinstance(dataset.x, np.ndarray) else dataset.x
    if x.dtype.kind not in "fiub":
        return None
    position = {str(s): i for i, s in enumerate(dataset.ids)}
    arrays = {
        r.sample: np.asarray(x[position[r.sample]])
        for r in results
        if r.status.value == "flipped" and r.adversarial is not None and r.sample in position
    }
    if not arrays:
        return None
    path = Path(out) / INPUTS_FILE
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


def read_inputs(out: Path) -> dict[str, Any]:
    """The clean inputs stored in a run folder by sample id (empty for older runs)."""
    path = Path(out) / INPUTS_FILE
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as found:
        return {key: found[key] for key in found.files}
