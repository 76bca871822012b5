"""Minimal-norm adversarial search on an MNIST CNN: mmargin against peer libraries.

Every method runs in this one process on the same model object (eval mode, frozen
parameters, wrapped in one shared pass counter), the same first ``--samples`` images of the
MNIST test split, the same CPU threads and the same per-sample budget of forward + backward
passes. Every returned adversarial is re-checked here: it counts only if the model's
prediction differs from the label and every pixel is in ``[0, 1]``; its distance is
computed here from ``adv - x`` in float32. Samples the model already misclassifies count
as distance 0 for every method.

    python bench/image_bench.py --samples 500 --budget 1000 --norms l2 linf l1 \
        --out bench/results/image.json

writes the JSON (all figures, configurations and per-sample distances) and a markdown
table per norm next to it (same name, ``.md``). See ``bench/README.md``.
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
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from image_report import json_dist, markdown, write
from metrics import (
    attackbench_optimality,
    attackbench_optimality_trapz,
    median_distance,
    per_sample_best,
    success_rate,
)
from peers import METHODS, NORMS, Method

from mmargin.engine.counting import CountingModule

_P = {"l2": 2.0, "linf": math.inf, "l1": 1.0}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="mnist_cnn", help="an MNIST model of the zoo (bench/zoo.py)"
    )
    parser.add_argument("--samples", type=int, default=500, help="first N MNIST test images")
    parser.add_argument("--budget", type=int, default=1000, help="passes per sample")
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS)
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
    parser.add_argument("--out", type=Path, default=Path("bench/results/image.json"))
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite the .md from the --out JSON"
    )
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _distances(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1).to(torch.float32)
    return torch.linalg.vector_norm(flat, ord=_P[norm], dim=1)


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
    dist = torch.where(valid, _distances(adv - x, norm), torch.full(y.shape, math.inf))
    dist[~correct] = 0.0
    checks = {
        "not_finite": int((correct & ~finite).sum()),
        "outside_box": int((correct & finite & ~in_box).sum()),
        "not_adversarial": int((correct & finite & in_box & ~flipped).sum()),
        "zero_image": int((correct & (adv.flatten(1) == 0).all(dim=1)).sum()),
    }
    return dist.numpy().astype(np.float64), checks


def _run_method(
    method: Method,
    norm: str,
    args: argparse.Namespace,
    model: torch.nn.Module,
    counter: CountingModule,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: torch.Tensor,
) -> dict[str, Any]:
    cfg = method.config(norm, args.budget)
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
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        error = f"{type(exc).__name__}: {exc} (at {where})"
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    row: dict[str, Any] = {
        "method": method.key,
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
    row["within_budget"] = row["passes_per_sample"] <= args.budget
    row["load_average_1min"] = [load_before, os.getloadavg()[0]]
    if error is not None:
        row.update(status="error", error=error)
        return row
    dist, checks = _verify(model, x, y, torch.cat(advs), correct, norm)
    row.update(status="ok", checks=checks, _dist=dist)
    if method.key == "mmargin":
        row["mmargin"] = _mmargin_checks(extras, dist, row["passes_per_sample"])
    return row


def _timed(
    method: Method, norm: str, args: argparse.Namespace, counter: CountingModule,
    x: torch.Tensor, y: torch.Tensor,
) -> float:  # fmt: skip
    cfg = method.config(norm, args.budget)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    method.run(counter, x.clone(), y.clone(), norm, cfg)
    return time.perf_counter() - started


def _paired_timing(
    rows: list[dict[str, Any]], norm: str, args: argparse.Namespace, counter: CountingModule,
    x: torch.Tensor, y: torch.Tensor,
) -> None:  # fmt: skip
    """Time mmargin and each method back to back on the first ``--timing-samples`` images,
    alternating which goes first, ``--timing-repeats`` times: each pair runs under nearly
    the same machine load, so the median of the paired ratios is robust to a shared
    machine's load changing during the (long) main run."""
    if args.timing_repeats <= 0 or "mmargin" not in args.methods:
        return
    xs, ys = x[: args.timing_samples], y[: args.timing_samples]
    ours = METHODS["mmargin"]
    for r in rows:
        if r["status"] != "ok" or r["method"] == "mmargin":
            continue
        method = METHODS[r["method"]]
        pairs = []
        for rep in range(args.timing_repeats):
            if rep % 2 == 0:
                t_ours = _timed(ours, norm, args, counter, xs, ys)
                t_them = _timed(method, norm, args, counter, xs, ys)
            else:
                t_them = _timed(method, norm, args, counter, xs, ys)
                t_ours = _timed(ours, norm, args, counter, xs, ys)
            pairs.append((t_ours, t_them))
        r["paired_timing"] = {
            "samples": int(xs.shape[0]),
            "seconds_pairs_mmargin_method": pairs,
            "median_ratio": float(np.median([a / b for a, b in pairs])),
        }
        _log(f"[{norm}] paired timing {r['method']}: {r['paired_timing']['median_ratio']:.2f}")


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


