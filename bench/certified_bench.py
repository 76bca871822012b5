"""Certified radius against found margin on MNIST: how wide is the bracket lower ≤ true ≤ upper?

For the shipped MNIST CNN (``mmargin_image.models.mnist_cnn``) and a small MLP trained here
(784-100-100-10, deterministic, a few seconds), on the first ``--samples`` MNIST test
images and each norm (L∞, L2):

1. the engine's verified margin (``mmargin.evaluate``, gradient search, ``exact="never"``):
   the upper bound;
2. the largest certified radius by CROWN (:mod:`mmargin.exact.crown`, the default that
   ``exact = "auto"`` runs) and by interval bounds, in the same run, bisected in
   ``[0, margin]``: the lower bound.

Reported per model and norm: the median bracket ratio (margin / certified radius, 1 =
exact; samples whose radius is 0 count as ``inf``), the share of samples certified to
within 2x, and the seconds per sample of each step. Misclassified samples are left out.

    python bench/certified_bench.py --samples 100 --out bench/results/certified.json

writes the JSON (figures, configuration, per-sample values) and a markdown table next to
it (same name, ``.md``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class MnistMlp(nn.Module):
    """784-100-100-10 ReLU MLP, written as a module with a forward (traced, not parsed)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 100), nn.Linear(100, 100), nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(F.relu(self.fc2(h)))


def train_mlp(x: np.ndarray, y: np.ndarray, epochs: int = 2, seed: int = 0) -> MnistMlp:
    """The MLP trained by Adam on ``x``/``y`` (mini-batches of 128, fixed seed)."""
    torch.manual_seed(seed)
    model = MnistMlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(128):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def certify(graph: Any, x: np.ndarray, labels: np.ndarray, margins: np.ndarray, p: float,
            method: str) -> tuple[np.ndarray, float]:  # fmt: skip
    """Certified radii (bisected up to each margin) and the seconds per sample."""
    from mmargin.exact.certify import certified_radius
    from mmargin.exact.crown import BoundConfig
    from mmargin.exact.limits import LIMITS
    from mmargin.exact.rules import argmax_rule

    rules = [argmax_rule(10, int(lab), None) for lab in labels]
    config = BoundConfig(method=method, crown_budget=LIMITS.crown_budget,
                         steps=LIMITS.bisection_steps, chunk=8)  # fmt: skip
    t0 = time.perf_counter()
    radii = certified_radius(graph, x.reshape(len(x), -1), rules, p, lower=0.0, upper=1.0,
                             start=margins, config=config)  # fmt: skip
    return radii, (time.perf_counter() - t0) / max(len(x), 1)


def summary(margins: np.ndarray, radii: np.ndarray) -> dict[str, float]:
    """Median bracket ratio and the share of samples within 2x."""
    ratio = np.where(radii > 0, margins / np.where(radii > 0, radii, 1.0), math.inf)
    return {
        "bracket_ratio_median": float(np.median(ratio)),
        "within_2x": float(np.mean(ratio <= 2.0)),
        "radius_median": float(np.median(radii)),
    }


def run(samples: int, budget: int, norms: list[str]) -> dict[str, Any]:
    """Every model and norm; returns the JSON-ready record."""
    import mmargin
    from mmargin.exact.tracing import trace
    from mmargin_image.data import load_mnist
    from mmargin_image.models import mnist_cnn

    torch.set_num_threads(1)
    test = load_mnist("test")
    x, y = test.x[:samples].astype(np.float32), np.asarray(test.y[:samples])
    train = load_mnist("train")
    t0 = time.perf_counter()
    mlp = train_mlp(train.x[:20000].astype(np.float32), np.asarray(train.y[:20000]))
    train_seconds = time.perf_counter() - t0
    models = {"mnist_cnn": mnist_cnn(), "mnist_mlp": mlp}
    out: dict[str, Any] = {"models": {}, "mlp_train_seconds": train_seconds}
    for name, model in models.items():
        graph = trace(model, x.shape[1:])
        with torch.no_grad():
            pred = model(torch.as_tensor(x)).argmax(1).numpy()
        ok = pred == y
        rec: dict[str, Any] = {"clean_accuracy": float(ok.mean()), "hidden_units":
                               graph.hidden_units, "norms": {}}  # fmt: skip
        for dist in norms:
            p = {"linf": math.inf, "l2": 2.0, "l1": 1.0}[dist]
            t0 = time.perf_counter()
            found = mmargin.evaluate(model, x[ok], y[ok], distance=dist, space="box",
                                     space_options={"lower": 0.0, "upper": 1.0},
                                     budget=budget, exact="never")  # fmt: skip
            search_s = (time.perf_counter() - t0) / max(int(ok.sum()), 1)
            margins = np.array([r.margin for r in found])
            keep = np.isfinite(margins)
            row: dict[str, Any] = {"samples": int(keep.sum()), "search_seconds": search_s,
                                   "margin_median": float(np.median(margins[keep]))}  # fmt: skip
            for method in ("crown", "interval"):
                radii, secs = certify(graph, x[ok][keep], y[ok][keep], margins[keep], p, method)
                row[method] = {**summary(margins[keep], radii), "seconds": secs,
                               "radii": radii.tolist()}  # fmt: skip
                print(f"{name} {dist} {method}: ratio {row[method]['bracket_ratio_median']:.3g}"
                      f", {secs:.3f} s/sample", flush=True)  # fmt: skip
            row["margins"] = margins[keep].tolist()
            rec["norms"][dist] = row
        out["models"][name] = rec
    return out


def markdown(result: dict[str, Any]) -> str:
    """One table: model, norm, median bracket ratio and seconds per sample per method."""
    lines = [
        "| model | norm | samples | median margin | CROWN ratio (median) | CROWN ≤2x "
        "| CROWN s/sample | interval ratio (median) | interval ≤2x | interval s/sample "
        "| search s/sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rec in result["models"].items():
        for dist, row in rec["norms"].items():
            c, i = row["crown"], row["interval"]
            lines.append(
                f"| {name} | {dist} | {row['samples']} | {row['margin_median']:.4g} "
                f"| {c['bracket_ratio_median']:.3g} | {c['within_2x']:.0%} | {c['seconds']:.3f} "
                f"| {i['bracket_ratio_median']:.3g} | {i['within_2x']:.0%} | {i['seconds']:.3f} "
                f"| {row['search_seconds']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line: ``--samples``, ``--budget``, ``--norms``, ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--norms", nargs="+", default=["linf", "l2"], choices=["linf", "l2", "l1"])
    ap.add_argument("--out", type=Path, default=Path("bench/results/certified.json"))
    args = ap.parse_args()
    from mmargin.exact.limits import LIMITS

    t0 = time.perf_counter()
    result = run(args.samples, args.budget, args.norms)
    result["config"] = {"samples": args.samples, "budget": args.budget, "norms": args.norms,
                        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                        "machine": platform.platform(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(),
                        "bisection_steps": LIMITS.bisection_steps,
                        "crown_budget": LIMITS.crown_budget,
                        "seconds_total": time.perf_counter() - t0}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
