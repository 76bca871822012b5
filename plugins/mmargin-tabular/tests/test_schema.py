"""Schemas: parsing, validation messages, layout and the per-unit weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmargin_tabular.distances import make_distance
from mmargin_tabular.schema import Schema, SchemaError, load_schema, parse_schema


def test_fraud_schema_layout(schema: Schema) -> None:
    assert schema.n_columns == 23 and len(schema.features) == 11
    assert schema.columns[9] == "merchant_category=grocery"
    assert [list(g) for g in schema.groups] == [list(range(9, 17)), list(range(17, 23))]
    assert schema.mask[5] == 0 and schema.mask[17:].sum() == 0  # account age, card country
    assert schema.direction[3] == 1 and schema.direction[4] == 1  # txn count, device age
    assert schema.integer[[1, 3, 4, 5, 7, 8]].all() and not schema.integer[[0, 2, 6, 9]].any()


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ({"a": {"type": "text"}}, "type must be one of"),
        ({"a": {"colour": 1}}, "unknown keys"),
        ({"a": {"cost": 0}}, "cost must be a finite number > 0"),
        ({"a": {"lower": 2, "upper": 1}}, "lower (2.0) must be <= upper"),
        ({"a": {"type": "categorical", "categories": ["x"]}}, ">= 2 categories"),
        ({"a": {"type": "categorical", "categories": ["x", "y"], "direction": "up"}},
         "has no direction"),
        ({"a": {"direction": "sideways"}}, "direction must be one of"),
        ({"a": {"mutable": "no"}}, "mutable must be true or false"),
        ({"a": {"categories": ["x", "y"]}}, "only apply to type = 'categorical'"),
        ({"a": {"precision": 1.5}}, "precision must be a whole number"),
        ({"a": {"precision": -1}}, "precision must be a whole number"),
        ({"a": {"allowed": ["x"]}}, "allowed only applies"),
        ({"a": {"type": "categorical", "categories": ["x", "y"], "allowed": ["z"]}},
         "allowed categories ['z'] are not among"),
        ({"a": {"type": "continuous", "integer": True}}, "integer = true only applies"),
    ],
)  # fmt: skip
def test_bad_schemas_name_feature_and_field(features: dict, message: str) -> None:
    with pytest.raises(SchemaError, match="feature 'a'") as info:
        parse_schema({"features": features})
    assert message in str(info.value)


def test_schema_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="needs a \\[features"):
        parse_schema({"name": "x"})
    with pytest.raises(SchemaError, match="unknown keys"):
        parse_schema({"features": {"a": {}}, "colour": 1})
    with pytest.raises(FileNotFoundError, match="not a built-in schema"):
        load_schema(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("features = [", encoding="utf-8")
    with pytest.raises(SchemaError, match="not valid TOML"):
        load_schema(bad)


def test_file_and_inline_schemas_agree(tmp_path: Path) -> None:
    text = """
name = "mini"
[features.amount]
lower = 0
upper = 100
cost = 0.5
[features.kind]
type = "categorical"
categories = ["a", "b", "c"]
[features.count]
type = "integer"
lower = 0.5
upper = 7.9
direction = "up"
"""
    path = tmp_path / "mini.toml"
    path.write_text(text, encoding="utf-8")
    import tomllib

    from_file = load_schema(path)
    inline = load_schema(tomllib.loads(text))
    assert from_file.columns == inline.columns == ["amount", "kind=a", "kind=b", "kind=c", "count"]
    assert from_file.feature("count").lower == 1 and from_file.feature("count").upper == 7


@pytest.mark.parametrize("name", ["l1", "l2", "linf"])
@pytest.mark.parametrize("units", ["cost", "std", "raw"])
def test_a_category_switch_costs_the_feature_cost_in_every_norm(
    schema: Schema, name: str, units: str
) -> None:
    dist = make_distance(name, schema, units)
    delta = torch.zeros(1, schema.n_columns)
    delta[0, 9], delta[0, 12] = -1.0, 1.0  # grocery -> online_retail
    want = {"cost": 1.0, "std": 1.0, "raw": 1.0}[units]
    assert float(dist.norm(delta)[0]) == pytest.approx(want, rel=1e-6)
    delta = torch.zeros(1, schema.n_columns)
    delta[0, 0] = 200.0  # amount + 200 $
    per_unit = {"cost": 0.01, "std": 1 / 164.0, "raw": 1.0}[units]
    assert float(dist.norm(delta)[0]) == pytest.approx(200 * per_unit, rel=1e-6)


def test_l0_counts_features_not_columns(schema: Schema) -> None:
    dist = make_distance("l0", schema)
    delta = torch.zeros(2, schema.n_columns)
    delta[0, 9], delta[0, 12], delta[0, 1] = -1.0, 1.0, 3.0  # category + hour: 2 features
    assert dist.norm(delta).tolist() == [2.0, 0.0]
    assert make_distance("linf", schema).units == "standard deviations"
    assert math.isinf(make_distance("l1", schema).p) is False


def test_numeric_precision_units_and_allowed_categories() -> None:
    from mmargin_tabular.report import row_report

    sch = parse_schema({"features": {
        "amount": {"type": "numeric", "lower": 0, "upper": 1000, "unit": "$", "precision": 2},
        "count": {"type": "numeric", "integer": True, "lower": 0, "upper": 9},
        "score": {"type": "numeric"},
        "shop": {"type": "categorical", "categories": ["a", "b", "c"], "allowed": ["b"]},
    }})  # fmt: skip
    assert [f.type for f in sch.features] == ["continuous", "integer", "continuous", "categorical"]
    assert sch.direction[3:].tolist() == [-1.0, 0.0, -1.0]  # only "b" may be moved into
    row = np.array([69.29, 3, 0.1, 1, 0, 0], dtype=np.float32)
    adv = np.array([55.5, 4, 0.3, 0, 1, 0], dtype=np.float32)
    assert float(row[0]) != 69.29  # float32 noise the report must not show
    assert sch.describe(row) == {"amount": 69.29, "count": 3, "score": 0.1, "shop": "a"}
    (report,) = row_report(sch, torch.as_tensor(row[None]), torch.as_tensor(adv[None]))
    texts = [c["text"] for c in report["changes"]]
    assert texts == ["amount: 69.29 $ → 55.50 $", "count: 3 → 4", "score: 0.1 → 0.3",
                     "shop: a → b"]  # fmt: skip
    assert report["changes"][0]["change"] == -13.79 and report["changes"][0]["unit"] == "$"
