"""Tabular benchmark: mmargin against IBM ART 1.20.1 on the synthetic card-fraud data.

For every flagged fraud (P(fraud) >= 0.3 on the test split) each method looks for the
cheapest change that brings the model below the threshold:

- mmargin: ``hybrid`` (LR, torch MLP), ``decision`` (gradient boosting) or ``auto`` (the
  scikit-learn ``Pipeline`` s trained on the raw DataFrame, fed DataFrames), cost-weighted
  L2 (the norm the peers minimise) and L1 (mmargin's default), exact margins on;
- ART LowProFool (models with gradients; target "legit" at probability > 0.7, which is
  P(fraud) < 0.3), ART HopSkipJump (L2, ``mask`` = the mutable features) and ART
  BoundaryAttack (no ``mask`` argument: it searches the mutable features only, the
  immutable ones filled in from the row — the same constraint by reparametrisation).

ART runs in cost-weighted units (``u = w ⊙ x``), so its L2 is mmargin's ``tabular-l2``; it
cannot express integers, one-hot blocks or allowed directions, so its raw outputs are
checked against the schema (``violations``) and also projected onto it by the tabular
space and re-checked (``repaired``). Queries are sample-passes measured by mmargin's one
pass counter (``mmargin.engine.counting``): rows scored (forward; backward too for
LowProFool), for mmargin too (its own ``queries`` are recorded beside the measurement).
Writes ``bench/results/tabular.json`` and ``.md`` (``--out`` elsewhere). Run with
``bash bench/run_tabular.sh`` (ART lives in ``bench/.venv-art``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmargin.api import exact_fn
from mmargin.engine import minimal_flip
from mmargin.engine.counting import CountingAdapter, CountingModule, PassCounter
from mmargin.engine.spec import SearchSpec
from mmargin.goals import Threshold
from mmargin.results import Status
from mmargin_tabular import models
from mmargin_tabular.adapters import SklearnAdapter
from mmargin_tabular.data import fraud_split
from mmargin_tabular.distances import make_distance
from mmargin_tabular.space import TabularSpace, tabular_space

TAU = 0.3
OUT = Path(__file__).parent / "results"


class Model:
    """One benchmarked model: P(fraud) on raw rows, a counted black box (``counter``: one
    forward pass per row scored), a torch module (``counted``: the same module behind the
    counting wrapper, for attacks that take gradients)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counter = PassCounter()
        self.fast: tuple[np.ndarray, np.ndarray, Any] | None = None
        if name == "torch_mlp":
            self.module = models.fraud_torch_mlp().double()
            self.sk = None
        else:
            self.sk = models.FACTORIES[name]()
            adapter = SklearnAdapter(self.sk, schema="fraud")
            self.module = adapter.module  # the torch twin (None for trees)
            self.adapter = adapter
            if adapter.raw is not None:
                self.fast = _fast_path(adapter)
        self.counted = CountingModule(self.module) if self.module is not None else None

    def proba(self, x: np.ndarray) -> np.ndarray:
        """P(fraud) of encoded rows (counted)."""
        self.counter.forward += x.shape[0]
        if self.fast is not None:
            a, c, final = self.fast
            return np.asarray(final.predict_proba(np.asarray(x, np.float64) @ a.T + c)[:, 1])
        if self.sk is not None:
            return np.exp(self.adapter.numpy_scores(np.asarray(x, dtype=np.float64))[:, 1])
        with torch.no_grad():
            out = self.module(torch.as_tensor(np.asarray(x, dtype=np.float64)))
        return torch.softmax(out, 1)[:, 1].numpy()

    def mmargin_model(self) -> Any:
        """What mmargin is given: the scikit-learn estimator, or a float32 torch copy."""
        return self.sk if self.sk is not None else models.fraud_torch_mlp()


