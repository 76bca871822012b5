"""Word splitting (TextAttack-compatible), MR data, user files and the committed model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmargin_text.data import load_mr, load_text_file, mr_sentences
from mmargin_text.models import WEIGHTS_DIR
from mmargin_text.words import TextView, levenshtein, match_case, words


def test_word_split_matches_textattack() -> None:
    from mmargin_text.offline import import_textattack

    import_textattack()
    from textattack.shared.utils import words_from_text

    texts, _ = mr_sentences()
    extra = ["Hello, 'world' -- it's  fine!", "@user *bold* e-mail's ok", "“quoted” café"]
    for text in texts[:1500] + extra:
        assert words(text) == words_from_text(text), text


def test_text_view_keeps_everything_but_the_replaced_words() -> None:
    view = TextView("Hello, 'world' -- it's  fine!")
    assert view.words == ["Hello", "world", "it's", "fine"]
    assert view.replace({1: "there", 3: "great"}) == "Hello, 'there' -- it's  great!"
    assert view.replace({}) == view.text
    assert match_case("good", "Bad") == "Good" and match_case("good", "BAD") == "GOOD"


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [("kitten", "sitting", 3), ("", "abc", 3), ("ab", "ba", 2), ("same", "same", 0)],
)
def test_levenshtein(a: str, b: str, d: int) -> None:
    assert levenshtein(a, b) == d == levenshtein(b, a)


def test_mr_split_is_deterministic_balanced_and_disjoint() -> None:
    train, test = load_mr("train"), load_mr("test")
    assert len(train) == 7250 and len(test) == 1280
    assert not set(train.ids) & set(test.ids)
    assert test.x.dtype == object and isinstance(test.x[0], str)
    assert 0.45 < test.y.mean() < 0.55
    assert list(load_mr("test").ids[:5]) == list(test.ids[:5])


def test_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('text,label\n"good, fine",1\nbad,0\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        '{"text": "ok", "label": "pos", "id": "x1"}\n\n{"text": "", "label": "neg"}\n',
        encoding="utf-8",
    )
    (tmp_path / "c.tsv").write_text("sentence\ty\nhello there\t2\n", encoding="utf-8")
    a = load_text_file(str(tmp_path / "a.csv"))
    assert list(a.x) == ["good, fine", "bad"] and list(a.y) == [1, 0]
    b = load_text_file(str(tmp_path / "b.jsonl"), label_names=["neg", "pos"])
    assert list(b.y) == [1, 0] and b.ids[0] == "x1" and b.x[1] == ""
    c = load_text_file(str(tmp_path / "c.tsv"), text_field="sentence", label_field="y")
    assert list(c.y) == [2]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"text,label\ncaf\xe9,1\n", r"not valid utf-8 \(byte 0xe9 on line 2\)"),
        (b"text,label\nfine,positive\n", "not an integer"),
        (b"words,label\nfine,1\n", "lacks the field 'text'"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, content: bytes, match: str) -> None:
    file = tmp_path / "bad.csv"
    file.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_text_file(str(file))


def test_committed_model_accuracy_and_files(cnn: Any, mr_test: Any) -> None:
    manifest = json.loads((WEIGHTS_DIR / "manifest.json").read_text())
    for name, facts in manifest["files"].items():
        data = (WEIGHTS_DIR / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == facts["sha256"]
        assert len(data) < 5_000_000
    texts = list(mr_test.x)
    pred = torch.cat([cnn(texts[i : i + 256]).argmax(1) for i in range(0, len(texts), 256)])
    accuracy = float((pred.numpy() == mr_test.y).mean())
    assert accuracy == pytest.approx(manifest["test_accuracy"], abs=2e-3)
    assert accuracy > 0.72


def test_scores_do_not_depend_on_batching(cnn: Any, mr_test: Any) -> None:
    texts = [*list(mr_test.x[:12]), "ok", "a"]
    together = cnn(texts)
    alone = torch.cat([cnn([t]) for t in texts])
    np.testing.assert_allclose(together.numpy(), alone.numpy(), atol=1e-5)
