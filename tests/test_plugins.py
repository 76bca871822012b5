"""The plugin host: entry-point discovery, loud failures, registries, a throwaway plugin."""

from __future__ import annotations

import numpy as np
import pluggy
import pytest

import mmargin
from mmargin import plugins
from mmargin.errors import PluginError
from mmargin.hookspecs import hookimpl


def test_builtin_plugins_load_through_entry_points() -> None:
    pm = plugins.manager()
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"core", "image"} <= names  # the entry-point names from pyproject files
    dists = pm.list_plugin_distinfo()
    assert {d.project_name for _, d in dists} >= {"mmargin", "mmargin-image"}
    reg = plugins.registries()
    assert {"l0", "l1", "l2", "linf"} <= set(reg["distances"])
    assert reg["spaces"]["image"].plugin == "image"
    assert reg["datasets"]["mnist"].plugin == "image"


def test_a_misspelled_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def mmargin_register_spacez(self, register: object) -> None:  # misspelled
            pass

    with (
        pytest.raises(pluggy.PluginValidationError, match="mmargin_register_spacez"),
        plugins.registered(Typo(), name="typo"),
    ):
        pass
    assert "typo" not in {n for n, _ in plugins.manager().list_name_plugin()}


def test_duplicate_names_are_an_error_naming_both_plugins() -> None:
    class Dup:
        @hookimpl
        def mmargin_register_distances(self, register: object) -> None:
            register("l2", lambda: None, help="a second l2")  # type: ignore[operator]

    with (
        plugins.registered(Dup(), name="dup"),
        pytest.raises(PluginError, match="'core' and by plugin 'dup'"),
    ):
        plugins.registries()
    assert plugins.lookup("distances", "l2").plugin == "core"


def test_a_throwaway_plugin_can_add_a_dataset_and_is_removed_after() -> None:
    from mmargin.data import Dataset

    class Extra:
        @hookimpl
        def mmargin_register_datasets(self, register: object) -> None:
            def tiny() -> Dataset:
                return Dataset(np.zeros((2, 3), np.float32), np.zeros(2, np.int64), ["a", "b"])

            register("tiny", tiny, help="two zeros")  # type: ignore[operator]

    with plugins.registered(Extra(), name="extra"):
        assert len(plugins.lookup("datasets", "tiny").factory()) == 2
        assert ("extra", "dataset", "tiny", "two zeros") in plugins.describe()
    with pytest.raises(KeyError, match="unknown dataset 'tiny'; installed:"):
        plugins.lookup("datasets", "tiny")


def test_disable_plugins_env_blocks_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMARGIN_DISABLE_PLUGINS", "image")
    monkeypatch.setattr(plugins, "_pm", None)
    monkeypatch.setattr(plugins, "_registries", None)
    assert "image" not in plugins.registries()["spaces"]
    assert "box" in plugins.registries()["spaces"]
    monkeypatch.setattr(plugins, "_pm", None)
    monkeypatch.setattr(plugins, "_registries", None)


def test_evaluate_api_and_frame() -> None:
    import torch

    from mmargin.testing import toy_linear

    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    labels = toy_linear()(x).argmax(1)
    results = mmargin.evaluate(toy_linear(), x, labels, "linf", budget=200)
    assert [r.status.value for r in results] == ["flipped"] * 5
    frame = mmargin.to_frame(results)
    assert list(frame["margin"]) == [r.margin for r in results]
    assert {"sample", "status", "queries", "lower_bound"} <= set(frame.columns)
    # the core's exact hook solves linear models: lower bound = margin
    assert all(r.exact for r in results)


def test_every_hook_is_typed_and_says_who_calls_it() -> None:
    import inspect

    from mmargin import hookspecs

    specs = [f for name, f in vars(hookspecs).items() if name.startswith("mmargin_")]
    assert len(specs) >= 9
    for spec in specs:
        doc = inspect.getdoc(spec) or ""
        assert "Called by" in doc, spec.__name__
        params = inspect.signature(spec).parameters.values()
        assert all(p.annotation not in (inspect.Parameter.empty, "Any") for p in params), spec
        assert inspect.signature(spec).return_annotation is not inspect.Signature.empty


def test_models_are_registered_by_the_plugins_that_ship_them() -> None:
    models = plugins.registries()["models"]
    expected = {"toy_linear": "core", "mnist_cnn": "image", "digits_mlp": "image",
                "mr_cnn": "text", "fraud_gbm": "tabular", "digits_kws": "audio"}  # fmt: skip
    assert {name: models[name].plugin for name in expected} == expected
    assert ("image", "model", "mnist_cnn") in {row[:3] for row in plugins.describe()}
    model = plugins.lookup("models", "toy_linear").factory()
    assert model.weight.shape == (3, 4)
