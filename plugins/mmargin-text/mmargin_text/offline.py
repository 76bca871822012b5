"""Offline setup of NLTK and TextAttack: point them at the folders this package ships.

``import textattack`` downloads NLTK corpora on its first run unless ``TA_CACHE_DIR``
holds the marker ``post_install_check_3``; its stopword constraint reads NLTK's stopword
list from ``NLTK_DATA``. :func:`import_textattack` sets both to ``mmargin_text/offline``
before the import, imports ``transformers`` first (TextAttack sets the deprecated
``PYTORCH_TRANSFORMERS_CACHE``, which makes a later ``transformers`` import warn) and
restores the cache variables TextAttack overwrites (``HF_HOME`` ...), so loading other
models is unaffected.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

OFFLINE = Path(__file__).resolve().parent / "offline"
NLTK_DIR = OFFLINE / "nltk_data"
TA_DIR = OFFLINE / "textattack"
_CACHE_VARS = ("TFHUB_CACHE_DIR", "PYTORCH_TRANSFORMERS_CACHE", "HF_HOME", "XDG_CACHE_HOME")


def use_offline_data() -> None:
    """Put the shipped NLTK data first on NLTK's search path (env and, if loaded, nltk)."""
    current = os.environ.get("NLTK_DATA", "")
    parts = [p for p in current.split(os.pathsep) if p]
    if str(NLTK_DIR) not in parts:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(NLTK_DIR), *parts])
    import nltk

    if str(NLTK_DIR) not in nltk.data.path:
        nltk.data.path.insert(0, str(NLTK_DIR))


_LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1",
    "noun.artifact 1", "noun.attribute 1", "noun.body 1", "noun.cognition 1",
    "noun.communication 1", "noun.event 1", "noun.feeling 1", "noun.food 1", "noun.group 1",
    "noun.location 1", "noun.motive 1", "noun.object 1", "noun.person 1",
    "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1",
    "noun.substance 1", "noun.time 1", "verb.body 2", "verb.change 2", "verb.cognition 2",
    "verb.communication 2", "verb.competition 2", "verb.consumption 2", "verb.contact 2",
    "verb.creation 2", "verb.emotion 2", "verb.motion 2", "verb.perception 2",
    "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)  # fmt: skip
"""WordNet 3.0's lexicographer files (``lexnames``): NLTK's reader needs the file and
Debian's ``wordnet-base`` does not ship it."""
SYSTEM_WORDNET = Path("/usr/share/wordnet")
"""Where Debian's ``wordnet-base`` puts the WordNet database."""


def wordnet_home() -> Path:
    """The NLTK data folder mmargin-text copies WordNet into (the model cache's
    ``nltk_data``: ``$MMARGIN_TEXT_CACHE`` or ``~/.cache/mmargin-text``)."""
    from mmargin_text.minilm import cache_dir

    return cache_dir() / "nltk_data"


def ensure_wordnet(source: Path | None = None) -> Path | None:
    """Make ``nltk.corpus.wordnet`` work offline; the folder it reads, or ``None``.

    Uses WordNet already on NLTK's path, else copies (not links: NLTK's reader rejects
    some links) Debian's ``wordnet-base`` files from ``source`` (default
    ``/usr/share/wordnet``) under :func:`wordnet_home` and adds the ``lexnames`` file
    and an empty ``index.sense``.
    """
    use_offline_data()
    import nltk

    home = wordnet_home()
    if str(home) not in nltk.data.path:
        nltk.data.path.append(str(home))
    try:
        return Path(str(nltk.data.find("corpora/wordnet")))
    except LookupError:
        pass
    source = source or SYSTEM_WORDNET
    if not (source / "data.noun").is_file():
        return None
    target = home / "corpora" / "wordnet"
    partial = target.with_name("wordnet.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for file in source.iterdir():
        if file.is_file() and (file.name.startswith(("data.", "index.")) or file.suffix == ".exc"):
            shutil.copyfile(file, partial / file.name)
    lines = [f"{i:02d}\t{n.split()[0]}\t{n.split()[1]}" for i, n in enumerate(_LEXNAMES)]
    (partial / "lexnames").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # NLTK maps sense keys to WordNet 3.0 through index.sense (not in wordnet-base): an
    # empty one leaves synsets, lemmas and POS intact, only sense-key lookups find nothing
    (partial / "index.sense").write_text("", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def stopwords() -> frozenset[str]:
    """NLTK's English stopword list, from the shipped file."""
    text = (NLTK_DIR / "corpora" / "stopwords" / "english").read_text(encoding="utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip())


def _cache_dir() -> Path:
    """A writable copy of the shipped TextAttack cache folder, in the temp directory.

    TextAttack writes a lock file there, and while it imports, ``XDG_CACHE_HOME`` points
    there too (matplotlib, imported by flair, writes its font cache): neither belongs in
    the installed package.
    """
    copy = Path(tempfile.gettempdir()) / "mmargin-text-textattack"
    copy.mkdir(exist_ok=True)
    if not (copy / "post_install_check_3").is_file():
        shutil.copy(TA_DIR / "post_install_check_3", copy / "post_install_check_3")
    return copy


def import_textattack() -> ModuleType:
    """``textattack``, imported without any network access."""
    import sys

    if "textattack" in sys.modules:
        return sys.modules["textattack"]
    use_offline_data()
    import transformers  # noqa: F401 - before textattack: see the module docstring

    saved = {k: os.environ.get(k) for k in _CACHE_VARS}
    previous = os.environ.get("TA_CACHE_DIR")
    os.environ["TA_CACHE_DIR"] = str(_cache_dir())
    try:
        with warnings.catch_warnings():
            # textattack imports jieba, which imports setuptools' deprecated pkg_resources
            # (a warning from setuptools >= 67; the test build needs a recent setuptools)
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            import textattack
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if previous is None:
            os.environ.pop("TA_CACHE_DIR", None)
        else:
            os.environ["TA_CACHE_DIR"] = previous
    logging.getLogger("textattack").setLevel(logging.WARNING)
    return textattack
