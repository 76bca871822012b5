"""What the audio plugin adds to a run: per-clip figures, and WAV files after it.

:func:`clip_report` backs the ``mmargin_sample_report`` hook. For every changed clip it
gives the perturbation in dB (see :mod:`mmargin_audio.measures`), re-classifies the clip
after a 16-bit WAV round trip (:func:`pcm16_check`) and measures the quietest white noise
that flips it (the random-noise baseline). Flips are decided by the run's goal, and every
model pass goes through the counted adapter the engine hands over, so it is charged to the
sample's budget; when that budget runs out the figures that need passes are left out and
``extras["report_skipped"]`` says which.

:func:`write_audio_artifacts` backs the ``mmargin_write_artifacts`` hook.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from mmargin.plugin import (
    PCM16,
    BudgetExhausted,
    Goal,
    Untargeted,
    check_saved,
    noise_margin,
    saved_codes,
)
from mmargin_audio import measures
from mmargin_audio.noise import add_noise, l2
from mmargin_audio.wav import PCM16_STEP, pcm16_roundtrip, write_pcm16

if TYPE_CHECKING:
    from mmargin.plugin import Dataset, SampleResult
    from mmargin_audio.space import WaveformSpace

PCM16_SCALES = (1.0, 1.05, 1.1, 1.2, 1.4, 2.0, 4.0, 8.0)
"""Scales of δ tried, in order, until a flip survives the 16-bit round trip."""


@torch.no_grad()
def clip_report(
    space: WaveformSpace, model: Any, x: Tensor, x_adv: Tensor, labels: Tensor, goal: Goal,
    distance: Any = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Per clip: dB figures of δ, the 16-bit WAV round trip and the noise baseline.

    Clips the search did not change (not flipped, misclassified) get ``{}``. ``model`` is
    the engine's counted adapter: the round trip costs one to a few passes, the baseline up
    to ``space.noise.budget``. With ``space.roundtrip`` and a ``distance``, the flip is also
    checked as the 16-bit WAV the run writes, and repaired to the smallest 16-bit flip
    (``space.saved == "repair"``; the ``saved_*`` extras of
    :func:`mmargin.plugin.check_saved`)."""
    delta = x_adv - x
    changed = (delta.flatten(1).abs().amax(dim=1) > 0).nonzero().squeeze(1)
    out: list[dict[str, Any]] = [{} for _ in range(x.shape[0])]
    if changed.numel() == 0:
        return out
    xc, ac, yc = x[changed], x_adv[changed], labels[changed]
    xn, dn = xc.cpu().numpy(), (ac - xc).cpu().numpy()
    figures: dict[str, Any] = {
        "peak_x": measures.peak(xn),
        "peak_delta": measures.peak(dn),
        "db_x": measures.db_x(xn, dn),
        "snr_db": measures.snr_db(xn, dn),
        "dbfs": measures.dbfs(dn),
        "pcm16_steps": measures.pcm16_steps(dn),
    }
    skipped: list[str] = []
    saved: list[dict[str, Any]] = [{} for _ in range(xc.shape[0])]
    if space.roundtrip and distance is not None and space.saved != "off":
        saved = check_saved(model, goal, distance, xc, ac, yc, PCM16,
                            repair=space.saved == "repair")  # fmt: skip
    try:
        if space.roundtrip:
            figures.update(pcm16_check(space, model, xc, ac, yc, goal))
            figures["pcm16_db_x"] = figures["db_x"] + 20 * np.log10(figures["pcm16_scale"])
        if space.noise is not None:
            figures.update(_noise_figures(space, model, xc, yc, goal, xn))
            figures["fragility_db"] = figures["snr_db"] - figures["noise_snr_db"]
    except BudgetExhausted:
        skipped.append("pcm16 round trip" if "pcm16_label" not in figures else "noise baseline")
    for row, i in enumerate(changed.tolist()):
        extras = {**{k: _plain(v[row]) for k, v in figures.items()}, **saved[row]}
        extras["below_pcm16_step"] = bool(figures["peak_delta"][row] < PCM16_STEP)
        extras["sample_rate"] = int(space.sample_rate)  # the rate the model heard the clip at
        if skipped:
            extras["report_skipped"] = f"the sample's budget ran out before the {skipped[0]}"
        out[i] = extras
    return out


def _noise_figures(
    space: WaveformSpace, model: Any, x: Tensor, labels: Tensor, goal: Goal, xn: np.ndarray
) -> dict[str, np.ndarray]:
    """The quietest flipping white noise per clip: its SNR and dB, and the passes spent."""
    assert space.noise is not None
    found = noise_margin(model, space, goal, x, labels, goal.targets_for(labels), measure=l2,
                         config=space.noise, apply=add_noise)  # fmt: skip
    noise = found.delta.cpu().numpy()
    ok = found.found.cpu().numpy()
    return {
        "noise_snr_db": np.where(ok, measures.snr_db(xn, noise), np.nan),
        "noise_db_x": np.where(ok, measures.db_x(xn, noise), np.nan),
        "noise_queries": found.queries.cpu().numpy(),
    }


