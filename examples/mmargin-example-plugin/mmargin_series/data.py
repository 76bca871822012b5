"""The ``sines`` loader: seeded noisy sine waves whose class is their frequency.

Class ``k`` (0, 1, 2) is a sine of ``k + 1`` cycles over the series, with a random phase,
an amplitude in ``[0.6, 1.0]`` and Gaussian noise, clipped to the ``series`` space's
default range ``[-2, 2]``. Everything comes from one seed: loading twice gives the same
data (the conformance kit checks it).
"""

from __future__ import annotations

import numpy as np

from mmargin.plugin import Dataset

CLASSES = ("1 cycle", "2 cycles", "3 cycles")


def load_sines(n: int = 60, length: int = 64, seed: int = 0, noise: float = 0.2) -> Dataset:
    """``n`` series of ``length`` steps, classes balanced and shuffled, ids ``sine-<i>``."""
    if n < 1 or length < 8:
        raise ValueError(f"need n >= 1 and length >= 8, got n={n}, length={length}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    t = np.arange(length) / length
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amplitude = rng.uniform(0.6, 1.0, size=(n, 1))
    cycles = (labels + 1)[:, None]
    x = amplitude * np.sin(2 * np.pi * cycles * t + phase)
    x = np.clip(x + noise * rng.standard_normal((n, length)), -2.0, 2.0)
    meta = {"source": "synthetic sines", "classes": list(CLASSES), "seed": seed}
    return Dataset(x.astype(np.float32), labels.astype(np.int64), [f"sine-{i}" for i in range(n)],
                   meta)  # fmt: skip
