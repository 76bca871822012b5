"""The image benchmark's report: strict JSON and the markdown tables.

``image_bench.py`` builds the report (every figure, configuration and per-sample distance);
this module only writes it, so ``image_bench.py --markdown-only`` can re-render a finished
run's tables from its JSON. The report holds ``models → norms → runs`` (one list of method
rows per budget); :func:`restore_report` also reads the older one-model, one-budget layout
(``norms → methods``) so earlier results files still render.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from metrics import TIMING_THRESHOLD, fastest_qualifying, is_peer
from peer_base import ALL_NORMS

_NORM_TITLE = {"l2": "L2", "linf": "L∞", "l1": "L1", "l0": "L0 (pixels)"}
HEADLINE_LOW_BUDGET = 250
"""The smaller budget the headline table shows mmargin at (issue 14: at 250 passes at least
the best peer's optimality at 1000)."""


def json_dist(values: np.ndarray) -> list[float | None]:
    """Distances as JSON numbers, null for ∞ (a failed sample)."""
    return [None if not math.isfinite(v) else float(v) for v in values]


def dist_from_json(values: list[float | None]) -> np.ndarray:
    """The inverse of :func:`json_dist`: null back to ∞."""
    return np.array([math.inf if v is None else float(v) for v in values])


def _clean(obj: Any) -> Any:
    """Non-finite floats become null (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    text = format(value, spec)
    # a score that rounds to zero from below (float noise, -1e-17) prints as 0, not -0
    return text[1:] if text.startswith("-") and not text.strip("-0.%") else text


_CHECK_TEXT = {
    "not_finite": "not finite (∞)",
    "outside_box": "outside [0, 1] (∞)",
    "not_adversarial": "not adversarial (∞)",
    "zero_image": "all-zero image (counted at its distance when the model's prediction on it "
    "differs from the label)",
}


def _times(r: dict[str, Any]) -> str:
    wall = f"{r['seconds']:.1f} ({r['cpu_seconds']:.1f})"
    ratio = (
        f"{_fmt(r.get('mmargin_time_ratio'), '.2f')} "
        f"({_fmt(r.get('mmargin_cpu_time_ratio'), '.2f')})"
    )
    paired = r.get("paired_timing") or {}
    pair = 1.0 if r["method"] == "mmargin" and r["status"] == "ok" else paired.get("median_ratio")
    return f"{wall} | {ratio} | {_fmt(pair, '.2f')}"


def restore_report(report: dict[str, Any]) -> dict[str, Any]:
    """A report read back from JSON in the current layout: an older one-model, one-budget
    report (``norms → methods``) is moved under ``models → <its model> → norms → runs``,
    and JSON ``null`` medians of ok rows become ``inf`` again (a median over failures)."""
    if "models" not in report:
        meta = report["meta"]
        budget = int(meta["budget"])
        name = meta.get("model", "mnist_cnn")
        meta.setdefault("budgets", [budget])
        meta.setdefault("models", [name])
        report["models"] = {
            name: {
                "name": name,
                "misclassified": meta.get("misclassified"),
                "norms": {
                    norm: {
                        "main_budget": budget,
                        "runs": {str(budget): block["methods"]},
                        "best_distances": block.get("best_distances"),
                        "timing": {
                            "rule": "every peer",
                            "against": [
                                r["method"] for r in block["methods"] if r.get("paired_timing")
                            ],
                            "budget": budget,
                        },
                    }
                    for norm, block in report.pop("norms").items()
                },
            }
        }
    for block in report["models"].values():
        for norm_block in block["norms"].values():
            for rows in norm_block["runs"].values():
                for r in rows:
                    if r["status"] == "ok" and r.get("median_distance") is None:
                        r["median_distance"] = math.inf
    return report


def combine(
    reports: list[dict[str, Any]], norms: list[list[str] | None] | None = None
) -> dict[str, Any]:
    """One report of several runs' models (e.g. one run per model, side by side; runs of
    one model over different norms join into one block): the models in order, the first
    run's facts, every run's command, started time and run time. The runs must share
    samples, budgets and timing settings, else their figures do not compare.

    ``norms`` (one entry per report, ``None``: all) takes only those norms of a run, e.g.
    the L2 half of an L2 + L1 run whose L1 was measured again; a norm asked for that the
    run lacks is an error. What was taken is recorded in ``combined_from``."""
    if not reports:
        raise ValueError("combine: no reports")
    reports = [restore_report(r) for r in reports]
    taken = norms if norms is not None else [None] * len(reports)
    if len(taken) != len(reports):
        raise ValueError("combine: one norms entry per report")
    reports = [_only(r, want) for r, want in zip(reports, taken, strict=True)]
    first = reports[0]["meta"]
    keys = ("samples", "budgets", "budget", "timing_samples", "timing_repeats", "device")
    for r in reports[1:]:
        differ = [k for k in keys if r["meta"].get(k) != first.get(k)]
        if differ:
            raise ValueError(f"combine: runs differ in {', '.join(differ)}")
    models: dict[str, Any] = {}
    for r in reports:
        for name, block in r["models"].items():
            if name not in models:
                models[name] = {**block, "norms": dict(block["norms"])}
                continue
            # the same model from another run: only other norms may join it
            twice = sorted(set(models[name]["norms"]) & set(block["norms"]))
            if twice:
                raise ValueError(f"combine: model {name} norm {', '.join(twice)} is in two runs")
            joined = {**models[name]["norms"], **block["norms"]}
            # the report's usual order: the harness's own list of norms (others last)
            rank = {n: i for i, n in enumerate(ALL_NORMS)}
            models[name]["norms"] = dict(
                sorted(joined.items(), key=lambda kv: rank.get(kv[0], len(rank)))
            )
    meta = {
        **first,
        "models": list(models),
        "command": " ; ".join(
            r["meta"]["command"] + (f" (only {', '.join(want)} taken)" if want else "")
            for r, want in zip(reports, taken, strict=True)
        ),
        "combined_from": [
            {
                **{
                    k: r["meta"].get(k)
                    for k in ("command", "started", "total_seconds", "models", "cpu")
                },
                "norms": want,
            }
            for r, want in zip(reports, taken, strict=True)
        ],
        "total_seconds": sum(r["meta"].get("total_seconds") or 0.0 for r in reports),
        "total_cpu_seconds": sum(r["meta"].get("total_cpu_seconds") or 0.0 for r in reports),
    }
    return {"meta": meta, "models": models}


def _cpu_line(meta: dict[str, Any]) -> list[str]:
    """The CPU and kernel level the run's figures came from (absent in runs before session
    11): rerunning on other kernels moves distances at rounding level, and more on robust
    models."""
    cpu = meta.get("cpu")
    if not cpu:
        return []
    capped = {k: v for k, v in cpu.get("environment", {}).items() if v}
    return [
        f"- CPU {cpu.get('model')}; torch kernels {cpu.get('torch_capability')}; "
        f"{' '.join(cpu.get('isa_flags', [])) or 'no AVX2'}"
        + (f"; capped by {', '.join(f'{k}={v}' for k, v in capped.items())}" if capped else "")
    ]


def _only(report: dict[str, Any], norms: list[str] | None) -> dict[str, Any]:
    """``report`` with only the blocks of ``norms`` (all with ``None``); a model left with
    no norm is dropped. The input is left as it was."""
    if norms is None:
        return report
    models = {}
    for name, block in report["models"].items():
        missing = [n for n in norms if n not in block["norms"]]
        if missing:
            raise ValueError(f"combine: model {name} has no {', '.join(missing)} in its run")
        models[name] = {**block, "norms": {n: b for n, b in block["norms"].items() if n in norms}}
    return {**report, "models": models}


def _name(r: dict[str, Any]) -> str:
    return r["method"] if r["method"] == "mmargin" else f"{r['library']} {r['attack']}"


def ok_row(rows: list[dict[str, Any]], method: str) -> dict[str, Any] | None:
    """``method``'s row among ``rows`` if it ran (``status == "ok"``), else ``None``."""
    return next((r for r in rows if r["method"] == method and r["status"] == "ok"), None)