@torch.no_grad()
def pcm16_check(
    space: WaveformSpace, model: Any, x: Tensor, x_adv: Tensor, labels: Tensor,
    goal: Goal | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Re-classify ``x_adv`` after a 16-bit WAV round trip; where the flip is lost, the
    smallest scale t of :data:`PCM16_SCALES` at which ``x + t·δ`` keeps it (``inf``: none).

    A minimal flip sits on the decision boundary, so rounding every sample by up to half
    a step can undo it; ``pcm16_scale`` says how much louder it must be to survive. Flips
    are judged by ``goal`` (default: untargeted), the same rule as the search's.
    """
    rule = goal if goal is not None else Untargeted()
    targets = rule.targets_for(labels)

    def flips(waves: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        back = np.stack([pcm16_roundtrip(w, space.sample_rate) for w in waves.cpu().numpy()])
        scores = model(torch.as_tensor(back, dtype=x.dtype, device=x.device))
        lab = labels if rows is None else labels[rows]
        tgt = None if targets is None else (targets if rows is None else targets[rows])
        return rule.is_adversarial(scores, lab, tgt), rule.decide(scores)

    flipped, decided = flips(x_adv)
    scale = torch.where(flipped, 1.0, math.inf).to(torch.float64)
    for t in PCM16_SCALES[1:]:
        todo = torch.isinf(scale).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        louder = (x[todo] + t * (x_adv[todo] - x[todo])).clamp(-1.0, 1.0)
        kept, _ = flips(louder, todo)
        scale[todo[kept]] = t
    return {
        "pcm16_label": decided.cpu().numpy(),
        "pcm16_flipped": flipped.cpu().numpy(),
        "pcm16_scale": scale.cpu().numpy(),
    }


def write_audio_artifacts(
    space: WaveformSpace, out: Path, results: Sequence[SampleResult], dataset: Dataset
) -> Path:
    """Write ``out/audio/``: per flipped clip ``<id>.clean.wav``, ``<id>.adv.wav`` (the
    16-bit adversarial whose flip the report verified as saved: read back, it flips; a clip
    without one gets ``<id>.not-adversarial.wav``, the plain 16-bit rounding) and
    ``<id>.delta.wav`` (δ amplified to a peak of 0.5 so it can be heard; the gain is in
    the index; only with ``space.write_wavs``), ``index.json`` and ``summary.json``
    (medians, round-trip survival, noise baseline, and what the loader changed:
    resampling, mix-down, skipped files). Returns the folder.
    """
    folder = Path(out) / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    rate = int(dataset.meta.get("sample_rate", space.sample_rate))
    position = {str(s): i for i, s in enumerate(dataset.ids)}
    index = []
    for r in results:
        if r.status.value != "flipped" or r.adversarial is None or r.sample not in position:
            continue
        clean = np.asarray(dataset.x[position[r.sample]], dtype=np.float32)
        adv = np.asarray(r.adversarial, dtype=np.float32).reshape(clean.shape)
        entry: dict[str, Any] = {
            "sample": r.sample,
            "label": r.label,
            "adv_label": r.adv_label,
            **dict(r.extras),
        }
        if space.write_wavs:
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", r.sample)
            codes = saved_codes(clean, adv, r.extras, PCM16)
            kind = "adv" if codes is not None else "not-adversarial"
            if codes is not None:  # the 16-bit version whose flip the report verified
                adv = PCM16.values(codes)
            peak = float(np.abs(adv - clean).max())
            gain = 0.5 / peak if peak > 0 else 1.0
            waves = (("clean", clean), (kind, adv), ("delta", (adv - clean) * gain))
            for name, wave in waves:
                write_pcm16(folder / f"{stem}.{name}.wav", wave, rate)
            entry.update(
                files=[f"{stem}.{name}.wav" for name, _ in waves],
                adversarial=codes is not None,
                delta_gain_db=20 * math.log10(gain),
            )
        index.append(entry)
    (folder / "index.json").write_text(json.dumps(_json(index), indent=1) + "\n")
    summary = audio_summary(index)
    summary["sample_rate"] = rate
    if rate != space.sample_rate:
        summary["warning"] = (
            f"the space assumes {space.sample_rate} Hz but the data is at "
            f"{rate} Hz: band and window are off by that ratio"
        )
    summary["data"] = dict(dataset.meta)
    (folder / "summary.json").write_text(json.dumps(_json(summary), indent=2) + "\n")
    return folder


def audio_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians and rates over the per-clip extras of flipped clips."""

    def median(key: str) -> float:
        values = np.array([r[key] for r in rows if isinstance(r.get(key), (int, float))], float)
        values = values[~np.isnan(values)]
        return float(np.median(values)) if values.size else math.nan

    def rate(key: str) -> float:
        values = [bool(r[key]) for r in rows if key in r]
        return float(np.mean(values)) if values else math.nan

    return {
        "flipped": len(rows),
        **{
            f"median_{k}": median(k)
            for k in (
                "db_x",
                "snr_db",
                "dbfs",
                "pcm16_steps",
                "pcm16_db_x",
                "noise_snr_db",
                "noise_db_x",
                "fragility_db",
            )
        },
        "pcm16_flip_survives": rate("pcm16_flipped"),
        "below_pcm16_step": rate("below_pcm16_step"),
        "noise_found": float(
            np.mean([math.isfinite(r.get("noise_snr_db", math.nan)) for r in rows])
        )
        if rows
        else math.nan,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return float(value)


def _json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, np.generic):
        return _json(value.item())
    return value
