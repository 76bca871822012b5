"""The tabular space: property tests that nothing it lets through violates the schema.

Two levels: ``finalize`` (what every verified candidate goes through) on arbitrary
candidates, and the whole engine on random small schemas and models — every reported
adversarial must satisfy bounds, immutables, directions, integers and one-hot blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmargin.plugin import CallableAdapter, Status, TorchAdapter, Untargeted
from mmargin.testing import SearchSpec, minimal_flip
from mmargin_tabular.distances import make_distance
from mmargin_tabular.plugin import mmargin_sample_report
from mmargin_tabular.schema import Schema, parse_schema
from mmargin_tabular.space import TabularSpace, tabular_space


def assert_valid(space: TabularSpace, x: np.ndarray, adv: np.ndarray) -> None:
    """Every schema rule, checked directly (not through the space's own ``check``)."""
    s = space.schema
    assert s is not None
    for f, sl in zip(s.features, s.slices, strict=True):
        a, o = adv[sl], x[sl]
        if not f.mutable:
            assert np.array_equal(a, o), f.name
        if f.type == "categorical":
            assert sorted(a.tolist()) == [0.0] * (len(a) - 1) + [1.0], f.name
            continue
        v = float(a[0])
        assert f.lower - 1e-6 <= v <= f.upper + 1e-6, f.name
        if f.type in ("integer", "binary"):
            assert v == round(v), f.name
        if f.direction == "up":
            assert v >= o[0], f.name
        if f.direction == "down":
            assert v <= o[0], f.name
    assert space.check(adv[None])[0] is None


@settings(max_examples=60, deadline=None)
@given(row=st.integers(0, 499), scale=st.sampled_from([0.01, 1.0, 50.0, 1e4]),
       seed=st.integers(0, 2**31 - 1))  # fmt: skip
def test_finalize_always_lands_inside_the_schema(row: int, scale: float, seed: int) -> None:
    space = _fraud_space()
    x = torch.as_tensor(_fraud_rows()[row : row + 1])
    noise = torch.randn(1, x.shape[1], generator=torch.Generator().manual_seed(seed))
    adv = space.finalize(x, x + noise * scale)
    assert_valid(space, x[0].numpy(), adv[0].numpy())
    assert torch.equal(space.finalize(x, adv), adv)  # idempotent on valid rows


@settings(max_examples=40, deadline=None)
@given(row=st.integers(0, 499), seed=st.integers(0, 2**31 - 1))
def test_project_keeps_mask_directions_bounds_and_simplex(row: int, seed: int) -> None:
    space = _fraud_space()
    s = space.schema
    assert s is not None
    x = torch.as_tensor(_fraud_rows()[row : row + 1])
    delta = torch.randn(1, x.shape[1], generator=torch.Generator().manual_seed(seed)) * 5
    new = (x + space.project(x, delta))[0].numpy()
    x0 = x[0].numpy()
    assert np.array_equal(new[s.mask == 0], x0[s.mask == 0])
    assert np.all(new[s.direction > 0] >= x0[s.direction > 0])
    assert np.all((new >= s.lower - 1e-6) & (new <= s.upper + 1e-6))
    for g in s.groups:
        assert new[g].min() >= 0 and new[g].sum() == pytest.approx(1.0, abs=1e-5)


def test_integers_round_away_from_the_clean_value() -> None:
    space = _fraud_space()
    x = torch.as_tensor(_fraud_rows()[:1])
    adv = x.clone()
    adv[0, 1] = x[0, 1] + 0.2  # hour: any move becomes a whole hour, away from x
    adv[0, 7] = x[0, 7] + (0.3 if x[0, 7] == 0 else -0.3)  # binary: below 0.5 stays
    out = space.finalize(x, adv)[0]
    assert out[1] == min(x[0, 1] + 1, 23) and out[7] == x[0, 7]


def test_report_lists_changed_features_with_costs(schema: Schema) -> None:
    space = _fraud_space()
    x = torch.as_tensor(_fraud_rows()[:1])
    adv = x.clone()
    adv[0, 0] += 150.0  # amount
    adv[0, 9:17] = 0.0
    adv[0, 9 + 6] = 1.0  # jewelry
    (entry,) = mmargin_sample_report(space, None, x, adv, torch.tensor([1]), Untargeted())
    changed = {c["feature"]: c for c in entry["changes"]}
    assert set(changed) >= {"amount"}
    assert changed["amount"]["change"] == pytest.approx(150.0, rel=1e-5)
    assert changed["amount"]["cost"] == pytest.approx(1.5, rel=1e-5)
    total = sum(c["cost"] for c in entry["changes"])
    l1 = float(make_distance("l1", schema).norm(adv - x)[0])
    assert entry["cost"] == pytest.approx(total, rel=1e-5) and entry["cost"] == pytest.approx(l1)
    assert entry["features_changed"] == len(entry["changes"])


# -- the whole engine on random small schemas ----------------------------------------------
@st.composite
def small_problems(draw: st.DrawFn) -> tuple[Schema, np.ndarray, int]:
    """A random 3-5 feature schema, 6 valid rows and a seed for the model."""
    features = {}
    for i in range(draw(st.integers(3, 5))):
        kind = draw(st.sampled_from(["continuous", "integer", "binary", "categorical"]))
        spec: dict = {"type": kind, "mutable": draw(st.booleans()) or i == 0}
        if kind == "categorical":
            spec["categories"] = ["a", "b", "c"]
        else:
            spec["direction"] = draw(st.sampled_from(["any", "any", "up", "down"]))
            if kind != "binary":
                spec["lower"], spec["upper"] = 0, 10
        spec["cost"] = draw(st.sampled_from([0.5, 1.0, 2.0]))
        features[f"f{i}"] = spec
    schema = parse_schema({"features": features})
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    rows = np.zeros((6, schema.n_columns), dtype=np.float32)
    for f, sl in zip(schema.features, schema.slices, strict=True):
        if f.type == "categorical":
            rows[np.arange(6), sl.start + rng.integers(0, 3, 6)] = 1.0
        elif f.type == "continuous":
            rows[:, sl.start] = rng.uniform(f.lower, f.upper, 6)
        else:
            rows[:, sl.start] = rng.integers(int(f.lower), int(f.upper) + 1, 6)
    return schema, rows, draw(st.integers(0, 1000))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=small_problems(), strategy=st.sampled_from(["decision", "gradient", "hybrid"]),
       distance=st.sampled_from(["l1", "l2", "linf", "l0"]))  # fmt: skip
