"""The text gallery view: word edits struck and replaced, everything escaped, and an
embedding-space flip shown through its nearest-token projection with what that is."""

from __future__ import annotations

import numpy as np

from mmargin.plugin import SampleResult, Status
from mmargin_text.render import render_text


def _result(adversarial: object, extras: dict) -> SampleResult:
    return SampleResult(
        sample="s", modality="text", space="word", distance="word-edits", label=1,
        pred_label=1, adv_label=0, margin=1.0, lower_bound=None, verified=True, queries=1,
        seconds=0.0, status=Status.FLIPPED, strategy="test", extras=extras,
        adversarial=adversarial,
    )  # fmt: skip


def test_word_edits_are_marked_and_escaped() -> None:
    original, adversarial = "a <good> film", "a <bad> film"
    page = render_text(_result(adversarial, {"original_text": original,
                                             "adversarial_text": adversarial,
                                             "edits": [{"position": 1}]}))  # fmt: skip
    assert page is not None
    assert "a <del>&lt;good&gt;</del> <ins>&lt;bad&gt;</ins> film" in page
    assert "1 edit(s)" in page and "<good>" not in page


def test_embedding_flips_show_their_projection_and_say_so() -> None:
    extras = {"original_text": "a good film", "projection": "a fine film",
              "token_edits": [{"token": 1, "from": "good", "to": "fine"}],
              "projection_flips": False}  # fmt: skip
    page = render_text(_result(np.zeros((3, 4)), extras))
    assert page is not None
    assert "a <del>good</del> <ins>fine</ins> film" in page
    assert "point in embedding space" in page and "1 token(s) changed; it does not flip" in page
    assert render_text(_result(np.zeros(3), {"original_text": "x"})) is None  # no text to show
