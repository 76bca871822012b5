"""The text benchmark's peer: a TextAttack attack over an mmargin word space, reported as
mmargin result records (bench-only code: it used to be ``mmargin_text.baseline``).

The attack walks *the same candidates* as mmargin's search: its transformation is
:func:`~mmargin_text.textattack_bridge.swap_class` over the word space's problem for each
text, and a pre-transformation constraint limits it to the problem's positions. Its query
count is TextAttack's own (``num_queries``: every text it scores, the clean text
included); the texts that reach the model are also measured by mmargin's one pass counter
(``extras["measured_passes"]``: TextAttack's cache can make the two differ). Every
adversarial text it returns is re-scored by mmargin before it is reported as a flip (that
verification is not added to either count).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmargin.engine.counting import CountingAdapter
from mmargin.results import SampleResult, Status, result_record
from mmargin_text.offline import import_textattack
from mmargin_text.textattack_bridge import swap_class


def _classes() -> tuple[type, type]:
    import_textattack()
    from textattack.constraints import PreTransformationConstraint
    from textattack.models.wrappers import ModelWrapper

    class Positions(PreTransformationConstraint):
        """Only the positions the mmargin problem may edit."""

        def __init__(self, swap: Any) -> None:
            self.swap = swap

        def _get_modifiable_indices(self, current_text: Any) -> set[int]:
            return set(self.swap.problem.positions()) if self.swap.problem else set()

    class Wrapper(ModelWrapper):
        """An mmargin text adapter as a TextAttack model (logits as numpy)."""

        def __init__(self, adapter: Any) -> None:
            self.model = adapter

        def __call__(self, texts: list[str]) -> np.ndarray:
            return self.model(list(texts)).detach().cpu().numpy()

    return Positions, Wrapper


def textattack_attack(
    adapter: Any,
    space: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    ids: Sequence[str] | None = None,
    search: Any = None,
    budget: int = 1000,
    batch_size: int = 128,
    constraints: Sequence[Any] = (),
) -> list[SampleResult]:
    """Attack every text with ``search`` (default ``GreedyWordSwapWIR("unk")``) over the
    candidates of ``space``, under TextAttack ``constraints`` besides the space's own; one
    :class:`SampleResult` per text, as mmargin's own."""
    import_textattack()
    from textattack import Attack
    from textattack.attack_results import FailedAttackResult, SkippedAttackResult
    from textattack.constraints.pre_transformation import RepeatModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR

    positions_cls, wrapper_cls = _classes()
    swap = swap_class()()
    ta_logger = logging.getLogger("textattack")
    level = ta_logger.level
    with warnings.catch_warnings():  # TextAttack 0.3.11 calls the deprecated Logger.warn
        warnings.filterwarnings("ignore", "The 'warn' method is deprecated", DeprecationWarning)
        ta_logger.setLevel(logging.ERROR)  # "unknown if model ... compatible": it is
        counted = CountingAdapter(adapter)
        goal = UntargetedClassification(
            wrapper_cls(counted), query_budget=budget, model_batch_size=batch_size
        )
        ta_logger.setLevel(level)
    search = search or GreedyWordSwapWIR(wir_method="unk")
    attack = Attack(goal, [*constraints, RepeatModification(), positions_cls(swap)], swap, search)
    name = f"textattack:{type(search).__name__}"
    if hasattr(search, "wir_method"):
        name += f"({search.wir_method})"
    out = []
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        sample = str(ids[i]) if ids is not None else str(i)
        started = time.perf_counter()
        base: dict[str, Any] = dict(
            sample=sample,
            modality=space.modality,
            space=space.name,
            distance="word-edits",
            label=int(label),
            strategy=name,
        )
        problem = space.check([text])[0]
        if problem is not None:
            out.append(_record(base, Status.ERROR, message=problem))
            continue
        swap.problem = space.problem(adapter, text)
        attack.clear_cache()
        counted.counter.reset()
        result = attack.attack(text, int(label))
        seconds = time.perf_counter() - started
        queries = int(result.perturbed_result.num_queries)
        measured = {"measured_passes": counted.passes}
        pred = int(np.argmax(result.original_result.raw_output))
        if isinstance(result, SkippedAttackResult):
            out.append(
                _record(
                    base,
                    Status.MISCLASSIFIED,
                    pred_label=pred,
                    adv_label=pred,
                    margin=0.0,
                    lower_bound=0.0,
                    verified=True,
                    queries=queries,
                    seconds=seconds,
                    adversarial=text,
                    extras=measured,
                )
            )
            continue
        adversarial = result.perturbed_result.attacked_text.text
        with torch.no_grad():
            scores = adapter([adversarial])
        adv_label = int(scores.argmax(dim=1)[0])
        if isinstance(result, FailedAttackResult) or adv_label == int(label):
            out.append(
                _record(
                    base,
                    Status.NOT_FLIPPED,
                    pred_label=pred,
                    margin=math.inf,
                    queries=queries,
                    seconds=seconds,
                    message="no flip found",
                    extras=measured,
                )
            )
            continue
        original = result.original_result.attacked_text
        changed = sorted(original.all_words_diff(result.perturbed_result.attacked_text))
        words = result.perturbed_result.attacked_text.words
        seen = swap.problem.seen
        extras = {
            "adversarial_text": adversarial,
            "original_text": text,
            "edits": [
                {
                    "position": p,
                    "value": words[p],
                    "cost": 1.0,
                    "text": f"{original.words[p]} -> {words[p]}",
                }
                for p in changed
            ],
            "words_changed_pct": 100.0 * len(changed) / max(seen, 1),
            **measured,
        }
        out.append(
            _record(
                base,
                Status.FLIPPED,
                pred_label=pred,
                adv_label=adv_label,
                margin=float(len(changed)),
                verified=True,
                queries=queries,
                seconds=seconds,
                relative_margin=len(changed) / max(seen, 1),
                extras=extras,
                adversarial=adversarial,
            )
        )
    return out


def _record(base: dict[str, Any], status: Status, **fields: Any) -> SampleResult:
    return result_record(status=status, **{**base, **fields})