def test_no_reported_adversarial_violates_the_schema(
    problem: tuple[Schema, np.ndarray, int], strategy: str, distance: str
) -> None:
    schema, rows, seed = problem
    space = TabularSpace(schema=schema)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(schema.n_columns, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 2))  # fmt: skip
    adapter: object = TorchAdapter(net)
    if strategy == "decision":
        adapter = CallableAdapter(lambda a: net(torch.as_tensor(a)).detach().numpy())
    with torch.no_grad():
        labels = net(torch.as_tensor(rows)).argmax(dim=1).numpy()
    spec = SearchSpec(budget=150, strategy=strategy, exact="never", line_search_steps=6)

    def report(*args: object) -> object:  # the plugin's report hook, as the API binds it
        return mmargin_sample_report(space, *args)

    results = minimal_flip(adapter, space, make_distance(distance, schema), rows, labels,  # type: ignore[arg-type]
                           spec=spec, report=report)  # fmt: skip
    for r, x in zip(results, rows, strict=True):
        assert r.status is not Status.ERROR, r.message
        if r.status is Status.FLIPPED:
            assert_valid(space, x, np.asarray(r.adversarial))
            assert r.extras["features_changed"] >= 1


_CACHE: dict[str, object] = {}


def _fraud_space() -> TabularSpace:
    if "space" not in _CACHE:
        _CACHE["space"] = tabular_space("fraud")
    return _CACHE["space"]  # type: ignore[return-value]


def _fraud_rows() -> np.ndarray:
    if "rows" not in _CACHE:
        from mmargin_tabular.data import fraud_split

        _CACHE["rows"] = fraud_split("test", n=500)[0]
    return _CACHE["rows"]  # type: ignore[return-value]