def _matched(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline's matched-quality figure from the main budget's rows
    (:func:`image_timing.matched_timing`): the peer, mmargin's budget and the time ratio;
    all ``None`` when it was not measured."""
    r = next((r for r in rows if r.get("matched_timing")), None)
    record = r["matched_timing"] if r else {}
    return {
        "matched_against": _name(r) if r else None,
        "matched_budget": record.get("mmargin_budget"),
        "matched_ratio": record.get("median_ratio"),
    }


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per model and norm: mmargin's optimality at the main budget and at
    :data:`HEADLINE_LOW_BUDGET`, the best peer at the main budget, the paired wall-time
    ratio against the peer mmargin was timed against (the fastest one reaching 0.9), and
    the ratio at that peer's quality (mmargin at the smallest budget reaching it)."""
    out = []
    for model, block in report["models"].items():
        for norm, nb in block["norms"].items():
            main = nb["runs"][str(nb["main_budget"])]
            ours = ok_row(main, "mmargin")
            low = ok_row(nb["runs"].get(str(HEADLINE_LOW_BUDGET), []), "mmargin")
            peers = [
                r for r in main
                if r["status"] == "ok" and is_peer(r["method"]) and r.get("optimality") is not None
            ]  # fmt: skip
            best = max(peers, key=lambda r: r["optimality"], default=None)
            timed = [
                r for r in main if r["method"] in nb.get("timing", {}).get("against", [])
                and r.get("paired_timing")
            ]  # fmt: skip
            chosen = fastest_qualifying(timed, TIMING_THRESHOLD)
            pair = next((r for r in timed if r["method"] == chosen), None)
            out.append({
                "model": model,
                "norm": norm,
                "mmargin_main": ours.get("optimality") if ours else None,
                "best_peer": _name(best) if best else None,
                "best_peer_optimality": best["optimality"] if best else None,
                "mmargin_low": low.get("optimality") if low else None,
                "timed_against": _name(pair) if pair else None,
                "timed_peers": bool(nb.get("timing", {}).get("against")) or bool(timed),
                "paired_ratio": pair["paired_timing"]["median_ratio"] if pair else None,
                **_matched(main),
            })  # fmt: skip
    return out


def _headline(report: dict[str, Any]) -> list[str]:
    main = report["meta"]["budget"]
    lines = [
        "## Headline",
        "",
        f"Pooled optimality (per model and norm, against the per-sample best of every row at "
        f"every budget); paired ratio: mmargin / peer wall time, median of back-to-back runs "
        f"against the fastest peer reaching optimality ≥ 0.9 at {main} (< 1: mmargin faster); "
        f"at the peer's optimality: the same pairs with mmargin at the smallest budget of the "
        f"run whose optimality reaches that peer's at {main} (the budget chosen after the "
        f"run: a matched-quality figure, not the target's).",
        "",
        f"| model | norm | mmargin @{main} | best peer @{main} | mmargin @{HEADLINE_LOW_BUDGET} "
        "| paired time ratio (peer) | at the peer's optimality (mmargin budget) |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for h in headline_rows(report):
        peer = (
            f"{h['best_peer']} {_fmt(h['best_peer_optimality'], '.3f')}" if h["best_peer"] else "–"
        )
        if h["timed_against"]:
            ratio = f"{_fmt(h['paired_ratio'], '.2f')} ({h['timed_against']})"
        elif h["timed_peers"]:
            ratio = "– (not timed)"
        else:
            ratio = f"– (no peer ≥ {TIMING_THRESHOLD})"
        lines.append(
            f"| {h['model']} | {_NORM_TITLE[h['norm']]} | {_fmt(h['mmargin_main'], '.3f')} "
            f"| {peer} | {_fmt(h['mmargin_low'], '.3f')} | {ratio} | {_matched_cell(h)} |"
        )
    return lines


def _matched_cell(h: dict[str, Any]) -> str:
    """The headline's matched-quality cell: ratio and mmargin's budget, or why none."""
    if h["matched_against"] is None:
        return "–"
    if h["matched_budget"] is None:
        return f"– (no budget reaches {h['matched_against']})"
    return f"{_fmt(h['matched_ratio'], '.2f')} (@{h['matched_budget']})"


def _curves(nb: dict[str, Any]) -> list[str]:
    budgets = sorted(int(b) for b in nb["runs"])
    if len(budgets) < 2:
        return []
    keys: dict[str, str] = {}
    for b in budgets:
        for r in nb["runs"][str(b)]:
            keys.setdefault(r["method"], _name(r))
    lines = [
        "Optimality by budget (pooled; each method run once per budget, configured for it):",
        "",
        "| method | " + " | ".join(str(b) for b in budgets) + " |",
        "|---|" + "---:|" * len(budgets),
    ]
    for key, name in keys.items():
        cells = []
        for b in budgets:
            r = ok_row(nb["runs"][str(b)], key)
            cells.append(_fmt(r.get("optimality") if r else None, ".3f"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _details(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| method | success | median | optimality | opt. (AB code) | passes/sample "
        "| seconds (CPU s) | mmargin/method time (CPU) | paired ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = sorted(rows, key=lambda r: (r["status"] != "ok", -(r.get("optimality") or -1e9)))
    for r in ordered:
        passes = f"{r['passes_per_sample']:.0f}"
        if not r["within_budget"]:
            passes += " (over budget)"
        if r["status"] != "ok":
            lines.append(f"| {_name(r)} | error | – | – | – | {passes} | {_times(r)} |")
            continue
        lines.append(
            f"| {_name(r)} | {r['success_rate']:.1%} | {_fmt(r['median_distance'], '.4f')} "
            f"| {_fmt(r['optimality'], '.3f')} "
            f"| {_fmt(r['optimality_attackbench_code'], '.3f')} "
            f"| {passes} | {_times(r)} |"
        )
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"\n- {r['library']} {r['attack']}: **error** `{r['error']}`")
    for r in rows:
        checks = r.get("checks") or {}
        found = {k: v for k, v in checks.items() if v}
        if found:
            text = ", ".join(f"{_CHECK_TEXT[k]}: {v}" for k, v in found.items())
            lines.append(
                f"\n- {r['library']} {r['attack']}, outputs rejected or flagged "
                f"here (of the correctly classified samples): {text}"
            )
    by_note: dict[str, list[str]] = {}
    for r in rows:
        if r.get("notes"):
            by_note.setdefault(r["notes"], []).append(f"{r['library']} {r['attack']}")
    for note, names in by_note.items():
        lines.append(f"\n- {'; '.join(names)}: {note}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The headline table, then per model and norm the budget curves and the detailed rows
    at the main budget, with the run's facts above them."""
    meta = report["meta"]
    budgets = meta.get("budgets", [meta["budget"]])
    lines = [
        "# Minimal-norm adversarial search on MNIST models: mmargin vs peers",
        "",
        f"- models: {', '.join(report['models'])}; samples: first {meta['samples']} MNIST "
        "test images (those a model misclassifies count as distance 0 for every method)",
        f"- budgets: {', '.join(map(str, budgets))} forward+backward passes per sample "
        f"(measured by one shared counter; main budget {meta['budget']}); device "
        f"{meta['device']}, torch threads {meta['threads']}",
        *_cpu_line(meta),
        f"- torch {meta['versions'].get('torch')}, foolbox {meta['versions'].get('foolbox')}, "
        f"adv-lib {meta['versions'].get('adv-lib')}, torchattacks "
        f"{meta['versions'].get('torchattacks')}; {meta['started']}",
        f"- command: `{meta['command']}`; "
        f"total run time {_fmt(meta.get('total_seconds'), '.0f')} s "
        f"(process CPU time {_fmt(meta.get('total_cpu_seconds'), '.0f')} s)",
        "",
        "success: valid adversarial on the correctly classified samples; median over them "
        "(failures count as ∞); optimality: AttackBench's score against the per-sample best "
        "of all rows of the model and norm, every budget pooled (exact area; *AB code*: the "
        "reference code's trapezoid rule); passes: measured per sample; seconds: wall time "
        "(process CPU time); ratio: mmargin seconds / method seconds, wall (CPU), in the main "
        "run; paired ratio: median of mmargin/method wall-time ratios from back-to-back runs "
        f"on the first {meta.get('timing_samples', '?')} images (robust to the shared "
        "machine's load) (< 1: mmargin faster).",
        "",
        *_headline(report),
    ]
    for model, block in report["models"].items():
        lines += ["", f"## {model}"]
        facts = [
            f"{k} {block[k]}"
            for k in ("role", "architecture", "training", "misclassified")
            if block.get(k) is not None
        ]
        if facts:
            lines += ["", "; ".join(facts)]
        for norm, nb in block["norms"].items():
            lines += ["", f"### {model} · {_NORM_TITLE[norm]}", ""]
            lines += _curves(nb)
            lines.append(f"At {nb['main_budget']} passes:")
            lines += ["", *_details(nb["runs"][str(nb["main_budget"])])]
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> None:
    """``out`` (strict JSON) and the markdown tables beside it (``.md``)."""
    out.write_text(json.dumps(_clean(report), indent=1, allow_nan=False) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
