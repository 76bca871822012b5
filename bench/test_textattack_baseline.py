"""The text benchmark's TextAttack peer (``textattack_baseline.py``) walks mmargin's own
candidates and reports verified flips: checked against the model and against the word
space's candidate lists, and against mmargin's proven lower bounds on the same sentences."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

pytest.importorskip("mmargin_text")

_spec = importlib.util.spec_from_file_location(
    "bench_textattack_baseline", Path(__file__).resolve().parent / "textattack_baseline.py"
)
assert _spec is not None and _spec.loader is not None
baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baseline)


@pytest.fixture(scope="module")
def cnn() -> Any:
    """The committed MR CNN behind the text adapter, on one torch thread."""
    import torch

    from mmargin_text.adapters import adapt_text_model
    from mmargin_text.models import mr_cnn

    torch.set_num_threads(1)
    return adapt_text_model(mr_cnn())


def test_greedy_wir_baseline_over_the_same_candidates(cnn: Any) -> None:
    from mmargin.engine import minimal_flip
    from mmargin.engine.spec import SearchSpec
    from mmargin.results import Status
    from mmargin_text.data import load_mr
    from mmargin_text.plugin import word_space
    from mmargin_text.spaces import WordEdits

    mr_test = load_mr("test")
    texts, labels, ids = list(mr_test.x[:10]), list(mr_test.y[:10]), list(mr_test.ids[:10])
    space = word_space(k=15)
    theirs = baseline.textattack_attack(cnn, space, texts, labels, ids, budget=1000)
    ours = minimal_flip(
        cnn,
        space,
        WordEdits(),
        np.array(texts, object),
        np.array(labels),
        ids,
        spec=SearchSpec(budget=1000),
    )
    assert [r.sample for r in theirs] == ids
    assert {r.status for r in theirs} <= {Status.FLIPPED, Status.NOT_FLIPPED, Status.MISCLASSIFIED}
    assert sum(r.status is Status.FLIPPED for r in theirs) >= 4
    for t in theirs:  # the one pass counter saw every text that reached the model; TextAttack's
        # num_queries also counts the texts its cache answered
        assert 1 <= t.extras["measured_passes"] <= t.queries
    for t, o in zip(theirs, ours, strict=True):
        assert (t.status is Status.MISCLASSIFIED) == (o.status is Status.MISCLASSIFIED)
        if t.status is Status.FLIPPED:
            assert t.verified and t.strategy == "textattack:GreedyWordSwapWIR(unk)"
            assert int(cnn([t.adversarial]).argmax()) != t.label
            assert t.margin == len(t.extras["edits"]) and t.queries > 0
            allowed = space.problem(cnn, t.extras["original_text"])
            for e in t.extras["edits"]:  # TextAttack walked mmargin's candidates
                assert e["value"] in {c.value for c in allowed.candidates(e["position"])}
            if o.lower_bound is not None:  # a proven lower bound holds for any search
                assert t.margin >= o.lower_bound
