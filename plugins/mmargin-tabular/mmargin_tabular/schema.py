"""Feature schemas: what each column of a tabular model's input means and how it may change.

A schema lists features in model-input order. Each feature has a type — ``continuous``,
``integer``, ``binary`` or ``categorical`` (one-hot over its ``categories``, one column per
category) — bounds, whether it may change at all (``mutable = false``: account age, card
country), an allowed direction (``any``, ``up``, ``down``), a ``cost`` per unit of change
(a category switch or a binary flip costs ``cost`` once) and a ``scale`` (the size of one
"standard unit", e.g. the standard deviation, used by the ``std`` units). A feature may
also give the ``unit`` its values are shown in, the ``precision`` (decimal places) they
are shown with (integers: 0; otherwise the shortest float32 repr, so no ``69.29000091552734``)
and, for a categorical, the ``allowed`` categories a change may move *into* (the row's own
category may always be left). ``type = "numeric"`` is ``continuous``, or ``integer`` with
``integer = true``.

The schema describes the *raw* columns a user's DataFrame holds (names and meanings); the
model input the engine searches over is its encoding (one-hot blocks for categoricals),
and :mod:`mmargin_tabular.frames` turns encoded rows back into DataFrames with the raw
column names and dtypes for models trained on DataFrames (scikit-learn pipelines with a
``ColumnTransformer``, XGBoost, LightGBM).

Schemas are TOML (read with :mod:`tomllib`)::

    name = "card-fraud"
    label = "is_fraud"
    classes = ["legit", "fraud"]

    [features.amount]
    type = "continuous"
    lower = 0.0
    upper = 20000.0
    cost = 0.01        # 100 currency units = 1 cost point
    scale = 180.0
    unit = "$"

    [features.card_country]
    type = "categorical"
    categories = ["US", "GB", "DE"]
    mutable = false

:func:`load_schema` accepts a built-in name (``fraud``), a path to such a file, or the same
content as a mapping (an inline ``[space.schema]`` table of a task file).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

TYPES = ("continuous", "integer", "binary", "categorical")
DIRECTIONS = ("any", "up", "down")
UNITS = ("cost", "std", "raw")
BUILTIN = ("fraud",)


class SchemaError(ValueError):
    """A schema is malformed; the message names the feature and the field."""


@dataclass(frozen=True)
class Feature:
    """One input feature: its type, bounds, mutability, direction, cost and scale."""

    name: str
    type: str = "continuous"
    lower: float = -math.inf
    upper: float = math.inf
    mutable: bool = True
    direction: str = "any"
    cost: float = 1.0
    scale: float = 1.0
    categories: tuple[str, ...] = ()
    unit: str = ""
    precision: int | None = None
    allowed: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """How many model-input columns the feature occupies."""
        return len(self.categories) if self.type == "categorical" else 1

    @property
    def columns(self) -> list[str]:
        """Column names: the feature name, or ``name=category`` for each one-hot column."""
        if self.type == "categorical":
            return [f"{self.name}={c}" for c in self.categories]
        return [self.name]

    @property
    def targets(self) -> tuple[str, ...]:
        """The categories a change may move into (all of them unless ``allowed`` says)."""
        return self.allowed or self.categories

    def value(self, encoded: float) -> float | int:
        """One raw value as shown: an ``int`` for integer features, else rounded to the
        feature's ``precision`` (default: the shortest repr of its float32, so values read
        from float32 rows carry no float noise)."""
        if self.type in ("integer", "binary"):
            return round(float(encoded))
        if self.precision is not None:
            return round(float(encoded), self.precision)
        return float(str(np.float32(encoded)))

    def show(self, value: Any) -> str:
        """A raw value with its unit, e.g. ``"69.29 $"`` or ``"electronics"``."""
        if value is None:
            return "?"
        text = f"{value:.{self.precision}f}" if isinstance(value, float) and \
            self.precision is not None else str(value)  # fmt: skip
        return f"{text} {self.unit}" if self.unit else text


_KEYS = {"type", "lower", "upper", "mutable", "direction", "cost", "scale", "categories", "unit",
         "precision", "allowed", "integer"}  # fmt: skip


def _feature(name: str, raw: Mapping[str, Any]) -> Feature:
    """Check one ``[features.<name>]`` table and build the :class:`Feature`."""
    where = f"feature {name!r}"
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{where}: expected a table, got {type(raw).__name__}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise SchemaError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(_KEYS)}")
    kind = raw.get("type", "continuous")
    if kind == "numeric":
        kind = "integer" if raw.get("integer", False) is True else "continuous"
    elif "integer" in raw:
        raise SchemaError(f"{where}: integer = true only applies to type = 'numeric'")
    if kind not in TYPES:
        raise SchemaError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    direction = raw.get("direction", "any")
    if direction not in DIRECTIONS:
        raise SchemaError(f"{where}: direction must be one of {DIRECTIONS}, got {direction!r}")
    mutable = raw.get("mutable", True)
    if not isinstance(mutable, bool):
        raise SchemaError(f"{where}: mutable must be true or false, got {mutable!r}")
    numbers: dict[str, float] = {}
    for key, default in (("lower", -math.inf), ("upper", math.inf), ("cost", 1.0), ("scale", 1.0)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise SchemaError(f"{where}: {key} must be a number, got {value!r}")
        numbers[key] = float(value)
    for key in ("cost", "scale"):
        if not (0 < numbers[key] < math.inf):
            raise SchemaError(f"{where}: {key} must be a finite number > 0, got {numbers[key]}")
    lower, upper = numbers["lower"], numbers["upper"]
    categories: tuple[str, ...] = ()
    if kind == "categorical":
        cats = raw.get("categories")
        if not isinstance(cats, Sequence) or isinstance(cats, str) or len(cats) < 2:
            raise SchemaError(f"{where}: a categorical needs a list of >= 2 categories")
        categories = tuple(str(c) for c in cats)
        if len(set(categories)) != len(categories):
            raise SchemaError(f"{where}: categories must be distinct, got {list(categories)}")
        if direction != "any":
            raise SchemaError(f"{where}: a categorical has no direction; use mutable = false")
        if "lower" in raw or "upper" in raw:
            raise SchemaError(f"{where}: a categorical has no bounds (its columns are 0/1)")
        lower, upper = 0.0, 1.0
    elif "categories" in raw:
        raise SchemaError(f"{where}: categories only apply to type = 'categorical'")
    if kind == "binary":
        lower, upper = max(lower, 0.0), min(upper, 1.0)
    if kind in ("integer", "binary"):
        lower, upper = math.ceil(lower), math.floor(upper)
    if not lower <= upper:
        raise SchemaError(f"{where}: lower ({lower}) must be <= upper ({upper})")
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        raise SchemaError(f"{where}: unit must be a string, got {unit!r}")
    precision = raw.get("precision")
    if precision is not None and (isinstance(precision, bool) or not isinstance(precision, int)
                                  or not 0 <= precision <= 12):  # fmt: skip
        raise SchemaError(f"{where}: precision must be a whole number of decimals in [0, 12], "
                          f"got {precision!r}")  # fmt: skip
    allowed: tuple[str, ...] = ()
    if "allowed" in raw:
        if kind != "categorical":
            raise SchemaError(f"{where}: allowed only applies to type = 'categorical'")
        given = raw["allowed"]
        if not isinstance(given, Sequence) or isinstance(given, str):
            raise SchemaError(f"{where}: allowed must be a list of categories, got {given!r}")
        allowed = tuple(str(c) for c in given)
        strangers = [c for c in allowed if c not in categories]
        if strangers:
            raise SchemaError(f"{where}: allowed categories {strangers} are not among its "
                              f"categories {list(categories)}")  # fmt: skip
    return Feature(name, kind, float(lower), float(upper), mutable, direction,
                   numbers["cost"], numbers["scale"], categories, unit,
                   0 if kind in ("integer", "binary") else precision, allowed)  # fmt: skip


@dataclass(frozen=True)
class Schema:
    """An ordered list of features and the column layout of the model input they imply.

    ``label`` names the label column of a data file; ``classes`` names the classes (index
    order). Per-column arrays (bounds, mask, direction, types) are derived once.
    """

    features: tuple[Feature, ...]
    name: str = "schema"
    label: str = "label"
    classes: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.features:
            raise SchemaError("a schema needs at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise SchemaError(f"feature names must be distinct, got {names}")

    # -- layout -----------------------------------------------------------------------------
    @cached_property
    def slices(self) -> list[slice]:
        """The columns of each feature, in order."""
        out, start = [], 0
        for f in self.features:
            out.append(slice(start, start + f.width))
            start += f.width
        return out

    @property
    def n_columns(self) -> int:
        """Width of the model input."""
        return self.slices[-1].stop

    @property
    def columns(self) -> list[str]:
        """Every column name, in model-input order."""
        return [c for f in self.features for c in f.columns]

    def feature(self, name: str) -> Feature:
        """The feature called ``name`` (``KeyError`` listing the known ones otherwise)."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"no feature {name!r}; the schema has {[f.name for f in self.features]}")

    def _per_column(self, fn: Any) -> np.ndarray:
        return np.concatenate([np.full(f.width, fn(f), dtype=np.float64) for f in self.features])

    @cached_property
    def lower(self) -> np.ndarray:
        """Per-column lower bounds."""
        return self._per_column(lambda f: f.lower)

    @cached_property
    def upper(self) -> np.ndarray:
        """Per-column upper bounds."""
        return self._per_column(lambda f: f.upper)

    @cached_property
    def mask(self) -> np.ndarray:
        """1 where a column may change, 0 for immutable features."""
        return self._per_column(lambda f: 1.0 if f.mutable else 0.0)

    @cached_property
    def direction(self) -> np.ndarray:
        """+1 (only up), -1 (only down) or 0 (either way) per column. The one-hot column of a
        category outside a categorical's ``allowed`` list may only go down (be left)."""
        out = self._per_column(lambda f: {"any": 0.0, "up": 1.0, "down": -1.0}[f.direction])
        for f, s in zip(self.features, self.slices, strict=True):
            if f.allowed:
                out[s] = [0.0 if c in f.allowed else -1.0 for c in f.categories]
        return out

    @cached_property
    def integer(self) -> np.ndarray:
        """True for the columns of integer features (binary ones included)."""
        return self._per_column(lambda f: f.type in ("integer", "binary")).astype(bool)

    @cached_property
    def groups(self) -> list[np.ndarray]:
        """Column indices of each categorical feature's one-hot block."""
        return [np.arange(s.start, s.stop) for f, s in zip(self.features, self.slices,
                strict=True) if f.type == "categorical"]  # fmt: skip

    @cached_property
    def feature_index(self) -> np.ndarray:
        """For each column, the index of the feature it belongs to."""
        return np.concatenate([np.full(f.width, i) for i, f in enumerate(self.features)])

    def weights(self, units: str = "cost", p: float = 1.0) -> np.ndarray:
        """Per-column weights ``w`` so that ``‖w ⊙ δ‖_p`` is the distance in ``units``.

        ``cost``: cost per unit; ``std``: 1 / scale; ``raw``: 1. A category switch changes
        two one-hot columns by 1, so their weight is divided by ``2^(1/p)``: a switch then
        costs exactly the feature's cost (or 1 / scale, or 1) under L1, L2 and L∞ alike.
        """
        if units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, got {units!r}")
        share = 1.0 if p in (0.0, math.inf) else 2.0 ** (1.0 / p)
        out = []
        for f in self.features:
            base = {"cost": f.cost, "std": 1.0 / f.scale, "raw": 1.0}[units]
            out.append(np.full(f.width, base / share if f.type == "categorical" else base))
        return np.concatenate(out)

    # -- values -----------------------------------------------------------------------------
    def describe(self, row: np.ndarray) -> dict[str, Any]:
        """One encoded row as ``{feature: raw value}`` (a category name for categoricals,
        numbers rounded as :meth:`Feature.value` shows them)."""
        out: dict[str, Any] = {}
        for f, s in zip(self.features, self.slices, strict=True):
            if f.type == "categorical":
                block = row[s]
                out[f.name] = f.categories[int(np.argmax(block))] if block.max() > 0.5 else None
            else:
                out[f.name] = f.value(row[s][0])
        return out