def _fast_path(adapter: SklearnAdapter) -> tuple[np.ndarray, np.ndarray, Any] | None:
    """For a pipeline on raw DataFrame columns: its preprocessing as the affine map the
    adapter found, and its final estimator — used only where it gives the pipeline's own
    probabilities (to 1e-9 on the whole test split: the linear model), saving the
    ColumnTransformer's ~40 ms per call on the peers' many small calls. Trees can differ
    (a value on a split threshold rounds the other way), so they run the real pipeline;
    mmargin always runs the real pipeline."""
    assert adapter.raw is not None and adapter.raw.pre is not None
    a, c = adapter.raw.pre
    final = adapter.raw.final
    x = fraud_split("test")[0].astype(np.float64)
    fast = final.predict_proba(x @ a.T + c)[:, 1]
    real = np.exp(adapter.numpy_scores(x)[:, 1])
    differ = int((np.abs(fast - real) > 1e-9).sum())
    print(f"{adapter.raw.final.__class__.__name__}: fast path differs on {differ}/{len(x)} rows")
    return (a, c, final) if differ == 0 else None


# -- ART ---------------------------------------------------------------------------------------
def art_attacks(model: Model, x: np.ndarray, space: TabularSpace, budget: int) -> dict[str, Any]:
    """Run the applicable ART attacks on rows ``x``; returns method -> (adv rows, seconds,
    rows counted). HopSkipJump and Boundary start from the same help mmargin gets: the
    nearest training row below the threshold, immutable features copied from ``x``."""
    from art.attacks.evasion import BoundaryAttack, HopSkipJump, LowProFool
    from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier

    s = space.schema
    assert s is not None
    w = s.weights("cost", 2.0)
    free = s.mask > 0
    lo, hi = s.lower * w, s.upper * w
    out: dict[str, Any] = {}

    def probs_u(u: np.ndarray, row: np.ndarray | None = None) -> np.ndarray:
        full = u / w if row is None else _fill(row, u / w[free], free)
        p = model.proba(full)
        return np.stack([1 - p, p], axis=1)

    init = _starts(model, x, space)
    # HopSkipJump with ART's own mask, batched
    model.counter.reset()
    started = time.perf_counter()
    clf = BlackBoxClassifier(lambda u: _decision(probs_u(u)), (x.shape[1],), 2,
                             clip_values=(lo, hi))  # fmt: skip
    hsj = HopSkipJump(clf, targeted=False, norm=2, max_iter=budget // 80, max_eval=budget // 10,
                      init_eval=20, init_size=50, batch_size=256, verbose=False)  # fmt: skip
    mask = np.broadcast_to(free.astype(np.float32), x.shape).copy()
    adv = (
        hsj.generate(
            (x * w).astype(np.float32), mask=mask, x_adv_init=(init * w).astype(np.float32)
        )
        / w
    )
    out["art.HopSkipJump"] = (adv, time.perf_counter() - started, model.counter.total, None)

    # BoundaryAttack on the mutable features only, one row at a time
    model.counter.reset()
    started = time.perf_counter()
    rows = []
    for row, start in zip(x, init, strict=True):
        clf = BlackBoxClassifier(lambda u, r=row: _decision(probs_u(u, r)), (int(free.sum()),),
                                 2, clip_values=(lo[free], hi[free]))  # fmt: skip
        attack = BoundaryAttack(clf, targeted=False, max_iter=budget // 20, num_trial=10,
                                sample_size=10, batch_size=64, verbose=False)  # fmt: skip
        u = attack.generate(
            (row * w)[free][None].astype(np.float32),
            x_adv_init=(start * w)[free][None].astype(np.float32),
        )[0]
        rows.append(_fill(row, u / w[free], free)[0])
    seconds = time.perf_counter() - started
    out["art.BoundaryAttack"] = (np.array(rows), seconds, model.counter.total, None)

    if model.counted is None:
        return out
    # LowProFool (needs gradients) on the mutable features only, one row at a time
    model.counted.reset()
    started = time.perf_counter()
    rows = []
    for row in x:
        net = _Restricted(model, row, free, w)
        clf = PyTorchClassifier(net, _ProbNLL(), (int(free.sum()),), 2,
                                clip_values=(lo[free], hi[free]))  # fmt: skip
        attack = LowProFool(clf, n_steps=budget // 2, threshold=1 - TAU, lambd=1.5,
                            importance=np.ones(int(free.sum())), verbose=False)  # fmt: skip
        target = np.array([[1.0, 0.0]])  # "legit"
        u = attack.generate((row * w)[free][None].astype(np.float32), target)[0]
        rows.append(_fill(row, u / w[free], free)[0])
    passes = model.counted.passes
    out["art.LowProFool"] = (np.array(rows), time.perf_counter() - started, passes, None)
    return out


