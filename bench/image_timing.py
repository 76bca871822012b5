"""Paired wall-time measurements of the image benchmark: mmargin against a peer, back to
back in one process on the same images, alternating which goes first, so each pair runs
under nearly the same machine load (robust to a shared machine's load changing during a
long run). Which peers are timed: :func:`timing_targets`.

Beside the pairs at one budget, :func:`matched_timing` times mmargin at the smallest budget
of the run where its pooled optimality already reaches the peer's optimality at the main
budget against that peer at the main budget: the time each needs for the peer's quality
(AttackBench's curves read the same way). It is a second figure, not the first one
redone: the budget is chosen after seeing the run's optimality on these images."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np
import torch
from image_report import ok_row
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


def _pairs(
    method: Method, ours_budget: int, method_budget: int, norm: str, args: argparse.Namespace,
    counter: CountingModule, x: torch.Tensor, y: torch.Tensor,
) -> list[tuple[float, float]]:  # fmt: skip
    """``--timing-repeats`` back-to-back runs of mmargin at ``ours_budget`` and ``method`` at
    ``method_budget`` on ``x``, alternating which goes first: (mmargin s, method s) each."""
    ours = METHODS["mmargin"]
    pairs = []
    for rep in range(args.timing_repeats):
        if rep % 2 == 0:
            t_ours = _timed(ours, norm, ours_budget, args, counter, x, y)
            t_them = _timed(method, norm, method_budget, args, counter, x, y)
        else:
            t_them = _timed(method, norm, method_budget, args, counter, x, y)
            t_ours = _timed(ours, norm, ours_budget, args, counter, x, y)
        pairs.append((t_ours, t_them))
    return pairs


def _timed_pairs(
    row: dict[str, Any], key: str, ours_budget: int, budget: int, norm: str,
    args: argparse.Namespace, counter: CountingModule, x: torch.Tensor, y: torch.Tensor,
    tag: str,
) -> dict[str, Any] | None:  # fmt: skip
    """:func:`_pairs` of mmargin at ``ours_budget`` against ``row``'s method at ``budget`` on
    the first ``--timing-samples`` images: the raw pairs and the median ratio, or ``None``
    after a crash, which is recorded on ``row`` as ``<key>_error`` (it must not sink the run)."""
    xs, ys = x[: args.timing_samples], y[: args.timing_samples]
    try:
        pairs = _pairs(METHODS[row["method"]], ours_budget, budget, norm, args, counter, xs, ys)
    except Exception as exc:  # noqa: BLE001 - a crash in timing must not sink the run
        row[f"{key}_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{tag} {norm}] {key.replace('_', ' ')} {row['method']}: ERROR {exc}")
        return None
    return {
        "samples": int(xs.shape[0]),
        "seconds_pairs_mmargin_method": pairs,
        "median_ratio": float(np.median([a / b for a, b in pairs])),
    }


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
    for r in rows:
        if r["method"] not in targets:
            continue
        timed = _timed_pairs(r, "paired_timing", budget, budget, norm, args, counter, x, y, tag)
        if timed is None:
            continue
        r["paired_timing"] = timed
        log(f"[{tag} {norm}] paired timing mmargin / {r['method']}: {timed['median_ratio']:.2f}")


def matched_budget(runs: dict[int, list[dict[str, Any]]], needed: float) -> int | None:
    """The smallest budget of ``runs`` whose mmargin row's pooled optimality is at least
    ``needed`` (``None``: no budget reaches it)."""
    for budget in sorted(runs):
        ours = ok_row(runs[budget], "mmargin")
        score = ours.get("optimality") if ours is not None else None
        if score is not None and math.isfinite(score) and score >= needed:
            return budget
    return None


def matched_timing(
    runs: dict[int, list[dict[str, Any]]], norm: str, budget: int, args: argparse.Namespace,
    counter: CountingModule, x: torch.Tensor, y: torch.Tensor, tag: str = "",
) -> None:  # fmt: skip
    """The time mmargin needs for the quality of the fastest peer reaching optimality >= 0.9
    at the main ``budget``, against that peer's time: mmargin at :func:`matched_budget` of
    the peer's optimality, timed back to back against the peer at ``budget`` as in
    :func:`paired_timing`. Recorded on the peer's main row as ``matched_timing``; at the
    main budget itself the pairs of :func:`paired_timing` are that figure (no rerun)."""
    if args.timing_repeats <= 0 or not args.matched_timing or "mmargin" not in args.methods:
        return
    rows = runs[budget]
    chosen = fastest_qualifying(rows, TIMING_THRESHOLD)
    peer = next((r for r in rows if r["method"] == chosen), None)
    if peer is None:
        return
    needed = float(peer["optimality"])
    at = matched_budget(runs, needed)
    record: dict[str, Any] = {"mmargin_budget": at, "method_optimality": needed}
    ours = ok_row(runs[at], "mmargin") if at is not None else None
    if ours is not None:
        record["mmargin_optimality"] = ours["optimality"]
    if at == budget:
        if "paired_timing" not in peer:
            return
        record.update(peer["paired_timing"], same_as_paired=True)
    elif at is not None:
        timed = _timed_pairs(peer, "matched_timing", at, budget, norm, args, counter, x, y, tag)
        if timed is None:
            return
        record.update(timed)
    peer["matched_timing"] = record
    if "median_ratio" in record:
        log(
            f"[{tag} {norm}] mmargin @{at} (optimality {record['mmargin_optimality']:.3f}) / "
            f"{peer['method']} @{budget} ({needed:.3f}): {record['median_ratio']:.2f}"
        )
