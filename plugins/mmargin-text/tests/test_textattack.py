"""TextAttack inside mmargin, offline: import, transformations as candidates, constraints as
filters. (The TextAttack search run over the same candidates, the text benchmark's peer, is
tested in ``bench/test_textattack_baseline.py``.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from mmargin_text.offline import import_textattack, stopwords
from mmargin_text.plugin import word_space
from mmargin_text.words import TextView, levenshtein

NO_NETWORK = """
import socket
def refuse(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
import os
from mmargin_text.offline import import_textattack
ta = import_textattack()
import nltk
assert "the" in nltk.corpus.stopwords.words("english")
assert os.environ.get("HF_HOME") is None and os.environ.get("TA_CACHE_DIR") is None
print("ok", ta.__version__ if hasattr(ta, "__version__") else "")
"""


def test_import_is_offline_with_a_fresh_home(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NLTK_DATA", "TA_CACHE_DIR", "HF_HOME", "XDG_CACHE_HOME")
    }
    env.update(HOME=str(tmp_path), PYTHONWARNINGS="error")
    done = subprocess.run(
        [sys.executable, "-c", NO_NETWORK], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
    assert not (tmp_path / ".cache" / "textattack").exists()
    shipped = Path(__file__).resolve().parents[1] / "mmargin_text" / "offline" / "textattack"
    assert sorted(p.name for p in shipped.iterdir()) == ["post_install_check_3"]


def test_transformation_as_candidate_source(cnn: Any) -> None:
    import_textattack()
    from textattack.shared import AttackedText
    from textattack.transformations import WordSwapNeighboringCharacterSwap

    spec = {
        "class": "textattack.transformations:WordSwapNeighboringCharacterSwap",
        "random_one": False,
    }  # every swap, not one at random
    space = word_space(candidates="textattack", transformation=spec, stopwords=False)
    text = "a gripping , beautiful film"
    problem = space.problem(cnn, text)
    mine = {str(e.value) for e in problem.candidates(1)}
    theirs = {
        t.words[1]
        for t in WordSwapNeighboringCharacterSwap(random_one=False)(
            AttackedText(text), indices_to_modify=[1]
        )
    }
    assert mine == theirs and len(mine) > 3


def test_constraints_filter_candidates(cnn: Any) -> None:
    space = word_space(
        k=30,
        stopwords=False,
        constraints=[
            "textattack.constraints.pre_transformation:StopwordModification",
            {
                "class": "textattack.constraints.overlap:LevenshteinEditDistance",
                "max_edit_distance": 4,
            },
        ],
    )
    text = "the acting is terrible but the story is good"
    problem = space.problem(cnn, text)
    view = TextView(text)
    assert problem.positions()
    for p in problem.positions():
        assert view.words[p].lower() not in stopwords()
        for e in problem.candidates(p):
            assert levenshtein(view.words[p], str(e.value)) <= 4
    unfiltered = word_space(k=30, stopwords=False).problem(cnn, text)
    assert sum(map(len, unfiltered.edits_at.values())) > sum(map(len, problem.edits_at.values()))
