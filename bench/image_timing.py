"""Paired wall-time measurements of the image benchmark: mmargin against a peer, back to
back in one process on the same images, alternating which goes first, so each pair runs
under nearly the same machine load (robust to a shared machine's load changing during a
long run). Which peers are timed: :func:`timing_targets`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np
import torch
from metrics import TIMING_THRESHOLD, fastest_qualifying
from peer_base import Method
from peers import METHODS

from mmargin.engine.counting import CountingModule


def log(message: str) -> None:
    """One progress line on stderr (the benchmark's log)."""
    print(message, file=sys.stderr, flush=True)


def _timed(
    method: Method, norm: str, budget: int, args: argparse.Namespace, counter: CountingModule,
    x: torch.Tensor, y: torch.Tensor,
) -> float:  # fmt: skip
    cfg = method.config(norm, budget)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    method.run(counter, x.clone(), y.clone(), norm, cfg)
    return time.perf_counter() - started


def timing_targets(rows: list[dict[str, Any]], every_peer: bool) -> list[str]:
    """The peers mmargin is timed against at the main budget: every peer that ran
    (``every_peer``), else the fastest one reaching optimality >= 0.9 (none if none does)."""
    if every_peer:
        return [r["method"] for r in rows if r["status"] == "ok" and r["method"] != "mmargin"]
    chosen = fastest_qualifying(rows, TIMING_THRESHOLD)
    return [] if chosen is None else [chosen]


def paired_timing(
    rows: list[dict[str, Any]], targets: list[str], norm: str, budget: int,
    args: argparse.Namespace, counter: CountingModule, x: torch.Tensor, y: torch.Tensor,
    tag: str = "",
) -> None:  # fmt: skip
    """Time mmargin and each target method back to back on the first ``--timing-samples``
    images, alternating which goes first, ``--timing-repeats`` times: each pair runs under
    nearly the same machine load, so the median of the paired ratios is robust to a shared
    machine's load changing during the (long) main run."""
    if args.timing_repeats <= 0 or "mmargin" not in args.methods:
        return
    xs, ys = x[: args.timing_samples], y[: args.timing_samples]
    ours = METHODS["mmargin"]
    for r in rows:
        if r["method"] not in targets:
            continue
        method = METHODS[r["method"]]
        pairs = []
        try:
            for rep in range(args.timing_repeats):
                if rep % 2 == 0:
                    t_ours = _timed(ours, norm, budget, args, counter, xs, ys)
                    t_them = _timed(method, norm, budget, args, counter, xs, ys)
                else:
                    t_them = _timed(method, norm, budget, args, counter, xs, ys)
                    t_ours = _timed(ours, norm, budget, args, counter, xs, ys)
                pairs.append((t_ours, t_them))
        except Exception as exc:  # noqa: BLE001 - a crash in timing must not sink the run
            r["paired_timing_error"] = f"{type(exc).__name__}: {exc}"
            log(f"[{tag} {norm}] paired timing {r['method']}: ERROR {exc}")
            continue
        r["paired_timing"] = {
            "samples": int(xs.shape[0]),
            "seconds_pairs_mmargin_method": pairs,
            "median_ratio": float(np.median([a / b for a, b in pairs])),
        }
        ratio = r["paired_timing"]["median_ratio"]
        log(f"[{tag} {norm}] paired timing mmargin / {r['method']}: {ratio:.2f}")