def parse_schema(raw: Mapping[str, Any], source: str = "") -> Schema:
    """Build a :class:`Schema` from its TOML content (as nested mappings)."""
    allowed = {"name", "label", "classes", "features"}
    unknown = set(raw) - allowed
    if unknown:
        raise SchemaError(f"schema: unknown keys {sorted(unknown)}; expected {sorted(allowed)}")
    features = raw.get("features")
    if not isinstance(features, Mapping) or not features:
        raise SchemaError("schema: needs a [features.<name>] table per feature")
    classes = raw.get("classes", [])
    if not isinstance(classes, Sequence) or isinstance(classes, str):
        raise SchemaError(f"schema: classes must be a list of names, got {classes!r}")
    return Schema(
        features=tuple(_feature(str(name), spec) for name, spec in features.items()),
        name=str(raw.get("name", Path(source).stem if source else "schema")),
        label=str(raw.get("label", "label")),
        classes=tuple(str(c) for c in classes),
        source=source,
    )


def load_schema(spec: str | Path | Mapping[str, Any] | Schema) -> Schema:
    """A schema from a built-in name (``fraud``), a TOML file path or a mapping."""
    if isinstance(spec, Schema):
        return spec
    if isinstance(spec, Mapping):
        return parse_schema(spec, source="inline")
    text_name = str(spec)
    if text_name in BUILTIN:
        text = resources.files("mmargin_tabular").joinpath(f"schemas/{text_name}.toml")
        return parse_schema(tomllib.loads(text.read_text(encoding="utf-8")), source=text_name)
    path = Path(text_name)
    if not path.is_file():
        raise FileNotFoundError(
            f"schema {text_name!r}: not a built-in schema ({', '.join(BUILTIN)}) and no such file"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"schema {path}: not valid TOML: {exc}") from None
    return parse_schema(raw, source=str(path))
