"""The ``mmargin`` command line: ``run`` or ``check`` a task file, list ``plugins``.

Only argparse and the standard library load before a sub-command runs, so ``mmargin
--help`` is instant. Task, plugin and run-level mistakes (:class:`~mmargin.errors.
MmarginError`: a malformed task, a refused import, a plugin that fails to load, a
:class:`~mmargin.errors.RunError` from the first batch) print one line and exit with
status 2. ``run`` prints what the task imports before running it.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from mmargin import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="mmargin",
        description="Per-input adversarial robustness margins: the smallest perturbation "
        "that flips a model's prediction, verified.",
    )
    parser.add_argument("--version", action="version", version=f"mmargin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a task file and write results")
    run.add_argument("task", help="path to a task .toml file")
    run.add_argument("--out", help="output folder (default: the task's task.out)")
    run.add_argument("--device", help="torch device, e.g. cpu or cuda (overrides the task)")
    run.add_argument("--samples", type=int, help="evaluate only the first N samples")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run of the same task in its output folder",
    )
    run.add_argument(
        "--force", action="store_true", help="replace whatever the output folder holds"
    )
    run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where batches run: this process (default) or Ray workers",
    )
    run.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    run.add_argument("--workers", type=int, help="Ray workers (default: 2)")
    run.add_argument("--gpus-per-worker", type=float, default=0.0,
                     help="GPUs each Ray worker reserves (default 0)")  # fmt: skip
    run.add_argument("--dry-run", action="store_true",
                     help="show what the task would import and run, then stop")  # fmt: skip
    check = sub.add_parser("check", help="check a task file and show what it would import")
    check.add_argument("task", help="path to a task .toml file")
    for command in (run, check):
        command.add_argument(
            "--allow-import", action="append", default=[], metavar="PKG",
            help="let the task's model.factory import from package PKG (repeatable; also "
            "MMARGIN_ALLOW_IMPORTS=pkg1,pkg2 or the user settings file)",
        )  # fmt: skip
    sub.add_parser("plugins", help="list installed plugins and what each provides")
    report = sub.add_parser("report", help="write a run folder's self-contained HTML report")
    report.add_argument("run", help="a run folder (results.jsonl, summary.json, ...)")
    report.add_argument("-o", "--out", help="HTML file to write (default: RUN/report.html)")
    compare = sub.add_parser("compare", help="compare runs: HTML page and terminal table")
    compare.add_argument("runs", nargs="+", help="run folders")
    compare.add_argument("-o", "--out", default="compare.html", help="HTML file to write")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmargin`` script."""
    args = build_parser().parse_args(argv)
    from mmargin.allocator import keep_freed_memory
    from mmargin.errors import MmarginError

    keep_freed_memory()  # this process only: glibc keeps freed batch buffers (allocator.py)

    try:
        if args.command == "plugins":
            return _plugins()
        if args.command in ("report", "compare"):
            from mmargin.report.cli import run_command

            return run_command(args)
        if args.command == "check" or args.dry_run:
            return _check(args)
        return _run(args)
    except MmarginError as exc:  # task, plugin and run-level mistakes: one line, status 2
        message = " ".join(str(exc).splitlines())
        print(f"mmargin: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mmargin plugins | head`: the reader left; nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _plugins() -> int:
    from mmargin.plugins import describe

    rows = describe()
    width = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    for plugin, kind, name, text in rows:
        print(f"{plugin:<{width[0]}}  {kind:<{width[1]}}  {name:<{width[2]}}  {text}".rstrip())
    return 0


def _check(args: argparse.Namespace) -> int:
    """``mmargin check`` / ``run --dry-run``: check the task, list what it would import."""
    from mmargin.preview import describe_task
    from mmargin.tasks import load_task

    task = load_task(args.task)
    for key, value in describe_task(task, args.allow_import):
        print(f"{key:<9} {value}")
    print("\nnothing was run")
    return 0


def _run(args: argparse.Namespace) -> int:
    from mmargin.api import run_task
    from mmargin.resolve import model_plan
    from mmargin.tasks import load_task

    if args.samples is not None and args.samples < 1:
        print("mmargin: error: --samples: expected a positive integer", file=sys.stderr)
        return 2
    task = load_task(args.task)
    print(f"imports: {model_plan(task, args.allow_import).describe()}", flush=True)
    executor: Any = args.executor
    if args.executor == "ray":
        from mmargin.durable.ray_executor import RayExecutor

        executor = RayExecutor(address=args.address, workers=args.workers,
                               gpus_per_worker=args.gpus_per_worker)  # fmt: skip
    output = run_task(task, out=args.out, device=args.device, samples=args.samples,
                      allow_imports=args.allow_import,
                      progress=not args.quiet and sys.stderr.isatty(),
                      resume=args.resume, force=args.force,
                      executor=executor)  # fmt: skip
    print(format_summary(output.task.name, output.summary, output.examples))
    from mmargin import datanotes, saved

    if (data_notes := datanotes.describe(output.results)) is not None:
        print(f"data: {data_notes}")
    if (saved_line := saved.describe(output.results)) is not None:
        print(saved_line)
    if output.out is not None:
        names = sorted(path.name for path in output.out.iterdir())
        print(f"\nwrote {output.out}/: {', '.join(names)}")
    return 0


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.4g}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def _opt(value: float | None) -> str:
    return "n/a" if value is None else _fmt(value)


def format_summary(name: str, summary: Any, examples: Sequence[str] = ()) -> str:
    """The summary table printed after a run, in the run's units, with the space plugin's
    example lines under it (plain text: the same on a terminal, a pipe or ``--quiet``)."""
    s = summary
    units = getattr(s, "units", None)
    rows = [
        ("samples", f"{s.samples} ({s.errors} errors)"),
        ("clean accuracy", _pct(s.clean_accuracy)),
        ("attack success", _pct(s.attack_success)),
        (f"margin ({s.distance}) median", _fmt(s.margin_median)),
        ("margin quartiles", f"{_fmt(s.margin_q25)} .. {_fmt(s.margin_q75)}"),
        ("relative margin median", _fmt(s.relative_margin_median)),
        ("margin / random median", _opt(getattr(s, "random_ratio_median", None))),
        ("AUC (eps / random)", _opt(getattr(s, "normalised_auc", None))),
        ("exact (lower = upper)", _pct(s.exact_fraction)),
        ("queries / sample", _fmt(s.queries_mean)),
        ("seconds", f"{s.seconds_total:.2f}"),
    ]  # fmt: skip
    certified = getattr(s, "certified_robust_accuracy", {})
    for eps, acc in s.robust_accuracy.items():
        proven = f" (certified {_pct(certified[eps])})" if eps in certified else ""
        rows.append((f"robust accuracy @ {eps:g}", _pct(acc) + proven))
    if getattr(s, "bracket_ratio_median", None) is not None:
        rows.append(("bracket upper / lower median", _fmt(s.bracket_ratio_median)))
    if units:
        rows.insert(3, ("units", str(units)))
    width = max(len(k) for k, _ in rows)
    lines = [f"== {name} =="] + [f"{k:<{width}}  {v}" for k, v in rows]
    from mmargin.engine.indicators import summary_line

    warning = summary_line(getattr(s, "indicator_counts", {}) or {}, s.samples)
    if warning is not None:
        lines.append(warning)
    if examples:
        lines += ["", "examples (smallest, median, largest flip):"]
        lines += [f"  {line}" for line in examples]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
