"""Word-substitution margins on MR: mmargin's discrete search vs TextAttack's greedy WIR.

Both walk the same candidates: the word space of ``mmargin_text`` (15 nearest neighbours in
the MR CNN's input embeddings, NLTK stopwords frozen, one edit per word); TextAttack's
``GreedyWordSwapWIR`` gets them through ``bench/textattack_baseline.py`` (its transformation is
the space's problem, a pre-transformation constraint restricts it to the same positions).
Same model object, same sentences, same process, same query budget. Every adversarial text
of either side is re-scored by the model before it counts.

    python bench/text_bench.py [--samples 250] [--budget 1000] [--out bench/results/text.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from outputs import write_outputs

from mmargin.engine import minimal_flip
from mmargin.engine.spec import DiscreteConfig, SearchSpec
from mmargin.results import SampleResult, Status


def _mmargin(config: DiscreteConfig, exact: str) -> Callable[..., list[SampleResult]]:
    def run(
        adapter: Any, space: Any, texts: list[str], labels: list[int], ids: list[str], budget: int
    ) -> list[SampleResult]:
        from mmargin_text.spaces import WordEdits

        return minimal_flip(
            adapter,
            space,
            WordEdits(),
            np.array(texts, object),
            np.array(labels),
            ids,
            spec=SearchSpec(budget=budget, exact=exact, discrete=config),
        )

    return run


def _textattack(wir: str) -> Callable[..., list[SampleResult]]:
    def run(
        adapter: Any, space: Any, texts: list[str], labels: list[int], ids: list[str], budget: int
    ) -> list[SampleResult]:
        from textattack.search_methods import GreedyWordSwapWIR
        from textattack_baseline import textattack_attack

        return textattack_attack(
            adapter,
            space,
            texts,
            labels,
            ids,
            search=GreedyWordSwapWIR(wir_method=wir),
            budget=budget,
        )

    return run


METHODS: dict[str, tuple[str, Callable[..., list[SampleResult]]]] = {
    "mmargin.greedy": (
        "mmargin greedy (gradient ranking, re-rank, prune)",
        _mmargin(DiscreteConfig(), "never"),
    ),
    "mmargin.greedy-blackbox": (
        "mmargin greedy, black box (leave-one-out ranking, prune)",
        _mmargin(DiscreteConfig(order="leave-one-out"), "never"),
    ),
    "mmargin.beam": (
        "mmargin beam (width 4, gradient ranking)",
        _mmargin(DiscreteConfig(method="beam"), "never"),
    ),
    "mmargin.greedy+exact": (
        "mmargin greedy + exhaustive lower-bound proof (<= 400 extra)",
        _mmargin(DiscreteConfig(), "auto"),
    ),
    "textattack.wir-unk": ("TextAttack GreedyWordSwapWIR(wir_method='unk')", _textattack("unk")),
    "textattack.wir-delete": (
        "TextAttack GreedyWordSwapWIR(wir_method='delete')",
        _textattack("delete"),
    ),
}


def summarise(results: Sequence[SampleResult], seconds: float) -> dict[str, Any]:
    """Success, edits and queries over the correctly classified sentences."""
    correct = [r for r in results if r.status in (Status.FLIPPED, Status.NOT_FLIPPED)]
    flipped = [r for r in correct if r.status is Status.FLIPPED and r.verified]
    edits = np.array([r.margin for r in flipped])
    margins = np.array([r.margin if r.status is Status.FLIPPED else math.inf for r in correct])
    queries = np.array([r.queries for r in correct])
    exact = [r for r in flipped if r.exact]
    measured = [r.extras.get("measured_passes") for r in correct]
    return {
        "samples": len(results),
        "correct": len(correct),
        "flipped": len(flipped),
        "success_rate": len(flipped) / len(correct) if correct else math.nan,
        "median_edits": float(np.median(edits)) if edits.size else math.nan,
        "mean_edits": float(edits.mean()) if edits.size else math.nan,
        "median_edits_all": float(np.quantile(margins, 0.5, method="lower"))
        if correct
        else math.nan,
        "mean_pct_words": float(
            np.mean([r.extras.get("words_changed_pct", math.nan) for r in flipped])
        )
        if flipped
        else math.nan,
        "queries_mean": float(queries.mean()),
        "queries_median": float(np.median(queries)),
        "measured_passes_mean": float(np.mean(measured))
        if correct and None not in measured
        else None,
        "exact_fraction": len(exact) / len(flipped) if flipped else math.nan,
        "seconds": seconds,
        "errors": sum(r.status is Status.ERROR for r in results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run every method, write the JSON and the Markdown table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=250)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--k", type=int, default=15, help="candidates per word")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("bench/results/text.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from mmargin_text.adapters import adapt_text_model
    from mmargin_text.data import load_mr
    from mmargin_text.models import mr_cnn
    from mmargin_text.offline import import_textattack
    from mmargin_text.plugin import word_space

    import_textattack()
    data = load_mr("test").head(args.samples)
    texts, labels, ids = list(data.x), [int(y) for y in data.y], list(data.ids)
    adapter = adapt_text_model(mr_cnn())
    rows: dict[str, Any] = {}
    per_sample: dict[str, list[float]] = {}
    for key in args.methods:
        label, run = METHODS[key]
        space = word_space(k=args.k)  # a fresh space: same candidates, no shared state
        started = time.perf_counter()
        results = run(adapter, space, texts, labels, ids, args.budget)
        seconds = time.perf_counter() - started
        rows[key] = {"method": label, **summarise(results, seconds)}
        per_sample[key] = [
            r.margin
            if r.status is Status.FLIPPED
            else (0.0 if r.status is Status.MISCLASSIFIED else math.inf)
            for r in results
        ]
        print(f"{key}: {json.dumps(rows[key])}", file=sys.stderr, flush=True)
    reference = "textattack.wir-unk"
    if reference in rows:
        for key, row in rows.items():
            row["wall_time_ratio_vs_textattack"] = row["seconds"] / rows[reference]["seconds"]
            a, b = np.array(per_sample[key]), np.array(per_sample[reference])
            both = np.isfinite(a) & np.isfinite(b) & (b > 0)
            row["vs_textattack"] = {
                "fewer_edits": int((a[both] < b[both]).sum()),
                "same_edits": int((a[both] == b[both]).sum()),
                "more_edits": int((a[both] > b[both]).sum()),
            }
    report = {
        "benchmark": "MR word-substitution margins, same candidates for every method",
        "model": "mmargin_text.models:mr_cnn (word CNN, committed weights)",
        "data": f"first {len(texts)} sentences of the MR test split (mmargin_text.data.load_mr)",
        "space": f"word: {args.k} nearest neighbours in the model's input embeddings, NLTK "
        "stopwords frozen, one edit per word",
        "budget": args.budget,
        "threads": 1,
        "query_counting": "mmargin: every text scored, the clean pass and the final "
        "re-verification included, a gradient ranking = 2; TextAttack: its "
        "num_queries (every text scored, the clean text included; measured_passes_mean: "
        "the texts that reached the model, by mmargin's pass counter)",
        "versions": {p: metadata.version(p) for p in ("torch", "transformers", "textattack")},
        "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
        "methods": rows,
        "per_sample_edits": per_sample,
        "ids": ids,
    }
    write_outputs(args.out, report, markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The results table."""
    lines = [
        f"# {report['benchmark']}",
        "",
        f"- model: {report['model']}",
        f"- data: {report['data']}",
        f"- space: {report['space']}",
        f"- budget: {report['budget']} queries per sentence, "
        f"{report['threads']} CPU thread, {report['machine']}",
        f"- query counting: {report['query_counting']}",
        "",
        "| method | success | median edits | mean edits | mean % words | queries mean "
        "| queries median | exact (proven) | seconds | time vs TextAttack | vs TextAttack "
        "(fewer / same / more edits) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["methods"].values():
        vs = row.get("vs_textattack", {})
        lines.append(
            f"| {row['method']} | {row['success_rate']:.1%} ({row['flipped']}/{row['correct']}) "
            f"| {row['median_edits']:g} | {row['mean_edits']:.3f} | {row['mean_pct_words']:.1f} "
            f"| {row['queries_mean']:.1f} | {row['queries_median']:g} "
            f"| {row['exact_fraction']:.1%} | {row['seconds']:.1f} "
            f"| {row.get('wall_time_ratio_vs_textattack', math.nan):.3f} "
            f"| {vs.get('fewer_edits', '')} / {vs.get('same_edits', '')} / "
            f"{vs.get('more_edits', '')} |"
        )
    measured = [
        f"{row['method']}: {row['measured_passes_mean']:.1f}"
        for row in report["methods"].values()
        if row.get("measured_passes_mean") is not None
    ]
    if measured:
        lines += ["", "Mean passes measured by mmargin's pass counter: " + "; ".join(measured)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
