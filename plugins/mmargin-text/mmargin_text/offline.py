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
