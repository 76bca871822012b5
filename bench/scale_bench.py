"""Scale benchmark: one MNIST task in one process vs on Ray workers, and GPU throughput.

Measured in the same invocation, on the same machine:

- the MNIST l2 task (built-in CNN, real MNIST test images) run in one process, then on
  ``--workers`` Ray workers of a local Ray instance: wall times, their ratio, and whether
  the two result folders are identical (every record but the timing field ``seconds``,
  every adversarial array bit for bit);
- Ray's start-up overhead: ``ray.init`` plus the first no-op task's round trip;
- with a CUDA GPU: samples per second of the same search on CPU and GPU at batch sizes
  1 .. 1024 (skipped, and said so, without one).

Writes ``<out>.json`` and ``<out>.md``. Run it with ``make bench-scale`` (or
``bash bench/run_scale.sh --samples 64``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

TASK = Path(__file__).resolve().parent.parent / "tasks" / "image-mnist-l2.toml"


def scale(samples: int, batch_size: int, workers: int, budget: int) -> dict[str, Any]:
    """One process vs Ray workers on the MNIST task."""
    import ray

    from mmargin.api import run_task
    from mmargin.durable.compare import differences
    from mmargin.durable.ray_executor import RayExecutor
    from mmargin.tasks import load_task

    task = dataclasses.replace(load_task(TASK), samples=samples, batch_size=batch_size,
                               budget=budget)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        local, sharded = Path(tmp) / "local", Path(tmp) / "ray"
        started = time.perf_counter()
        run_task(task, out=local)
        local_s = time.perf_counter() - started

        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
        ray.get(ray.remote(lambda: None).remote())
        startup_s = time.perf_counter() - started
        try:
            started = time.perf_counter()
            run_task(task, out=sharded, executor=RayExecutor(workers=workers))
            ray_s = time.perf_counter() - started
        finally:
            ray.shutdown()
        same = not differences(local, sharded)
    return {
        "task": TASK.name, "samples": samples, "batch_size": batch_size, "budget": budget,
        "workers": workers, "one_process_s": round(local_s, 2),
        "ray_run_s": round(ray_s, 2), "ray_startup_s": round(startup_s, 2),
        "ratio_one_process_over_ray": round(local_s / ray_s, 3),
        "ratio_including_startup": round(local_s / (ray_s + startup_s), 3),
        "identical_results": same,
    }  # fmt: skip


def gpu_throughput(budget: int, sizes: list[int], cpu_max: int) -> dict[str, Any]:
    """Samples per second of the MNIST search on CPU and CUDA at each batch size."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine"}
    from mmargin.api import run_task
    from mmargin.tasks import load_task

    rows = []
    for size in sizes:
        row: dict[str, Any] = {"batch_size": size}
        for device in ("cpu", "cuda"):
            if device == "cpu" and size > cpu_max:
                continue
            task = dataclasses.replace(load_task(TASK), samples=max(size, 32), batch_size=size,
                                       budget=budget, device=device, out=None)  # fmt: skip
            run_task(dataclasses.replace(task, samples=min(size, 8)))  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            run_task(task)
            if device == "cuda":
                torch.cuda.synchronize()
            row[f"{device}_samples_per_s"] = round(
                task.samples / (time.perf_counter() - started), 2
            )
        rows.append(row)
    return {"device": torch.cuda.get_device_name(0), "budget": budget, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown table."""
    s = report["scale"]
    lines = [
        f"# Scale benchmark ({report['machine']})", "",
        f"`{report['command']}`", "",
        "| run | wall (s) |", "| --- | --- |",
        f"| one process | {s['one_process_s']} |",
        f"| Ray, {s['workers']} workers (run) | {s['ray_run_s']} |",
        f"| Ray start-up (init + first task) | {s['ray_startup_s']} |", "",
        f"one process / Ray = {s['ratio_one_process_over_ray']} "
        f"({s['ratio_including_startup']} counting start-up); identical results: "
        f"{s['identical_results']}", "",
    ]  # fmt: skip
    gpu = report["gpu"]
    if "skipped" in gpu:
        lines.append(f"GPU throughput: skipped ({gpu['skipped']}).")
    else:
        lines += [f"GPU throughput on {gpu['device']} (budget {gpu['budget']}):", "",
                  "| batch | CPU samples/s | GPU samples/s |", "| --- | --- | --- |"]  # fmt: skip
        for row in gpu["rows"]:
            cpu = row.get("cpu_samples_per_s", "-")
            lines.append(f"| {row['batch_size']} | {cpu} | {row['cuda_samples_per_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse arguments, run both parts, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu-budget", type=int, default=200)
    parser.add_argument("--cpu-max-batch", type=int, default=64,
                        help="largest batch timed on the CPU in the GPU part")  # fmt: skip
    parser.add_argument("--out", default="bench/results/scale")
    args = parser.parse_args()
    sizes = [2**k for k in range(11)]
    report = {
        "command": "bash bench/run_scale.sh " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "scale": scale(args.samples, args.batch_size, args.workers, args.budget),
        "gpu": gpu_throughput(args.gpu_budget, sizes, args.cpu_max_batch),
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    if not report["scale"]["identical_results"]:
        raise SystemExit("the Ray run's results differ from the one-process run's")


if __name__ == "__main__":
    main()