def _starts(model: Model, x: np.ndarray, space: TabularSpace) -> np.ndarray:
    """Per row, the nearest (cost-weighted L2) training row below the threshold once the
    row's immutable features are copied in (the same help mmargin's reference rows give;
    not counted as queries: it is the attacks' given start). Rows without one: themselves."""
    s = space.schema
    assert s is not None and space.reference is not None
    ref = space.reference.astype(np.float64)
    w, free = s.weights("cost", 2.0), s.mask > 0
    out, counted = [], model.counter.forward
    for row in x:
        cand = np.where(free, ref, row)
        ok = model.proba(cand) < TAU
        dist = np.where(ok, (((cand - row) * w) ** 2).sum(axis=1), np.inf)
        out.append(cand[int(np.argmin(dist))] if ok.any() else row)
    model.counter.forward = counted
    return np.array(out)


def _decision(p: np.ndarray) -> np.ndarray:
    """Scores whose arg-max is the threshold decision (fraud iff P(fraud) >= TAU)."""
    fraud = p[:, 1] >= TAU
    return np.stack([~fraud, fraud], axis=1).astype(np.float32)


def _fill(row: np.ndarray, values: np.ndarray, free: np.ndarray) -> np.ndarray:
    full = np.tile(row.astype(np.float64), (np.atleast_2d(values).shape[0], 1))
    full[:, free] = np.atleast_2d(values)
    return full


class _Restricted(torch.nn.Module):
    """The model on the mutable features of one row (cost units), returning probabilities;
    every pass goes through the model's counting wrapper (``Model.counted``)."""

    def __init__(self, model: Model, row: np.ndarray, free: np.ndarray, w: np.ndarray) -> None:
        super().__init__()
        assert model.counted is not None
        self.counted, self.free = model.counted, torch.as_tensor(free)
        self.row = torch.as_tensor(row, dtype=torch.float64)
        self.w = torch.as_tensor(w, dtype=torch.float64)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        full = self.row.repeat(u.shape[0], 1)
        full[:, self.free] = u.double() / self.w[self.free]
        return torch.softmax(self.counted(full), 1).float()


