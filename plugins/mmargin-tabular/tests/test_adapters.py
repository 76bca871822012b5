"""The scikit-learn adapter: the torch twins score exactly like scikit-learn, black boxes
pass through, and unusable models fail with a message that says what to do."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.svm import SVC, LinearSVC

from mmargin.plugin import CallableAdapter
from mmargin.testing import plugin_manager as manager
from mmargin_tabular.adapters import SklearnAdapter, extract_net


def _data(classes: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=300, n_features=6, n_informative=4,
                               n_classes=classes, random_state=0)  # fmt: skip
    return x * 3 + 1, y


def _fit(model, classes: int):
    x, y = _data(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


TWINS = [
    ("logreg", lambda: LogisticRegression(max_iter=500), 2),
    ("logreg-multi", lambda: LogisticRegression(max_iter=500), 3),
    ("scaled-logreg", lambda: make_pipeline(StandardScaler(), LogisticRegression()), 3),
    ("minmax-maxabs", lambda: make_pipeline(MinMaxScaler(), MaxAbsScaler(),
                                            LogisticRegression()), 2),
    ("robust-sgd-log", lambda: make_pipeline(RobustScaler(), SGDClassifier(loss="log_loss",
                                             random_state=0)), 3),
    ("mlp-relu", lambda: make_pipeline(StandardScaler(), MLPClassifier((8,), max_iter=200,
                                       random_state=0)), 2),
    ("mlp-tanh-multi", lambda: MLPClassifier((6, 5), activation="tanh", max_iter=200,
                                             random_state=0), 3),
]  # fmt: skip


@pytest.mark.parametrize(("name", "build", "classes"), TWINS, ids=[t[0] for t in TWINS])
def test_torch_twin_equals_sklearn(name: str, build, classes: int) -> None:
    model = _fit(build(), classes)
    adapter = SklearnAdapter(model)
    assert adapter.differentiable, name
    x = torch.as_tensor(_data(classes)[0][:50], dtype=torch.float32)
    twin = adapter(x).double()
    reference = torch.as_tensor(np.log(model.predict_proba(x.double().numpy())))
    assert torch.allclose(twin, reference, atol=2e-6, rtol=1e-5)
    xr = x.clone().requires_grad_(True)
    adapter(xr)[:, 0].sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0


@pytest.mark.parametrize("classes", [2, 3])
def test_decision_function_twin(classes: int) -> None:
    model = _fit(LinearSVC(random_state=0), classes)
    adapter = SklearnAdapter(model, scores="decision")
    assert adapter.differentiable
    x = torch.as_tensor(_data(classes)[0][:40], dtype=torch.float32)
    d = model.decision_function(x.double().numpy())
    want = np.stack([-d, d], 1) if d.ndim == 1 else d
    assert np.allclose(adapter(x).numpy(), want, atol=1e-4)
    assert np.array_equal(adapter(x).argmax(1).numpy(), model.predict(x.double().numpy()))


def test_black_box_and_gradients_never() -> None:
    model = _fit(GradientBoostingClassifier(n_estimators=10, random_state=0), 2)
    adapter = SklearnAdapter(model)
    assert not adapter.differentiable and adapter.net is None
    x = torch.as_tensor(_data(2)[0][:20], dtype=torch.float32)
    p = model.predict_proba(x.double().numpy())
    assert np.allclose(np.exp(adapter(x).double().numpy()), p, atol=1e-6)
    lr = SklearnAdapter(_fit(LogisticRegression(), 2), gradients="never")
    assert not lr.differentiable and lr.net is not None  # exact solvers still see the weights


def test_models_fitted_on_frames_get_named_columns() -> None:
    import pandas as pd

    x, y = _data(2)
    frame = pd.DataFrame(x, columns=[f"c{i}" for i in range(6)])
    model = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(frame, y)
    out = SklearnAdapter(model)(torch.as_tensor(x[:5], dtype=torch.float32))  # no warning
    assert out.shape == (5, 2)


def test_unusable_models_fail_clearly() -> None:
    svc = _fit(SVC(), 2)
    with pytest.raises(ValueError, match=r"SVC has no predict_proba.*scores = 'decision'"):
        SklearnAdapter(svc)
    with pytest.raises(ValueError, match="not a fitted classifier"):
        SklearnAdapter(LogisticRegression())
    adapter = SklearnAdapter(_fit(LogisticRegression(), 2))
    with pytest.raises(ValueError, match="expects 6 features, got 4"):
        adapter(torch.zeros(2, 4))


def test_hook_adapts_estimators_and_leaves_callables_alone() -> None:
    hook = manager().hook.mmargin_adapt_model
    model = _fit(LogisticRegression(), 2)
    assert isinstance(hook(model=model, device="cpu", options={}), SklearnAdapter)
    assert isinstance(hook(model=lambda a: a, device="cpu", options={}), CallableAdapter)
    assert extract_net(_fit(GradientBoostingClassifier(n_estimators=3), 2)) is None
