"""Minimal-norm adversarial search on MNIST models: mmargin against peer libraries.

For every model (``--models``, MNIST models of the zoo, ``bench/zoo.py``), every norm and
every budget (``--budgets``), every method runs in this one process on the same model
object (eval mode, frozen parameters, wrapped in one shared pass counter), the same first
``--samples`` images of the MNIST test split, the same CPU threads, configured for that
per-sample budget of forward + backward passes. Every returned adversarial is re-checked
here: it counts only if the model's prediction differs from the label and every pixel is in
``[0, 1]``; its distance is computed here from ``adv - x`` in float32 (L0: the number of
pixels that changed). Samples the model already misclassifies count as distance 0 for every
method. Optimality is pooled per model and norm: against the per-sample best over every row
of every budget. mmargin is then timed back to back against the fastest peer reaching
optimality ≥ 0.9 at the largest budget (``--timing-all``: against every peer), and at the
smallest budget where its optimality reaches that peer's, against the peer at the largest
(``--no-matched-timing``: not).

    python bench/image_bench.py --samples 100 --budgets 100 250 500 1000 \
        --norms l2 linf l1 --out bench/results/image.json

writes the JSON (all figures, configurations and per-sample distances) and a markdown file
next to it (same name, ``.md``): a headline table per model and norm, budget curves and the
detailed rows at the largest budget. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from image_provenance import cpu_kernels, import_libraries, provenance, version
from image_report import combine, json_dist, markdown, restore_report, write
from image_timing import log, matched_timing, paired_timing, timing_targets
from metrics import TIMING_THRESHOLD, score_runs
from peer_base import ALL_NORMS, NORMS, Method
from peers import METHODS

from mmargin.engine.counting import CountingModule

_P = {"l2": 2.0, "linf": math.inf, "l1": 1.0}
DEFAULT_BUDGETS = (100, 250, 500, 1000)


def default_models() -> list[str]:
    """The MNIST models of the zoo's evaluation set (the lead's evaluation run)."""
    import zoo

    return [n for n in zoo.names("evaluation") if zoo.MEMBERS[n].data == "mnist"]


def mnist_models() -> list[str]:
    """Every MNIST model of the zoo (the shipped digits MLP and digits members excluded)."""
    import zoo

    def data(name: str) -> str:
        member = zoo.MEMBERS.get(name)
        return member.data if member is not None else name.split("_")[0]

    return [n for n in zoo.names() if data(n) == "mnist"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="MNIST models of the zoo (bench/zoo.py); default: the evaluation set's",
    )
    which.add_argument("--model", default=None, help="one model (same as --models NAME)")
    parser.add_argument("--samples", type=int, default=100, help="first N MNIST test images")
    budgets = parser.add_mutually_exclusive_group()
    budgets.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=None,
        help="passes per sample; every method runs once per budget, configured for it; the "
        f"largest is the main budget (default {' '.join(map(str, DEFAULT_BUDGETS))})",
    )
    budgets.add_argument("--budget", type=int, default=None, help="one budget (= --budgets N)")
    parser.add_argument(
        "--norms", nargs="+", default=list(NORMS), choices=ALL_NORMS, help="default l2 linf l1"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=500, help="same batches for all")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timing-samples", type=int, default=100, help="images for the paired timing runs"
    )
    parser.add_argument(
        "--timing-repeats", type=int, default=3, help="paired mmargin/method runs (0: none)"
    )
    parser.add_argument(
        "--timing-all",
        action="store_true",
        help="time mmargin against every peer, not only the fastest one with optimality "
        f">= {TIMING_THRESHOLD} at the main budget",
    )
    parser.add_argument(
        "--no-matched-timing",
        dest="matched_timing",
        action="store_false",
        help="skip the second paired timing: mmargin at the smallest budget whose optimality "
        "reaches that peer's at the main budget, against the peer at the main budget",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/image.json"))
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite the .md from the --out JSON"
    )
    parser.add_argument(
        "--combine",
        nargs="+",
        default=None,
        metavar="JSON[:NORM,...]",
        help="write one report (--out, JSON and .md) of these runs' models; runs nothing. "
        "JSON:l2,linf takes only those norms of a run",
    )
    args = parser.parse_args(argv)
    args.budgets = sorted(
        set([args.budget] if args.budget is not None else (args.budgets or DEFAULT_BUDGETS))
    )
    if args.budgets[0] < 1:
        parser.error("budgets must be >= 1 pass per sample")
    args.main_budget = args.budgets[-1]
    if args.samples < 1 or args.batch_size < 1:
        parser.error("--samples and --batch-size must be >= 1")
    args.models = [args.model] if args.model is not None else args.models
    return args


def perturbation_sizes(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample size of ``delta`` (``(N, C, H, W)`` or ``(N, D)``) in float32: the Lp norm
    over all coordinates, or for ``l0`` the number of pixels with any channel changed
    (exactly nonzero; with one channel, as on MNIST, the number of changed coordinates)."""
    delta = delta.to(torch.float32)
    if norm == "l0":
        changed = delta != 0
        if changed.ndim == 4:  # NCHW: a pixel changes when any of its channels does
            changed = changed.any(dim=1)
        return changed.flatten(1).sum(dim=1).to(torch.float32)
    return torch.linalg.vector_norm(delta.flatten(1), ord=_P[norm], dim=1)