def _finish_norm(rows: list[dict[str, Any]], correct: np.ndarray) -> np.ndarray | None:
    """Add success, median, optimality and the time ratio to every row; the best distances."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    best = per_sample_best([r["_dist"] for r in ok])
    ours = next((r for r in ok if r["method"] == "mmargin"), None)
    for r in rows:
        r["mmargin_time_ratio"] = (
            ours["seconds"] / r["seconds"] if ours is not None and r["seconds"] > 0 else None
        )
        r["mmargin_cpu_time_ratio"] = (
            ours["cpu_seconds"] / r["cpu_seconds"]
            if ours is not None and r["cpu_seconds"] > 0
            else None
        )
        if r["status"] != "ok":
            continue
        d = r["_dist"]
        r["success_rate"] = success_rate(d, correct)
        r["median_distance"] = median_distance(d, correct)
        r["optimality"] = attackbench_optimality(d, best)
        r["optimality_attackbench_code"] = attackbench_optimality_trapz(d, best)
        at_best = correct & np.isfinite(best) & (d <= best * (1 + 1e-4))
        r["best_on_fraction"] = float(at_best.sum() / max(int(correct.sum()), 1))
    return best


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.markdown_only:
        report = json.loads(args.out.read_text())
        for block in report["norms"].values():
            for r in block["methods"]:  # JSON null stands for an infinite median
                if r["status"] == "ok" and r.get("median_distance") is None:
                    r["median_distance"] = math.inf
        args.out.with_suffix(".md").write_text(markdown(report))
        return 0
    from zoo import load

    from mmargin_image.data import load_mnist

    torch.set_num_threads(args.threads)
    wall = time.perf_counter()
    model = load(args.model)
    counter = CountingModule(model).eval()
    data = load_mnist("test")
    x = torch.from_numpy(np.ascontiguousarray(data.x[: args.samples]))
    y = torch.from_numpy(np.ascontiguousarray(data.y[: args.samples]))
    with torch.no_grad():
        correct_t = model(x).argmax(dim=1) == y
    correct = correct_t.numpy()
    # warm-up, outside every timing: import what the methods import, run one forward and
    # backward on the batch size used
    _import_libraries(args.methods)
    xw = x[: args.batch_size].clone().requires_grad_(True)
    model(xw).sum().backward()
    provenance = _provenance()

    versions = {
        n: _version(n)
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
            "benchmark": f"minimal-norm adversarial search, MNIST model {args.model}",
            "model": args.model,
            "command": "python "
            + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "samples": int(x.shape[0]),
            "ids": list(data.ids[: args.samples]),
            "misclassified": int((~correct).sum()),
            "budget": args.budget,
            "batch_size": args.batch_size,
            "timing_samples": min(args.timing_samples, int(x.shape[0])),
            "timing_repeats": args.timing_repeats,
            "threads": torch.get_num_threads(),
            "device": "cpu",
            "seed": args.seed,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "mmargin_source": provenance,
            "environment": {
                k: os.environ.get(k)
                for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")
            },
            "versions": versions,
            "counting": "mmargin.engine.counting.CountingModule: forward = batch size per "
            "model call; backward = batch size per backward traversal reaching the model "
            "input; per sample = total / N",
        },
        "norms": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for norm in args.norms:
        rows = []
        for key in args.methods:
            method = METHODS[key]
            if norm not in method.norms:
                continue
            _log(f"[{norm}] {key} ...")
            row = _run_method(method, norm, args, model, counter, x, y, correct_t)
            rows.append(row)
            status = row["status"] if row["status"] == "ok" else f"ERROR {row['error']}"
            _log(
                f"[{norm}] {key}: {status}, {row['passes_per_sample']:.1f} passes/sample, "
                f"{row['seconds']:.1f} s"
            )
        best = _finish_norm(rows, correct)
        _paired_timing(rows, norm, args, counter, x, y)
        for r in rows:
            if "_dist" in r:
                r["distances"] = json_dist(r.pop("_dist"))
        report["norms"][norm] = {
            "methods": rows,
            "best_distances": json_dist(best) if best is not None else None,
        }
        report["meta"]["total_seconds"] = time.perf_counter() - wall
        write(report, args.out)
    _log(
        f"wrote {args.out} and {args.out.with_suffix('.md')} "
        f"({report['meta']['total_seconds']:.0f} s)"
    )
    return 0


def _provenance() -> dict[str, Any]:
    """Which mmargin source ran: git HEAD, uncommitted files, a hash of each loaded module."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parent.parent

    def git(*cmd: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *cmd], cwd=root, capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", "mmargin", "plugins/mmargin-image")
    sources = {}
    for name, module in sorted(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in ("mmargin", "mmargin_image") and path:
            sources[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return {
        "git_head": git("rev-parse", "HEAD"),
        "uncommitted": status.splitlines() if status else [],
        "module_sha256": sources,
    }


def _import_libraries(keys: list[str]) -> None:
    import importlib

    modules = {
        "mmargin": ["mmargin.engine.flip", "mmargin.adapters", "mmargin_image.plugin"],
        "foolbox": ["foolbox"],
        "adv_lib": ["adv_lib.attacks"],
        "torchattacks": ["torchattacks"],
    }
    for library in sorted({key.split(".")[0] for key in keys}):
        for name in modules[library]:
            importlib.import_module(name)


if __name__ == "__main__":
    raise SystemExit(main())
