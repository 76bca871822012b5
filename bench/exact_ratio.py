"""How far above the exact minimal margin the gradient search lands: found / exact.

On the first ``--points`` correctly classified test images of a digits ReLU MLP of the
zoo (``--model``: ``digits_mlp`` for tuning, ``eval_digits_mlp`` for the evaluation), for
L∞ and L1: the search's margin (:func:`mmargin.evaluate` with ``exact="never"`` and the
default knobs at ``--budget`` passes per sample) is divided by the exact minimal margin
that the project's MILP (:func:`mmargin.exact.milp.relu_net_margin`, HiGHS) proves for the
same point, box ``[0, 1]``. The MILP gets the search's distance as an upper bound (a valid
one: the search's flip is re-checked), which only tightens its big-M bounds.

The oracle relation is checked on every point: found ≥ exact − tol (against the MILP's
proven lower bound where its time limit stopped it). Points whose MILP stops on its time
limit (not proven optimal) are counted and left out of the ratios.

    python bench/exact_ratio.py --model digits_mlp --points 50 --norms linf l1 \
        --out bench/results/exact_ratio.json

writes the JSON (per-point figures) and a Markdown table next to it (same name, ``.md``).

With ``--stored RECORD`` (such a JSON, e.g. ``bench/results/exact_ratio_digits_mlp.json``)
no MILP is solved: the search runs on the record's points and is divided by its proven
exact margins (a minute, where the MILPs took many), printed per norm with the worst
points (``--points`` and ``--model`` come from the record); with ``--out`` also written as
a record of its own (the stored exact margins, this search's found ones, and
``exact_from`` naming the record), the ``.md`` beside it:

    python bench/exact_ratio.py --stored bench/results/exact_ratio_tune_digits_mlp.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
NORMS = {"linf": math.inf, "l1": 1.0}
TOL = 1e-5
"""Relative slack in ``found ≥ exact · (1 − TOL)``: the search's distance is float32."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="digits_mlp", help="a digits MLP of bench/zoo.py")
    parser.add_argument("--points", type=int, default=50, help="correctly classified points")
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=list(NORMS))
    parser.add_argument("--budget", type=int, default=1000, help="passes per sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=60.0, help="MILP seconds a point")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON to write (default bench/results/exact_ratio.json; with "
                        "--stored: only where given)")  # fmt: skip
    parser.add_argument("--stored", type=Path, default=None,
                        help="reuse this record's exact margins: no MILP")  # fmt: skip
    return parser.parse_args(argv)


