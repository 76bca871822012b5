"""The gradient step's overhead: one engine step against a bare forward + backward.

For every model, norm and batch size, ``K`` steps of the engine's inner loop
(:func:`mmargin.engine.epsball.epsball_run`: the counted adapter's forward, the margin
loss, the input gradient, the space's free gradient, the ε / α / γ bookkeeping, the
best-so-far updates and the projections onto the ball and the box) are timed against
``K`` *bare* steps on the same batch and the same model object — ``model(x + δ)``, the
margin loss and ``torch.autograd.grad``, nothing else. The two run back to back in one
process, in alternating order, ``--repeats`` times; the overhead is the median of the
paired ratios minus one.

The second table splits a whole ``minimal_flip`` call (clean pass, random baseline, the
search, the line search, re-verification) against the gradient search alone, both timed
paired in the same way, so that it is clear where time goes outside the step.
``--profile`` adds the top operators of a torch profile of the engine steps.

    python bench/overhead.py --out bench/results/overhead.json

writes the JSON record and a Markdown table beside it (``make bench-overhead``).
Only tuning-set models are accepted (the engine never runs on the evaluation set here).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from outputs import write_outputs
from torch import Tensor, nn

NORMS = ("l2", "linf", "l1", "l0")
TUNING_MNIST = ("mnist_cnn", "tune_cnn_fgsm")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(TUNING_MNIST))
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS)
    parser.add_argument("--batches", nargs="+", type=int, default=[100, 500])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run (K)")
    parser.add_argument("--repeats", type=int, default=7, help="paired engine/bare runs")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--call-budget", type=int, default=1000, help="passes per sample of the whole call"
    )
    parser.add_argument(
        "--call-samples", type=int, default=100, help="images of the whole-call split (0: none)"
    )
    parser.add_argument("--call-repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="torch-profile engine steps")
    parser.add_argument("--out", type=Path, default=Path("bench/results/overhead.json"))
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def margin_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """``z_y − max_{j≠y} z_j`` per sample: the untargeted margin loss, written out."""
    true = scores.gather(1, labels.unsqueeze(1)).squeeze(1)
    other = scores.scatter(1, labels.unsqueeze(1), float("-inf")).amax(dim=1)
    return true - other


def bare_steps(model: nn.Module, x: Tensor, labels: Tensor, deltas: list[Tensor]) -> None:
    """One bare gradient step at each of ``deltas``: forward, margin loss, input gradient,
    nothing else. The points are the engine's own iterates (:meth:`Engine.iterates`): a
    model's cost depends on its input (max pooling branches on it, so a batch at δ = 0,
    full of equal zeros, runs several percent faster than the dense points of a search)."""
    for delta in deltas:
        d = delta.requires_grad_(True)  # the recorded tensor itself: no copy
        loss = margin_loss(model(x + d), labels)
        torch.autograd.grad(loss.sum(), d)


class _Recorder(nn.Module):
    """The model, keeping a copy of every input batch it is called on."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        """The model's scores; ``x`` is recorded."""
        self.seen.append(x.detach().clone())
        out: Tensor = self.model(x)
        return out


class Engine:
    """What the engine's step runs on: the counted adapter, the image space, the distance."""

    def __init__(self, model: nn.Module, norm: str, steps: int) -> None:
        from mmargin.adapters import TorchAdapter
        from mmargin.distances import fit_distance, lp
        from mmargin.engine.counting import CountingAdapter
        from mmargin.engine.spec import GradientConfig
        from mmargin.goals import Untargeted
        from mmargin_image.plugin import image_space

        self.model = CountingAdapter(TorchAdapter(model))
        self.space = image_space()
        self.distance = fit_distance(self.space, lp(norm))
        self.goal = Untargeted()
        self.config = GradientConfig(patience=0)
        self.steps = steps

    def iterates(self, x: Tensor, labels: Tensor) -> list[Tensor]:
        """The perturbations δ at which :meth:`run` evaluates the model, step by step."""
        from mmargin.adapters import TorchAdapter
        from mmargin.engine.counting import CountingAdapter

        counted = self.model
        recorder = _Recorder(counted.model.module)
        self.model = CountingAdapter(TorchAdapter(recorder))
        try:
            self.run(x, labels)
        finally:
            self.model = counted
        return [seen - x for seen in recorder.seen]

    def run(self, x: Tensor, labels: Tensor) -> None:
        """``steps`` engine steps from δ = 0, the first run's check included."""
        from mmargin.engine.epsball import epsball_run
        from mmargin.engine.problem import Problem
        from mmargin.engine.state import SearchState

        state = SearchState.empty(x)
        problem = Problem(self.model, self.space, self.distance, self.goal, x, labels)
        epsball_run(problem, self.steps, self.config, torch.zeros_like(x), state)