class _ProbNLL(torch.nn.Module):
    """Negative log-likelihood of probability outputs (one-hot or index targets)."""

    def forward(self, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.argmax(1) if y.dim() == 2 else y.long()
        return torch.nn.functional.nll_loss(torch.log(p.clamp(min=1e-12)), y)


# -- mmargin -----------------------------------------------------------------------------------
def run_mmargin(
    model: Model, x: np.ndarray, space: TabularSpace, dist_name: str, strategy: str, budget: int
) -> tuple[np.ndarray, float, int, int, list[Any]]:
    """mmargin on the same rows: adversarial rows (NaN where none), seconds, passes measured
    around the adapter, passes mmargin reports (``queries``), the results. The exact-margin
    hook gets the uncounted adapter (it reads weights, it makes no passes)."""
    from mmargin.adapters import TorchAdapter

    adapter = SklearnAdapter(model.sk, schema="fraud") if model.sk is not None else \
        TorchAdapter(model.mmargin_model())  # fmt: skip
    counted = CountingAdapter(adapter)
    dist = make_distance(dist_name, space.schema, "cost")  # type: ignore[arg-type]
    goal = Threshold(TAU)
    exact = exact_fn(adapter, space, dist, goal)
    started = time.perf_counter()
    spec = SearchSpec(budget=budget, strategy=strategy)
    labels = np.ones(len(x), dtype=np.int64)
    results = minimal_flip(counted, space, dist, x, labels, goal=goal, spec=spec, exact=exact)
    seconds = time.perf_counter() - started
    adv = np.full(x.shape, np.nan)
    for i, r in enumerate(results):
        if r.status is Status.FLIPPED:
            adv[i] = r.adversarial
    return adv, seconds, counted.passes, sum(r.queries for r in results), results


# -- scoring -----------------------------------------------------------------------------------
def score(model: Model, x: np.ndarray, adv: np.ndarray, space: TabularSpace,
          exact_l1: np.ndarray) -> dict[str, Any]:  # fmt: skip
    """Success, cost (L1 and L2, cost units), schema violations, repaired success, and the
    repaired L1 cost over mmargin's exact L1 margin on the same samples (median)."""
    s = space.schema
    assert s is not None
    found = ~np.isnan(adv).any(axis=1)
    p = np.full(len(x), 1.0)
    p[found] = model.proba(adv[found])
    success = found & (p < TAU)
    valid = np.array([f and space.check(a[None].astype(np.float32))[0] is None
                      and _directions_ok(s, xi, a) for f, xi, a in zip(found, x, adv,
                                                                       strict=True)])  # fmt: skip
    violations = found & ~valid
    xt = torch.as_tensor(x, dtype=torch.float32)
    at = torch.as_tensor(np.where(found[:, None], adv, x), dtype=torch.float32)
    repaired = space.finalize(xt, at).double().numpy()
    rep_ok = found & (model.proba(repaired) < TAU)
    l1 = make_distance("l1", s, "cost").norm(at - xt).numpy()
    l1_rep = make_distance("l1", s, "cost").norm(torch.as_tensor(repaired, dtype=torch.float32)
                                                 - xt).numpy()  # fmt: skip
    l2 = make_distance("l2", s, "cost").norm(at - xt).numpy()
    return {
        "success": float(success.mean()),
        "valid_success": float((success & valid).mean()),
        "violations": float(violations.sum() / max(found.sum(), 1)),
        "repaired_success": float(rep_ok.mean()),
        "median_l1_cost": _median(l1[success]),
        "median_l2_cost": _median(l2[success]),
        "median_l1_cost_repaired": _median(l1_rep[rep_ok]),
        # samples without a proven exact margin (NaN) are not part of this median
        "repaired_over_exact": _median((l1_rep / exact_l1)[rep_ok & np.isfinite(exact_l1)]),
    }


def _directions_ok(schema: Any, x: np.ndarray, adv: np.ndarray) -> bool:
    d = schema.direction
    return bool(np.all(adv[d > 0] >= x[d > 0] - 1e-6) and np.all(adv[d < 0] <= x[d < 0] + 1e-6))


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if v.size else math.nan


# -- the run -----------------------------------------------------------------------------------
PLAN = {"logreg": "hybrid", "gbm": "decision", "torch_mlp": "hybrid",
        "pipeline_logreg": "auto", "pipeline_hgb": "auto"}  # fmt: skip
"""The pipeline models (trained on the raw DataFrame) run mmargin's default strategy."""


def main(argv: list[str] | None = None) -> int:
    """Run every model and method; write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30, help="flagged frauds per model")
    parser.add_argument("--budget", type=int, default=1000, help="passes per sample (mmargin)")
    parser.add_argument("--art-budget", type=int, default=2000, help="ART queries per sample")
    parser.add_argument(
        "--models", nargs="*", default=["logreg", "gbm", "torch_mlp"], choices=list(PLAN)
    )
    parser.add_argument("--out", type=Path, default=OUT / "tabular.json", help="JSON; .md beside")
    args = parser.parse_args(argv)
    logging.getLogger("art").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    space = tabular_space("fraud", reference="fraud")
    x_all, y_all = fraud_split("test")
    table: list[dict[str, Any]] = []
    for name in args.models:
        model = Model(name)
        p = model.proba(x_all.astype(np.float64))
        x = x_all[(p >= TAU) & (y_all == 1)][: args.samples].astype(np.float64)
        runs: dict[str, tuple[np.ndarray, float, int, int | None]] = {}
        exact_l1 = np.full(len(x), np.nan)
        for dist in ("l2", "l1"):
            adv, secs, passes, reported, results = run_mmargin(
                model, x.astype(np.float32), space, dist, PLAN[name], args.budget
            )
            runs[f"mmargin.{PLAN[name]}-{dist}"] = (adv, secs, passes, reported)
            exact = sum(r.exact for r in results if r.status is Status.FLIPPED)
            print(f"{name} mmargin {dist}: {secs:.1f}s, exact {exact}/{len(results)}", flush=True)
            if dist == "l1":
                exact_l1 = np.array([r.lower_bound if r.exact else np.nan for r in results])
        runs.update(art_attacks(model, x, space, args.art_budget))
        base = runs[f"mmargin.{PLAN[name]}-l2"][1]
        for method, (adv, secs, passes, reported) in runs.items():
            row = {"model": name, "method": method, "samples": len(x),
                   **score(model, x, adv, space, exact_l1),
                   "queries_per_sample": passes / len(x),
                   "reported_queries_per_sample": None if reported is None else
                   reported / len(x),
                   "seconds": secs, "time_ratio_vs_mmargin_l2": secs / base}  # fmt: skip
            table.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threshold": TAU, "samples_per_model": args.samples, "mmargin_budget": args.budget,
            "art_budget": args.art_budget, "art": _version("adversarial-robustness-toolbox"),
            "units": "cost points (schema costs); L2 = cost-weighted L2"}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "rows": table}, indent=2) + "\n",
                        encoding="utf-8")  # fmt: skip
    args.out.with_suffix(".md").write_text(markdown(meta, table), encoding="utf-8")
    return 0


def markdown(meta: dict[str, Any], table: list[dict[str, Any]]) -> str:
    """The results as a Markdown table with a short legend."""
    cols = [("model", "model"), ("method", "method"), ("success", "success"),
            ("valid_success", "valid"), ("violations", "violations"),
            ("repaired_success", "repaired"), ("median_l1_cost", "med L1"),
            ("median_l2_cost", "med L2"), ("median_l1_cost_repaired", "med L1 repaired"),
            ("repaired_over_exact", "repaired / exact"),
            ("queries_per_sample", "queries"), ("seconds", "s"),
            ("time_ratio_vs_mmargin_l2", "time ×")]  # fmt: skip
    lines = [
        "# Tabular benchmark: mmargin vs IBM ART " + str(meta["art"]),
        "",
        f"Flagged frauds (P(fraud) >= {meta['threshold']}) of the synthetic test split, "
        f"{meta['samples_per_model']} per model; goal: below the threshold. Costs in "
        f"{meta['units']}. *success*: the output is below the threshold; *valid*: and "
        "satisfies the schema (bounds, immutables, directions, integers, one-hot); "
        "*violations*: share of outputs breaking the schema; *repaired*: success after the "
        "tabular space projects the output onto the schema. Queries: model rows per sample "
        "(forward + backward for LowProFool). *repaired / exact*: per sample, the repaired "
        "output's L1 cost over mmargin's exact L1 margin (lower bound = margin), median over "
        "the samples both have. Time × is relative to mmargin's L2 run.",
        "",
        "| " + " | ".join(h for _, h in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for row in table:
        cells = []
        for key, _ in cols:
            v = row[key]
            if key in ("success", "valid_success", "violations", "repaired_success"):
                cells.append(f"{v:.0%}")
            elif isinstance(v, float):
                cells.append("n/a" if math.isnan(v) else f"{v:.3g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    raise SystemExit(main())
