"""Adversarials that survive saving: the flip re-checked on what a file will hold.

A minimal flip sits on the decision boundary, so rounding it to an 8-bit PNG or a 16-bit
WAV often undoes it. A :class:`SaveFormat` says what a file holds (integer codes
``low..high``, read back as ``code / scale`` in float32, exactly as the loaders read
them). :func:`check_saved` (what the image and audio report hooks call, through the
counted model) re-classifies the adversarial as saved and, when the flip is lost, looks
for the smallest saved adversarial that still flips among ``x + t·δ`` rounded to the
nearest code or away from ``x`` (each candidate one forward pass, tried from the smallest
in the run's distance). Its figures go into the sample's extras:

* ``saved_format`` (``"png8"``, ``"pcm16"``), ``saved_flips`` (the adversarial flips as
  saved, as it is), ``saved_label`` (the class of that saved version);
* ``saved_margin``: the run's distance from ``x`` to the saved adversarial that flips
  (``inf`` when none was found), beside the search's own ``margin``; ``saved_scale`` and
  ``saved_rounding`` say which candidate it is, so :func:`saved_codes` rebuilds its
  codes exactly when the files are written; ``saved_passes``; ``saved_checked`` is
  ``False`` when the sample's budget ran out first.

Files are written only from :func:`saved_codes`; one without a verified flip is never
named an adversarial.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SCALES = (1.0, 1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0, 8.0)
"""Scales t of δ tried, with both roundings, when the saved flip is lost."""
ROUNDINGS = ("nearest", "away")


@dataclass(frozen=True)
class SaveFormat:
    """Integer codes ``low..high`` a file stores, read back as ``code / scale`` (float32)."""

    name: str
    scale: float
    low: int
    high: int

    def codes(self, x: np.ndarray, adv: np.ndarray, t: float = 1.0,
              rounding: str = "nearest") -> np.ndarray:  # fmt: skip
        """Codes of ``x + t·(adv − x)``: rounded to the nearest code, or ``"away"`` from
        ``x`` (up where δ > 0, down where δ < 0; where δ = 0 the clean value's nearest)."""
        x64, adv64 = np.asarray(x, np.float64), np.asarray(adv, np.float64)
        delta = adv64 - x64
        v = (x64 + t * delta) * self.scale
        if rounding == "nearest":
            codes = np.rint(v)
        elif rounding == "away":
            still = np.rint(x64 * self.scale)
            codes = np.where(delta > 0, np.ceil(v), np.where(delta < 0, np.floor(v), still))
        else:
            raise ValueError(f"rounding: expected one of {ROUNDINGS}, got {rounding!r}")
        return np.clip(codes, self.low, self.high).astype(np.int64)

    def values(self, codes: np.ndarray) -> np.ndarray:
        """What a loader reads back from ``codes``: ``float32(code) / float32(scale)``."""
        return np.asarray(codes).astype(np.float32) / np.float32(self.scale)


PNG8 = SaveFormat("png8", 255.0, 0, 255)
"""8-bit images in [0, 1] (PNG, and what the image-folder loader reads)."""
PCM16 = SaveFormat("pcm16", 32768.0, -32768, 32767)
"""16-bit PCM audio in [-1, 1] (WAV; soundfile reads code / 32768)."""


def check_saved(
    model: Any, goal: Any, distance: Any, x: Any, x_adv: Any, labels: Any, fmt: SaveFormat,
    repair: bool = True, scales: Sequence[float] = SCALES,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per row: the flip re-checked as saved in ``fmt`` and, with ``repair``, the smallest
    saved candidate that flips (see the module). ``model`` is the engine's counted adapter:
    each candidate is one pass; a budget that runs out ends the search for that row."""
    import torch

    from mmargin.engine.counting import BudgetExhausted

    targets = goal.targets_for(labels)
    out = []
    for i in range(x.shape[0]):
        xi = x[i].detach().cpu().numpy()
        ai = x_adv[i].detach().cpu().numpy()
        lab = labels[i : i + 1]
        tgt = None if targets is None else targets[i : i + 1]
        row: dict[str, Any] = {"saved_format": fmt.name, "saved_passes": 0}

        def flips(codes: np.ndarray, xi: np.ndarray = xi, lab: Any = lab, tgt: Any = tgt,
                  row: dict[str, Any] = row) -> tuple[bool, int]:  # fmt: skip
            values = torch.as_tensor(fmt.values(codes)[None], dtype=x.dtype, device=x.device)
            row["saved_passes"] += 1
            scores = model(values)
            return bool(goal.is_adversarial(scores, lab, tgt)[0]), int(goal.decide(scores)[0])

        def size(codes: np.ndarray, xi: np.ndarray = xi) -> float:
            delta = torch.as_tensor(fmt.values(codes) - xi, dtype=x.dtype, device=x.device)
            return float(distance.norm(delta[None])[0])

        first = fmt.codes(xi, ai)
        try:
            ok, label = flips(first)
        except BudgetExhausted:
            out.append({**row, "saved_checked": False})
            continue
        row.update(saved_checked=True, saved_flips=ok, saved_label=label)
        found = (1.0, "nearest", first) if ok else None
        if found is None and repair:
            candidates = [(t, r, fmt.codes(xi, ai, t, r)) for t in scales for r in ROUNDINGS]
            candidates = [c for c in candidates if not np.array_equal(c[2], first)]
            seen: list[np.ndarray] = []
            for t, r, codes in sorted(candidates, key=lambda c: size(c[2])):
                if any(np.array_equal(codes, s) for s in seen):
                    continue
                seen.append(codes)
                try:
                    if flips(codes)[0]:
                        found = (t, r, codes)
                        break
                except BudgetExhausted:
                    row["saved_incomplete"] = True
                    break
        if found is None:
            row.update(saved_margin=math.inf, saved_scale=math.inf, saved_rounding=None)
        else:
            row.update(saved_margin=size(found[2]), saved_scale=found[0], saved_rounding=found[1])
        out.append(row)
    return out


def saved_codes(
    x: np.ndarray, adv: np.ndarray, extras: Mapping[str, Any], fmt: SaveFormat
) -> np.ndarray | None:
    """The codes of the saved adversarial :func:`check_saved` verified (``None`` when it
    found none, or did not check): what an artefact writer writes as the adversarial."""
    if not extras.get("saved_checked") or extras.get("saved_format") != fmt.name:
        return None
    scale, rounding = extras.get("saved_scale"), extras.get("saved_rounding")
    if rounding is None or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        return None
    return fmt.codes(x, adv, float(scale), str(rounding))


def describe(results: Sequence[Any]) -> str | None:
    """One line for the CLI: how many flips hold as saved, as they are and after repair,
    with the median margin before and after (``None`` when no flip was checked)."""
    rows = [r for r in results if r.extras.get("saved_checked")]
    if not rows:
        return None
    fmt = rows[0].extras.get("saved_format")
    as_is = sum(bool(r.extras.get("saved_flips")) for r in rows)
    kept = [r for r in rows if _finite(r.extras.get("saved_margin"))]
    line = f"saved as {fmt}: {as_is}/{len(rows)} flips hold as they are, {len(kept)}/{len(rows)}"
    line += " after repair"
    if kept:
        before = float(np.median([r.margin for r in kept]))
        after = float(np.median([float(r.extras["saved_margin"]) for r in kept]))
        line += f" (median margin {before:.4g} -> {after:.4g} saved)"
    unchecked = sum(1 for r in results if r.extras.get("saved_checked") is False)
    return line + (f"; {unchecked} not checked (budget)" if unchecked else "")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