def load_points(model: Any, count: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The first ``count`` digits test images ``model`` classifies correctly."""
    import torch

    from mmargin_image.data import load_digits

    data = load_digits("test")
    x = np.asarray(data.x, dtype=np.float32)
    y = np.asarray(data.y, dtype=np.int64)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    keep = np.flatnonzero(pred == y)[:count]
    return x[keep], y[keep], [str(data.ids[i]) for i in keep]


def found_margins(model: Any, x: np.ndarray, y: np.ndarray, norm: str, budget: int,
                  seed: int) -> np.ndarray:  # fmt: skip
    """The gradient search's margins (``inf`` where it found no flip)."""
    import mmargin

    results = mmargin.evaluate(
        model, x, y, distance=norm, space="box", space_options={"lower": 0.0, "upper": 1.0},
        budget=budget, exact="never", seed=seed, batch_size=len(x),
    )  # fmt: skip
    return np.array([r.margin if r.status == "flipped" else math.inf for r in results])


def exact_margin(layers: Any, x: np.ndarray, label: int, norm: str, upper: float,
                 time_limit: float) -> tuple[float, float, bool]:  # fmt: skip
    """The MILP's minimal margin of one point, its proven lower bound and whether the
    margin is proven optimal (a time limit leaves the incumbent and the bound apart)."""
    from mmargin.exact.milp import relu_net_margin

    bound = upper * (1 + 1e-4) + 1e-6 if math.isfinite(upper) else None
    got = relu_net_margin(layers, x.astype(np.float64), label, NORMS[norm], lower=0.0,
                          upper=1.0, upper_bound=bound, time_limit=time_limit)  # fmt: skip
    return float(got.margin), float(got.lower), bool(got.optimal)


def measure(model: Any, norm: str, points: int, budget: int, seed: int,
            time_limit: float) -> dict[str, Any]:  # fmt: skip
    """Found and exact margins of one norm and their ratios' summary."""
    from mmargin.exact.milp import extract_relu_layers

    layers = extract_relu_layers(model)
    if layers is None:
        raise SystemExit("exact_ratio: the model is not a plain Linear/ReLU stack")
    x, y, ids = load_points(model, points)
    start = time.perf_counter()
    found = found_margins(model, x, y, norm, budget, seed)
    search_s = time.perf_counter() - start
    rows = []
    start = time.perf_counter()
    for i in range(len(x)):
        exact, lower, optimal = exact_margin(layers, x[i], int(y[i]), norm, float(found[i]),
                                             time_limit)  # fmt: skip
        row = point({"id": ids[i], "label": int(y[i]), "exact": exact, "lower": lower,
                     "optimal": optimal}, float(found[i]))  # fmt: skip
        rows.append(row)
        print(f"  {norm} {ids[i]}: found {found[i]:.6g} exact {exact:.6g} ratio "
              f"{row['ratio']:.5f}{'' if optimal else ' (not proven)'}", file=sys.stderr,
              flush=True)  # fmt: skip
    return norm_record(norm, rows, search_s, time.perf_counter() - start)


def point(known: dict[str, Any], found: float) -> dict[str, Any]:
    """One point's row: ``known`` (its id, label and the MILP's ``exact``, ``lower`` and
    ``optimal``) with the search's ``found`` margin, their ratio and the oracle relation
    (never below what the MILP proves: its optimum, or its bound where it was stopped)."""
    exact = known["exact"]
    floor = exact if known["optimal"] else known["lower"]
    return {**known, "found": found, "ratio": found / exact if exact > 0 else math.inf,
            "below_exact": found < floor * (1 - TOL)}  # fmt: skip


def proven(rec: dict[str, Any]) -> list[tuple[float, str]]:
    """A norm record's ``(ratio, id)`` on its proven-optimal points."""
    return [(r["ratio"], r["id"]) for r in rec["rows"] if r["optimal"]]


def norm_record(norm: str, rows: list[dict[str, Any]], search_s: float,
                milp_s: float) -> dict[str, Any]:  # fmt: skip
    """One norm's record from its per-point ``rows``: the ratios' summary over the proven
    points, the worst five and the oracle relation's count."""
    solved = [r for r in rows if r["optimal"]]
    ratios = np.array([r["ratio"] for r in solved])
    worst = sorted(solved, key=lambda r: -r["ratio"])[:5]
    return {
        "norm": norm,
        "points": len(rows),
        "proven": len(solved),
        "median": float(np.median(ratios)) if ratios.size else math.nan,
        "max": float(ratios.max()) if ratios.size else math.nan,
        "share_above_1.001": float((ratios > 1.001).mean()) if ratios.size else math.nan,
        "below_exact": sum(r["below_exact"] for r in rows),
        "search_s": search_s,
        "milp_s": milp_s,
        "worst": worst,
        "rows": rows,
    }


def summary(ratios: list[tuple[float, str]]) -> str:
    """One line: median, max, share above 1.001 and the four worst ``(ratio, id)``."""
    worst = sorted(ratios, reverse=True)
    r = np.array([q for q, _ in worst])
    return (f"points {r.size} median {np.median(r):.5f} max {r.max():.4f} share>1.001 "
            f"{np.mean(r > 1.001):.3f} below {int(np.sum(r < 1 - TOL))}  worst "
            + ", ".join(f"{i} {q:.4f}" for q, i in worst[:4]))  # fmt: skip


def stored_ratios(model: Any, record: dict[str, Any], norms: list[str], budget: int,
                  seed: int) -> dict[str, list[tuple[float, str]]]:  # fmt: skip
    """Per norm of ``record`` (an output of this script) in ``norms``: the search's
    found / exact on the record's proven-optimal points, as ``(ratio, id)``."""
    return {rec["norm"]: proven(rec) for rec in rescored(model, record, norms, budget, seed)}


def rescored(model: Any, record: dict[str, Any], norms: list[str], budget: int,
             seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """The norms of ``record`` in ``norms``, each a norm record (:func:`norm_record`) of this
    search's found margins against the record's exact ones (MILP time kept, search time new)."""
    x, y, ids = load_points(model, record["points"])
    out = []
    for rec in record["norms"]:
        if rec["norm"] not in norms:
            continue
        if [r["id"] for r in rec["rows"]] != ids:
            raise SystemExit("exact_ratio: the record's points are not this model's")
        start = time.perf_counter()
        found = found_margins(model, x, y, rec["norm"], budget, seed)
        search_s = time.perf_counter() - start
        rows = [point(r, float(f)) for f, r in zip(found, rec["rows"], strict=True)]
        out.append(norm_record(rec["norm"], rows, search_s, rec.get("milp_s", math.nan)))
    return out


def _source(record: dict[str, Any]) -> list[str]:
    """The Markdown lines naming a re-scored record's exact margins (none for a MILP run)."""
    if "exact_from" not in record:
        return []
    return [f"Exact margins from `{record['exact_from']}` (no MILP solved here).", ""]


def markdown(record: dict[str, Any]) -> str:
    """The summary table and the worst points per norm."""
    lines = [
        f"# found / exact margin, {record['model']} (budget {record['budget']}, "
        f"{record['points']} points)",
        "",
        f"`{record['command']}`",
        "",
        *_source(record),
        "| norm | points | proven optimal | median | max | share > 1.001 | found < exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in record["norms"]:
        lines.append(
            f"| {r['norm']} | {r['points']} | {r['proven']} | {r['median']:.4f} | "
            f"{r['max']:.4f} | {r['share_above_1.001']:.2f} | {r['below_exact']} |"
        )
    for r in record["norms"]:
        lines += ["", f"Worst {r['norm']} points: " + ", ".join(
            f"{w['id']} {w['ratio']:.4f} ({w['found']:.4g} / {w['exact']:.4g})"
            for w in r["worst"])]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the measurement and write the JSON and Markdown."""
    import json

    import torch

    args = _parse(argv)
    torch.set_num_threads(1)
    sys.path.insert(0, str(BENCH))
    import zoo

    if args.stored is not None:
        stored = json.loads(args.stored.read_text())
        model = zoo.load(stored["model"])
        norms = rescored(model, stored, args.norms, args.budget, args.seed)
        for rec in norms:
            print(f"{rec['norm']}: {summary(proven(rec))}")
        if args.out is not None:
            _write(args.out, {**_header(stored["model"], args, argv), "points": stored["points"],
                              "exact_from": str(args.stored), "norms": norms})  # fmt: skip
        return 0
    member = zoo.MEMBERS.get(args.model)
    if (member is not None and member.data != "digits") or (
        member is None and args.model != "digits_mlp"
    ):
        print(f"exact_ratio: {args.model} is not a digits model of the zoo", file=sys.stderr)
        return 2
    try:
        model = zoo.load(args.model)
    except (ValueError, FileNotFoundError) as err:
        print(f"exact_ratio: {err}", file=sys.stderr)
        return 2
    record: dict[str, Any] = {**_header(args.model, args, argv), "norms": []}
    for norm in args.norms:
        got = measure(model, norm, args.points, args.budget, args.seed, args.time_limit)
        record["norms"].append(got)
        print(f"{norm}: median {got['median']:.4f} max {got['max']:.4f} "
              f"({got['proven']}/{got['points']} proven, {got['below_exact']} below exact)",
              file=sys.stderr)  # fmt: skip
    _write(args.out or BENCH / "results" / "exact_ratio.json", record)
    return 0


def _header(model: str, args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """A record's fields before its norms: what was run, when, where."""
    from image_provenance import cpu_kernels

    return {
        "model": model,
        "budget": args.budget,
        "points": args.points,
        "seed": args.seed,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": "python bench/exact_ratio.py " + " ".join(argv or sys.argv[1:]),
        "cpu": cpu_kernels(),
    }


def _write(out: Path, record: dict[str, Any]) -> None:
    """The record as JSON at ``out`` and its Markdown beside it."""
    import json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(record))


if __name__ == "__main__":
    raise SystemExit(main())
