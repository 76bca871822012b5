"""Where a whole search's CPU time goes: the model against everything else.

``bench/overhead.py`` times the gradient step alone; this times the whole search exactly
as ``bench/image_bench.py``'s mmargin row calls it (class ranking, ε-ball and Lagrangian
runs, leftover runs, line search, bookkeeping, the counting wrappers, the driver and
re-verification). Every model call of the search is followed at once by a *bare* call on
a copy of the same batch (forward, and input gradient where the search's input needed one,
nothing else), so the two meet the same load, caches and inputs. The engine's own time
is the search's process CPU time minus the bare calls' (what a search would cost with a
model call that carries nothing of the engine). Process CPU time, not wall time: a machine
shared with other jobs inflates both the same way.

    python bench/search_split.py --models mnist_cnn digits_mlp --norms l2 linf

prints one line per model and norm. Tuning-set models only (``eval_*`` refused).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

TUNING = (
    "mnist_cnn",
    "tune_cnn_fgsm",
    "tune_cnn_fgsm_short",
    "tune_cnn_pgd",
    "tune_cnn_fgsm_co",
    "tune_cnn_bn",
    "tune_mlp",
    "digits_mlp",
)


class _Twin(nn.Module):
    """The model, timed, with a bare call on a copy of every batch right after it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.times = {"forward": 0.0, "bare": 0.0}

    def forward(self, x: Tensor) -> Tensor:
        """The model's scores (timed), then the bare call (timed apart)."""
        start = time.process_time()
        out: Tensor = self.model(x)
        self.times["forward"] += time.process_time() - start
        copy = x.detach().clone().requires_grad_(x.requires_grad)
        start = time.process_time()
        if copy.requires_grad:
            torch.autograd.grad(self.model(copy)[:, 0].sum(), copy)
        else:
            with torch.no_grad():
                self.model(copy)
        self.times["bare"] += time.process_time() - start
        return out


def _data(name: str, samples: int) -> tuple[Tensor, Tensor]:
    from mmargin_image.data import load_digits, load_mnist

    data = load_digits("test") if name == "digits_mlp" else load_mnist("test")
    x = np.ascontiguousarray(data.x[:samples], dtype=np.float32)
    return torch.from_numpy(x), torch.from_numpy(np.asarray(data.y[:samples])).long()


def split(name: str, norm: str, samples: int, budget: int) -> dict[str, Any]:
    """One search of ``samples`` images at ``budget`` passes, its CPU time split."""
    import zoo
    from peers import METHODS

    from mmargin.engine.counting import CountingModule

    model = zoo.load(name)
    x, y = _data(name, samples)
    twin = _Twin(model)
    method = METHODS["mmargin"]
    start = time.process_time()
    method.run(CountingModule(twin), x.clone(), y.clone(), norm, method.config(norm, budget))
    search = time.process_time() - start - twin.times["bare"]
    own = search - twin.times["bare"]
    return {
        "model": name,
        "norm": norm,
        "search_s": search,
        "forward_s": twin.times["forward"],
        "bare_s": twin.times["bare"],
        "engine_s": own,
        "engine_share": own / search,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mnist_cnn", "tune_cnn_fgsm"])
    parser.add_argument("--norms", nargs="+", default=["l2", "linf"])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    bad = [m for m in args.models if m not in TUNING]
    if bad:
        print(f"tuning models only ({', '.join(TUNING)}); refused: {bad}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    for name in args.models:
        for norm in args.norms:
            r = split(name, norm, args.samples, args.budget)
            print(f"{name} {norm} @{args.budget}: search {r['search_s']:.2f}s CPU, bare model "
                  f"calls {r['bare_s']:.2f}s, engine {r['engine_s']:.2f}s "
                  f"({100 * r['engine_share']:.1f}%)", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