def paired(first: Callable[[], None], second: Callable[[], None], repeats: int) -> dict[str, Any]:
    """Time ``first`` and ``second`` back to back ``repeats`` times, alternating which runs
    first; the median seconds of each and the median of the paired ratios first/second."""
    a: list[float] = []
    b: list[float] = []
    a_cpu: list[float] = []
    b_cpu: list[float] = []
    first()
    second()  # warm-up: allocator, threads, lazy imports
    for r in range(repeats):
        order = [(first, a, a_cpu), (second, b, b_cpu)]
        for fn, wall, cpu in order if r % 2 == 0 else order[::-1]:
            t, c = time.perf_counter(), time.process_time()
            fn()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - t)
    ratios = [p / q for p, q in zip(a, b, strict=True)]
    cpu_ratios = [p / q for p, q in zip(a_cpu, b_cpu, strict=True) if q > 0]
    return {
        "first_s": statistics.median(a),
        "second_s": statistics.median(b),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "cpu_ratio": statistics.median(cpu_ratios) if cpu_ratios else math.nan,
        "first_cpu_s": statistics.median(a_cpu),
        "second_cpu_s": statistics.median(b_cpu),
    }


def step_overhead(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One row of the step table: engine vs bare ms per step and the overhead."""
    engine = Engine(model, norm, args.steps)
    deltas = engine.iterates(x, y)
    timing = paired(lambda: engine.run(x, y), lambda: bare_steps(model, x, y, deltas), args.repeats)
    # the engine's own work, apart: the same steps on a linear model, whose forward and
    # backward cost next to nothing, timed in CPU time (short runs, many repeats)
    linear = linear_model(x, int(engine.model(x[:1]).shape[1]))
    alone = Engine(linear, norm, args.steps)
    points = alone.iterates(x, y)
    own = paired(
        lambda: alone.run(x, y), lambda: bare_steps(linear, x, y, points), 3 * args.repeats
    )
    own_ms = 1e3 * (own["first_cpu_s"] - own["second_cpu_s"]) / args.steps
    bare_cpu_ms = 1e3 * timing["second_cpu_s"] / args.steps
    return {
        "batch": int(x.shape[0]),
        "norm": norm,
        "engine_ms_per_step": 1e3 * timing["first_s"] / args.steps,
        "bare_ms_per_step": 1e3 * timing["second_s"] / args.steps,
        "overhead_pct": 100 * (timing["ratio"] - 1),
        "cpu_overhead_pct": 100 * (timing["cpu_ratio"] - 1),
        "paired_ratios": timing["ratios"],
        "engine_own_ms_per_step": own_ms,
        "own_share_pct": 100 * own_ms / bare_cpu_ms,
    }


def linear_model(x: Tensor, classes: int) -> nn.Module:
    """A fixed linear classifier on ``x``'s shape: a model that costs almost nothing, so
    the engine's own work per step shows apart from the model's."""
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(x[0].numel(), classes)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.05)
    model = nn.Sequential(nn.Flatten(), layer).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def call_split(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, args: argparse.Namespace
) -> dict[str, Any]:
    """The whole ``minimal_flip`` call against its gradient search alone (same passes)."""
    from mmargin.adapters import TorchAdapter
    from mmargin.distances import fit_distance, lp
    from mmargin.engine import minimal_flip
    from mmargin.engine.counting import CountingAdapter
    from mmargin.engine.gradient import gradient_search
    from mmargin.engine.problem import Problem
    from mmargin.engine.spec import SearchSpec
    from mmargin.engine.state import Streams
    from mmargin.goals import Untargeted
    from mmargin_image.plugin import image_space

    spec = SearchSpec(budget=args.call_budget, batch_size=len(x), exact="never")
    space = image_space()
    distance = fit_distance(space, lp(norm))
    x_np, y_np = x.numpy(), y.numpy()
    passes = spec.plan(reserve=spec.report_passes + 1).search
    with torch.no_grad():
        keep = model(x).argmax(dim=1) == y  # the driver searches the correct ones only
    xs, ys = x[keep], y[keep]
    ids = [str(i) for i in range(len(xs))]

    def whole() -> None:
        minimal_flip(TorchAdapter(model), space, lp(norm), x_np, y_np, spec=spec)

    def search() -> None:
        counted = CountingAdapter(TorchAdapter(model))
        problem = Problem(counted, space, distance, Untargeted(), xs, ys)
        gradient_search(problem, passes, spec.gradient, Streams.for_samples(spec.seed, ids), 10)

    timing = paired(whole, search, args.call_repeats)
    engine = Engine(model, norm, 20)
    deltas = engine.iterates(xs, ys)
    bare = paired(lambda: bare_steps(model, xs, ys, deltas), lambda: None, 1)
    return {
        "norm": norm,
        "samples": int(x.shape[0]),
        "searched": int(keep.sum()),
        "budget": args.call_budget,
        "search_passes": passes,
        "whole_s": timing["first_s"],
        "search_s": timing["second_s"],
        "whole_over_search": timing["ratio"],
        "bare_equivalent_s": bare["first_s"] * (passes // 2) / len(deltas),
    }


def profile_steps(model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int) -> str:
    """The top operators (self CPU time) of ``steps`` engine steps, as a text table."""
    from torch.profiler import ProfilerActivity, profile

    engine = Engine(model, norm, steps)
    engine.run(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.run(x, y)
    table: str = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    return table


def markdown(record: dict[str, Any]) -> str:
    """The step table and the whole-call table."""
    lines = [
        "## Gradient step overhead over a bare forward + backward",
        "",
        f"{record['steps']} steps per run, median of {record['repeats']} paired runs "
        f"(alternating order), {record['threads']} thread(s), torch {record['torch']}.",
        "",
        "Overhead: median of the paired engine/bare ratios − 1 (wall clock and process CPU "
        "time). Engine's own work: the same steps on a linear model (almost free forward and "
        "backward), engine minus bare CPU ms per step, and that as a share of the bare step "
        "of the model.",
        "",
        "| model | batch | norm | engine ms/step | bare ms/step | overhead (wall) "
        "| overhead (CPU time) | engine's own ms/step | own / bare |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["steps_table"]:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['norm']} | {r['engine_ms_per_step']:.2f} | "
            f"{r['bare_ms_per_step']:.2f} | {r['overhead_pct']:+.1f}% | "
            f"{r['cpu_overhead_pct']:+.1f}% | {r['engine_own_ms_per_step']:.2f} | "
            f"{r['own_share_pct']:.1f}% |"
        )
    if record["call_table"]:
        lines += [
            "",
            "## Whole `minimal_flip` call vs the gradient search alone",
            "",
            "| model | norm | samples (searched) | budget | whole s | search s | whole/search "
            "| bare steps s |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in record["call_table"]:
            lines.append(
                f"| {r['model']} | {r['norm']} | {r['samples']} ({r['searched']}) | "
                f"{r['budget']} | {r['whole_s']:.2f} | {r['search_s']:.2f} | "
                f"{r['whole_over_search']:.3f} | {r['bare_equivalent_s']:.2f} |"
            )
    for name, table in record.get("profiles", {}).items():
        lines += ["", f"### Profile: {name}", "", "```", table, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the tables; returns the exit status."""
    args = _parse(argv)
    from image_provenance import cpu_kernels
    from zoo import load

    from mmargin_image.data import load_mnist

    bad = [m for m in args.models if m not in TUNING_MNIST]
    if bad:
        print(f"overhead: tuning-set MNIST models only ({', '.join(TUNING_MNIST)}), got "
              f"{', '.join(bad)}", file=sys.stderr)  # fmt: skip
        return 2
    torch.set_num_threads(args.threads)
    data = load_mnist("test")
    record: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_kernels(),
        "threads": args.threads,
        "steps": args.steps,
        "repeats": args.repeats,
        "command": " ".join(["python", "bench/overhead.py", *(argv or sys.argv[1:])]),
        "steps_table": [],
        "call_table": [],
        "profiles": {},
    }
    for name in args.models:
        try:
            model = load(name)
        except FileNotFoundError as exc:
            _log(f"skip {name}: {exc}")
            continue
        for batch in args.batches:
            x = torch.from_numpy(np.ascontiguousarray(data.x[:batch]))
            y = torch.from_numpy(np.ascontiguousarray(data.y[:batch])).long()
            for norm in args.norms:
                row = {"model": name, **step_overhead(model, x, y, norm, args)}
                record["steps_table"].append(row)
                _log(f"{name} b{batch} {norm}: {row['engine_ms_per_step']:.2f} vs "
                     f"{row['bare_ms_per_step']:.2f} ms/step, {row['overhead_pct']:+.1f}% "
                     f"(CPU time {row['cpu_overhead_pct']:+.1f}%); own "
                     f"{row['engine_own_ms_per_step']:.2f} ms = "
                     f"{row['own_share_pct']:.1f}%")  # fmt: skip
                if args.profile:
                    key = f"{name} batch {batch} {norm}"
                    record["profiles"][key] = profile_steps(model, x, y, norm, args.steps)
        if args.call_samples > 0:
            x = torch.from_numpy(np.ascontiguousarray(data.x[: args.call_samples]))
            y = torch.from_numpy(np.ascontiguousarray(data.y[: args.call_samples])).long()
            for norm in args.norms:
                row = {"model": name, **call_split(model, x, y, norm, args)}
                record["call_table"].append(row)
                _log(f"{name} call {norm}: whole {row['whole_s']:.2f}s search "
                     f"{row['search_s']:.2f}s bare {row['bare_equivalent_s']:.2f}s")  # fmt: skip
    if not record["steps_table"]:
        print("overhead: no model could be loaded", file=sys.stderr)
        return 1
    record["median_own_share_pct"] = {
        norm: statistics.median(
            r["own_share_pct"] for r in record["steps_table"] if r["norm"] == norm
        )
        for norm in args.norms
        if any(r["norm"] == norm for r in record["steps_table"])
    }
    record["median_overhead_pct"] = {
        norm: statistics.median(
            r["overhead_pct"] for r in record["steps_table"] if r["norm"] == norm
        )
        for norm in args.norms
        if any(r["norm"] == norm for r in record["steps_table"])
    }
    write_outputs(args.out, record, markdown(record))
    return 0 if all(math.isfinite(r["overhead_pct"]) for r in record["steps_table"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