def _verify(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    adv: torch.Tensor,
    correct: torch.Tensor,
    norm: str,
) -> tuple[np.ndarray, dict[str, int]]:
    """Per-sample distances of a method's output, checked here; ``inf`` where invalid."""
    adv = adv.detach().to(torch.float32).reshape(x.shape)
    finite = torch.isfinite(adv).flatten(1).all(dim=1)
    in_box = ((adv >= 0) & (adv <= 1)).flatten(1).all(dim=1)
    with torch.no_grad():
        pred = model(torch.nan_to_num(adv)).argmax(dim=1)
    flipped = pred != y
    valid = finite & in_box & flipped
    dist = torch.where(valid, perturbation_sizes(adv - x, norm), torch.full(y.shape, math.inf))
    dist[~correct] = 0.0
    checks = {
        "not_finite": int((correct & ~finite).sum()),
        "outside_box": int((correct & finite & ~in_box).sum()),
        "not_adversarial": int((correct & finite & in_box & ~flipped).sum()),
        "zero_image": int((correct & (adv.flatten(1) == 0).all(dim=1)).sum()),
    }
    return dist.numpy().astype(np.float64), checks


def error_line(exc: BaseException) -> str:
    """A caught exception as a result: its type, message and innermost place."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno})"


def _run_method(
    method: Method,
    norm: str,
    budget: int,
    args: argparse.Namespace,
    model: torch.nn.Module,
    counter: CountingModule,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: torch.Tensor,
) -> dict[str, Any]:
    cfg = method.config(norm, budget)
    n = x.shape[0]
    load_before = os.getloadavg()[0]
    counter.reset()
    torch.manual_seed(args.seed)
    advs: list[torch.Tensor] = []
    extras: list[dict[str, Any]] = []
    error = None
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        for start in range(0, n, args.batch_size):
            xb, yb = x[start : start + args.batch_size].clone(), y[start : start + args.batch_size]
            adv, extra = method.run(counter, xb, yb.clone(), norm, cfg)
            advs.append(adv)
            extras.append(extra)
    except Exception as exc:  # noqa: BLE001 - a peer crashing is a result to record
        error = error_line(exc)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    row: dict[str, Any] = {
        "method": method.key,
        "budget": budget,
        "library": method.library,
        "attack": method.attack,
        "config": cfg,
        "notes": method.notes.get(norm),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "forward_per_sample": counter.counter.forward / n,
        "backward_per_sample": counter.counter.backward / n,
        "passes_per_sample": counter.passes / n,
    }
    row["within_budget"] = row["passes_per_sample"] <= budget
    row["load_average_1min"] = [load_before, os.getloadavg()[0]]
    if error is not None:
        row.update(status="error", error=error)
        return row
    dist, checks = _verify(model, x, y, torch.cat(advs), correct, norm)
    row.update(status="ok", checks=checks, _dist=dist)
    if method.key == "mmargin":
        row["mmargin"] = _mmargin_checks(extras, dist, row["passes_per_sample"])
    return row


def _mmargin_checks(
    extras: list[dict[str, Any]], dist: np.ndarray, measured: float
) -> dict[str, Any]:
    """mmargin's own figures against the harness's: queries and margins must agree."""
    queries = np.concatenate([np.asarray(e["reported_queries"], dtype=np.float64) for e in extras])
    margins = np.concatenate([np.asarray(e["reported_margin"], dtype=np.float64) for e in extras])
    status = [s for e in extras for s in e["status"]]
    flipped = np.array([s == "flipped" for s in status])
    both = flipped & np.isfinite(dist)
    diff = np.abs(margins[both] - dist[both])
    return {
        "reported_queries_per_sample": float(queries.mean()),
        "measured_passes_per_sample": measured,
        "queries_agree": bool(abs(float(queries.mean()) - measured) < 1e-9),
        "max_reported_queries": int(queries.max()),
        "status_counts": {s: status.count(s) for s in sorted(set(status))},
        "flipped_but_rejected_here": int((flipped & ~np.isfinite(dist)).sum()),
        "max_abs_margin_difference": float(diff.max()) if diff.size else 0.0,
    }


def _run_norm(
    norm: str, args: argparse.Namespace, model: torch.nn.Module, counter: CountingModule,
    x: torch.Tensor, y: torch.Tensor, correct_t: torch.Tensor, tag: str,
) -> dict[str, Any]:  # fmt: skip
    """Every method at every budget on one model and norm, scored against the pooled best,
    then the paired timing at the main budget: the report's block for this norm."""
    runs: dict[int, list[dict[str, Any]]] = {}
    for budget in args.budgets:
        rows = []
        for key in args.methods:
            method = METHODS[key]
            if norm not in method.norms:
                continue
            log(f"[{tag} {norm} @{budget}] {key} ...")
            row = _run_method(method, norm, budget, args, model, counter, x, y, correct_t)
            rows.append(row)
            status = row["status"] if row["status"] == "ok" else f"ERROR {row['error']}"
            log(
                f"[{tag} {norm} @{budget}] {key}: {status}, "
                f"{row['passes_per_sample']:.1f} passes/sample, {row['seconds']:.1f} s"
            )
        runs[budget] = rows
    pooled, per_budget = score_runs(runs, correct_t.numpy())
    main_rows = runs[args.main_budget]
    targets = timing_targets(main_rows, args.timing_all)
    paired_timing(main_rows, targets, norm, args.main_budget, args, counter, x, y, tag)
    matched_timing(runs, norm, args.main_budget, args, counter, x, y, tag)
    for rows in runs.values():
        for r in rows:
            if "_dist" in r:
                r["distances"] = json_dist(r.pop("_dist"))
    return {
        "main_budget": args.main_budget,
        "runs": {str(b): rows for b, rows in runs.items()},
        "best_distances": json_dist(pooled) if pooled is not None else None,
        "best_distances_per_budget": {str(b): json_dist(d) for b, d in per_budget.items()},
        "timing": {
            "rule": "every peer"
            if args.timing_all
            else f"fastest peer (main-run wall time) with optimality >= {TIMING_THRESHOLD}",
            "against": targets,
            "budget": args.main_budget,
        },
    }


