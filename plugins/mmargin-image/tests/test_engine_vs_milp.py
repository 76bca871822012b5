"""The engine on a real ReLU network against MILP-exact L∞ margins (digits MLP).

The MILP (HiGHS, big-M from interval bounds tightened by the engine's own upper bound)
proves the minimal L∞ flip; the engine's verified margin must be within 2% at the median
and never below a proven optimum.
"""

from __future__ import annotations

import numpy as np
import torch

from mmargin.plugin import Status, TorchAdapter, lp
from mmargin.testing import SearchSpec, extract_relu_layers, minimal_flip, relu_net_margin
from mmargin_image.data import load_digits
from mmargin_image.models import digits_mlp
from mmargin_image.plugin import image_space

torch.set_num_threads(1)


def test_engine_linf_margins_match_milp_on_the_digits_mlp() -> None:
    data = load_digits("test").head(14)
    model = digits_mlp()
    results = minimal_flip(TorchAdapter(model), image_space(), lp("linf"), data.x, data.y,
                           spec=SearchSpec(exact="never"))  # fmt: skip
    layers = extract_relu_layers(model)
    assert layers is not None
    ratios = []
    for i, r in enumerate(results):
        if r.status is Status.MISCLASSIFIED:
            continue
        assert r.status is Status.FLIPPED
        exact = relu_net_margin(layers, data.x[i].astype(np.float64).ravel(), int(data.y[i]),
                                np.inf, lower=0.0, upper=1.0, upper_bound=r.margin,
                                time_limit=15)  # fmt: skip
        if exact.optimal:
            assert r.margin >= exact.lower * (1 - 1e-4)
            ratios.append(r.margin / exact.lower)
    assert len(ratios) >= 10
    assert np.median(ratios) <= 1.02


def test_exact_hook_gives_lower_bound_equal_to_margin_on_the_digits_mlp() -> None:
    """Through the plugin host: the core's MILP hook certifies the engine's margins."""
    import mmargin

    data = load_digits("test").head(4)
    results = mmargin.evaluate(digits_mlp(), data.x, data.y, "linf", space="image")
    flipped = [r for r in results if r.status is Status.FLIPPED]
    assert flipped and all(r.exact for r in flipped)