def _model_block(name: str) -> dict[str, Any]:
    """What the zoo says about model ``name`` (recipe and set), for the report."""
    import zoo

    member = zoo.MEMBERS.get(name)
    if member is None:
        return {"name": name, "role": "tuning", "architecture": "shipped", "training": "standard"}
    return {
        "name": name,
        "role": member.role,
        "architecture": member.architecture,
        "training": member.training,
        "eps": member.eps,
    }


def _combine_part(text: str) -> tuple[Path, list[str] | None]:
    """``PATH`` or ``PATH:NORM,NORM`` of ``--combine``: a run's JSON and the norms to take
    from it (``None``: all). A suffix that is not a list of norms is part of the path."""
    path, sep, tail = text.rpartition(":")
    wanted = tail.split(",")
    if sep and path and all(n in ALL_NORMS for n in wanted):
        return Path(path), wanted
    return Path(text), None


def _from_json(args: argparse.Namespace) -> int:
    """``--combine`` (one report of several runs) or ``--markdown-only`` (re-render the .md):
    finished reports in, files out, no run."""
    try:
        if args.combine:
            parts = [_combine_part(part) for part in args.combine]
            report = combine([json.loads(p.read_text()) for p, _ in parts], [n for _, n in parts])
        else:
            report = restore_report(json.loads(args.out.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        print(f"image_bench: cannot read the report(s): {exc}", file=sys.stderr)
        return 2
    if args.combine:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write(report, args.out)
    else:
        args.out.with_suffix(".md").write_text(markdown(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.combine or args.markdown_only:
        return _from_json(args)
    import zoo

    from mmargin_image.data import load_mnist

    models = args.models if args.models is not None else default_models()
    unknown = [n for n in models if n not in mnist_models()]
    if unknown:
        print(
            f"image_bench: not an MNIST model of the zoo: {', '.join(unknown)}; "
            f"one of {', '.join(mnist_models())}",
            file=sys.stderr,
        )
        return 2
    try:  # every model loads before any run starts (a missing weights file: one line)
        loaded = {name: zoo.load(name) for name in models}
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"image_bench: {exc}", file=sys.stderr)
        return 2

    torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    data = load_mnist("test")
    x = torch.from_numpy(np.ascontiguousarray(data.x[: args.samples]))
    y = torch.from_numpy(np.ascontiguousarray(data.y[: args.samples]))
    # import what the methods import, outside every timing
    import_libraries(args.methods)
    source = provenance()
    versions = {
        n: version(n)
        for n in (
            "torch",
            "foolbox",
            "adv-lib",
            "torchattacks",
            "eagerpy",
            "torchvision",
            "numpy",
            "mmargin",
        )
    }
    report: dict[str, Any] = {
        "meta": {
            "benchmark": "minimal-norm adversarial search on MNIST models",
            "models": models,
            "command": "python "
            + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "samples": int(x.shape[0]),
            "ids": list(data.ids[: args.samples]),
            "budgets": args.budgets,
            "budget": args.main_budget,
            "norms": args.norms,
            "batch_size": args.batch_size,
            "timing_samples": min(args.timing_samples, int(x.shape[0])),
            "timing_repeats": args.timing_repeats,
            "timing_all": args.timing_all,
            "matched_timing": args.matched_timing,
            "threads": torch.get_num_threads(),
            "device": "cpu",
            "seed": args.seed,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu": cpu_kernels(),
            "mmargin_source": source,
            "environment": {
                k: os.environ.get(k)
                for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
            },
            "versions": versions,
            "counting": "mmargin.engine.counting.CountingModule: forward = batch size per "
            "model call; backward = batch size per backward traversal reaching the model "
            "input; per sample = total / N",
        },
        "models": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name, model in loaded.items():
        counter = CountingModule(model).eval()
        with torch.no_grad():
            correct_t = model(x).argmax(dim=1) == y
        # warm-up, outside every timing: one forward and backward on the batch size used
        xw = x[: args.batch_size].clone().requires_grad_(True)
        model(xw).sum().backward()
        block = {
            **_model_block(name),
            "misclassified": int((~correct_t).sum()),
            "clean_accuracy": float(correct_t.float().mean()),
            "norms": {},
        }
        report["models"][name] = block
        for norm in args.norms:
            block["norms"][norm] = _run_norm(norm, args, model, counter, x, y, correct_t, name)
            report["meta"]["total_seconds"] = time.perf_counter() - wall
            report["meta"]["total_cpu_seconds"] = time.process_time() - cpu
            write(report, args.out)
    log(
        f"wrote {args.out} and {args.out.with_suffix('.md')} "
        f"({report['meta']['total_seconds']:.0f} s, "
        f"CPU {report['meta']['total_cpu_seconds']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
