"""The waveform perturbation space: additive δ on ``(samples,)`` or ``(channels, samples)``
waveforms in ``[-1, 1]``, optionally restricted to a frequency band and a time window.

The engine searches it like any continuous space (the Lp ball comes from the distance,
``l2`` or ``linf``). ``project`` passes δ through an FFT band mask (an orthogonal
projection onto the band's sinusoids), zeroes it outside the time window and keeps
``x + δ`` inside ``[-1, 1]``. When both restrictions are set, δ is band-filtered then
windowed: strictly inside the window, band-limited up to the spreading the window's edges
cause; the final clamp can likewise add a little out-of-band content where a clip clips.

After verification the runner calls :meth:`WaveformSpace.report`, which gives every
flipped clip its figures in dB (see :mod:`mmargin_audio.measures`), the 16-bit WAV round
trip and the random-noise baseline; after a task run, :meth:`WaveformSpace.write_artifacts`
writes the adversarial clips as WAV files beside the results.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.engine.noise import NoiseConfig, noise_margin
from mmargin.errors import InvalidInputError
from mmargin.goals import Untargeted
from mmargin.spaces import ContinuousSpace
from mmargin_audio import measures
from mmargin_audio.wav import PCM16_STEP, pcm16_roundtrip, write_pcm16

PCM16_SCALES = (1.0, 1.05, 1.1, 1.2, 1.4, 2.0, 4.0, 8.0)
"""Scales of δ tried, in order, until a flip survives the 16-bit round trip."""


@dataclass
class WaveformSpace(ContinuousSpace):
    """Additive waveform perturbations, reported in dB relative to the clip.

    ``band`` = ``(low_hz, high_hz)`` keeps δ inside that frequency band, ``window`` =
    ``(start_s, end_s)`` inside that stretch of time (both need the right
    ``sample_rate``). Clips longer than ``max_seconds`` and silent clips are refused per
    sample with a message. ``roundtrip`` re-classifies every adversarial clip after a 16-bit
    WAV round trip; ``noise`` configures the random white-noise baseline (``None``: off).
    ``write_wavs`` lets :meth:`write_artifacts` write clean, adversarial and perturbation
    WAV files.
    """

    name: str = "waveform"
    modality: str = "audio"
    lower: float | np.ndarray = -1.0
    upper: float | np.ndarray = 1.0
    sample_rate: int = 16000
    band: tuple[float, float] | None = None
    window: tuple[float, float] | None = None
    max_seconds: float = 600.0
    roundtrip: bool = True
    noise: NoiseConfig | None = field(default_factory=NoiseConfig)
    write_wavs: bool = True
    _masks: dict[tuple[str, str, int], tuple[Tensor | None, Tensor | None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive rate in Hz, got {self.sample_rate}")
        if self.band is not None:
            low, high = (float(v) for v in self.band)
            if not 0 <= low < high:
                raise ValueError(
                    f"band: expected [low_hz, high_hz] with 0 <= low < high, got {list(self.band)}"
                )
            self.band = (low, high)
        if self.window is not None:
            start, end = (float(v) for v in self.window)
            if not 0 <= start < end:
                raise ValueError(
                    f"window: expected [start_s, end_s] with 0 <= start < end, "
                    f"got {list(self.window)}"
                )
            self.window = (start, end)

    # -- checks ---------------------------------------------------------------------------
    def check(self, x: np.ndarray) -> list[str | None]:
        """Batch checks of the base space plus, per clip, silence and length limits."""
        if x.ndim not in (2, 3):
            raise InvalidInputError(
                f"space {self.name!r}: expected waveforms (N, samples) or (N, channels, "
                f"samples), got batch shape {tuple(x.shape)}"
            )
        n = x.shape[-1]
        if n / self.sample_rate > self.max_seconds:
            message = (
                f"clip of {n / self.sample_rate:.1f} s is longer than max_seconds="
                f"{self.max_seconds:g}; cut it into chunks (audio-folder loader: "
                f"long = 'chunk') or raise max_seconds"
            )
            return [message] * x.shape[0]
        self._time_mask(n)  # these two raise when the window or band misses the clip
        self._band_mask(n)
        problems = super().check(x)
        peaks = np.abs(x.reshape(x.shape[0], -1)).max(axis=1)
        silent = "silent clip (peak 0): margins relative to the signal (dB_x, SNR) are undefined"
        return [p if p is not None or peaks[i] > 0 else silent for i, p in enumerate(problems)]

    # -- masks ----------------------------------------------------------------------------
    def _time_mask(self, n: int) -> np.ndarray | None:
        if self.window is None:
            return None
        start, end = (round(t * self.sample_rate) for t in self.window)
        if start >= n:
            raise InvalidInputError(
                f"space {self.name!r}: window starts at {self.window[0]:g} s but the clips "
                f"last {n / self.sample_rate:g} s at {self.sample_rate} Hz"
            )
        mask = np.zeros(n)
        mask[start : min(end, n)] = 1.0
        return mask

    def _band_mask(self, n: int) -> np.ndarray | None:
        if self.band is None:
            return None
        freqs = np.fft.rfftfreq(n, d=1.0 / self.sample_rate)
        keep = (freqs >= self.band[0]) & (freqs <= self.band[1])
        if not keep.any():
            raise InvalidInputError(
                f"space {self.name!r}: band {list(self.band)} Hz holds no "
                f"frequency of a {n}-sample clip at {self.sample_rate} Hz"
            )
        return keep.astype(np.float64)

    def masks(self, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """(time mask ``(samples,)``, rFFT band mask ``(samples // 2 + 1,)``), cached."""
        n = like.shape[-1]
        key = (str(like.device), str(like.dtype), n)
        if key not in self._masks:
            time, band = self._time_mask(n), self._band_mask(n)
            self._masks[key] = tuple(  # type: ignore[assignment]
                None if m is None else torch.as_tensor(m, dtype=like.dtype, device=like.device)
                for m in (time, band)
            )
        return self._masks[key]

    def restrict(self, delta: Tensor) -> Tensor:
        """``delta`` through the band mask (along the last axis), then the time window."""
        time, band = self.masks(delta)
        if band is not None:
            spectrum = torch.fft.rfft(delta, dim=-1) * band
            delta = torch.fft.irfft(spectrum, n=delta.shape[-1], dim=-1)
        if time is not None:
            delta = delta * time
        return delta

    # -- what the engine calls ------------------------------------------------------------
    def project(self, x: Tensor, delta: Tensor) -> Tensor:
        """Band, window, then the ``[-1, 1]`` box. Returns the projected delta."""
        return (x + self.restrict(delta)).clamp(-1.0, 1.0) - x

    def finalize(self, x: Tensor, x_adv: Tensor) -> Tensor:
        """``x_adv`` made valid, idempotently (the runner finalises twice before verifying).

        A candidate already inside the band up to float round-off is returned unchanged, so
        re-filtering cannot nudge a point that sits just past the boundary back across it.
        With a window as well, only the window and the box are re-applied: the search's own
        steps band-filter δ, and the window's edges make band-then-window non-idempotent.
        """
        delta = x_adv - x
        if self.band is None or self.window is not None:
            time, _ = self.masks(delta)
            delta = delta if time is None else delta * time
            return (x + delta).clamp(-1.0, 1.0)
        projected = self.project(x, delta)
        size = delta.flatten(1).abs().amax(dim=1)
        close = (projected - delta).flatten(1).abs().amax(dim=1) <= 1e-5 * size
        close = close.view(-1, *([1] * (x.dim() - 1)))
        return torch.where(close, x_adv.clamp(-1.0, 1.0), x + projected)

    def free_dims(self, x: Tensor) -> Tensor:
        """Per-sample degrees of freedom: window samples × band fraction × channels."""
        time, band = self.masks(x)
        n = x.shape[-1]
        count = float(n if time is None else time.sum())
        if band is not None:
            count *= min(float(2 * band.sum()) / n, 1.0)
        channels = x[0].numel() // n
        return torch.full((x.shape[0],), max(count, 1.0) * channels, device=x.device)

    def random(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """White Gaussian noise through the band / window, unit L2 norm per sample."""
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        noise = self.restrict(noise)
        norms = noise.flatten(1).norm(dim=1).clamp(min=1e-12)
        return noise / norms.view(-1, *([1] * (x.dim() - 1)))

    # -- reports --------------------------------------------------------------------------
    @torch.no_grad()
    def report(self, model: Any, x: Tensor, x_adv: Tensor, labels: Tensor) -> list[dict[str, Any]]:
        """Per clip: dB figures of δ, the 16-bit WAV round trip and the noise baseline.

        Clips the search did not change (not flipped, misclassified) get ``{}``. The model
        passes spent here (one to a few for the round trip, ``noise_queries`` for the
        baseline) come after the search and are not part of the result's ``queries``. Both
        checks judge untargeted flips: an arg-max label other than the true one.
        """
        delta = x_adv - x
        changed = (delta.flatten(1).abs().amax(dim=1) > 0).nonzero().squeeze(1)
        out: list[dict[str, Any]] = [{} for _ in range(x.shape[0])]
        if changed.numel() == 0:
            return out
        xc, ac, yc = x[changed], x_adv[changed], labels[changed]
        xn, dn = xc.cpu().numpy(), (ac - xc).cpu().numpy()
        figures = {
            "peak_x": measures.peak(xn),
            "peak_delta": measures.peak(dn),
            "db_x": measures.db_x(xn, dn),
            "snr_db": measures.snr_db(xn, dn),
            "dbfs": measures.dbfs(dn),
            "pcm16_steps": measures.pcm16_steps(dn),
        }
        if self.roundtrip:
            figures.update(self.pcm16_check(model, xc, ac, yc))
            figures["pcm16_db_x"] = figures["db_x"] + 20 * np.log10(figures["pcm16_scale"])
        if self.noise is not None:
            found = noise_margin(
                model, self, Untargeted(), xc, yc, measure=_l2, config=self.noise, apply=_add_noise
            )
            nn_ = found.delta.cpu().numpy()
            ok = found.found.cpu().numpy()
            figures["noise_snr_db"] = np.where(ok, measures.snr_db(xn, nn_), np.nan)
            figures["noise_db_x"] = np.where(ok, measures.db_x(xn, nn_), np.nan)
            figures["noise_queries"] = found.queries.cpu().numpy()
            figures["fragility_db"] = figures["snr_db"] - figures["noise_snr_db"]
        for row, i in enumerate(changed.tolist()):
            extras = {k: _plain(v[row]) for k, v in figures.items()}
            extras["below_pcm16_step"] = bool(figures["peak_delta"][row] < PCM16_STEP)
            out[i] = extras
        return out

    @torch.no_grad()
    def pcm16_check(
        self, model: Any, x: Tensor, x_adv: Tensor, labels: Tensor
    ) -> dict[str, np.ndarray]:
        """Re-classify ``x_adv`` after a 16-bit WAV round trip; where the flip is lost, the
        smallest scale t of :data:`PCM16_SCALES` at which ``x + t·δ`` keeps it (``inf``: none).

        A minimal flip sits on the decision boundary, so rounding every sample by up to half
        a step can undo it; ``pcm16_scale`` says how much louder it must be to survive.
        """

        def classify(waves: Tensor) -> Tensor:
            back = np.stack([pcm16_roundtrip(w, self.sample_rate) for w in waves.cpu().numpy()])
            return model(torch.as_tensor(back, dtype=x.dtype, device=x.device)).argmax(dim=1)

        label = classify(x_adv)
        scale = torch.where(label != labels, 1.0, math.inf).to(torch.float64)
        for t in PCM16_SCALES[1:]:
            todo = torch.isinf(scale).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            louder = (x[todo] + t * (x_adv[todo] - x[todo])).clamp(-1.0, 1.0)
            scale[todo[classify(louder) != labels[todo]]] = t
        return {
            "pcm16_label": label.cpu().numpy(),
            "pcm16_flipped": (label != labels).cpu().numpy(),
            "pcm16_scale": scale.cpu().numpy(),
        }

    def write_artifacts(self, out: Path, results: Sequence[Any], dataset: Any) -> Path:
        """Write ``out/audio/``: per flipped clip ``<id>.clean.wav``, ``<id>.adv.wav`` and
        ``<id>.delta.wav`` (δ amplified to a peak of 0.5 so it can be heard; the gain is in
        the index), ``index.json`` and ``summary.json`` (medians, round-trip survival,
        noise baseline, and what the loader changed: resampling, mix-down, skipped files).
        Returns the folder.
        """
        folder = Path(out) / "audio"
        folder.mkdir(parents=True, exist_ok=True)
        rate = int(getattr(dataset, "meta", {}).get("sample_rate", self.sample_rate))
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
            if self.write_wavs:
                stem = re.sub(r"[^A-Za-z0-9._-]+", "_", r.sample)
                peak = float(np.abs(adv - clean).max())
                gain = 0.5 / peak if peak > 0 else 1.0
                for kind, wave in (("clean", clean), ("adv", adv), ("delta", (adv - clean) * gain)):
                    write_pcm16(folder / f"{stem}.{kind}.wav", wave, rate)
                entry.update(
                    files=[f"{stem}.{k}.wav" for k in ("clean", "adv", "delta")],
                    delta_gain_db=20 * math.log10(gain),
                )
            index.append(entry)
        (folder / "index.json").write_text(json.dumps(_json(index), indent=1) + "\n")
        summary = audio_summary(index)
        summary["sample_rate"] = rate
        if rate != self.sample_rate:
            summary["warning"] = (
                f"the space assumes {self.sample_rate} Hz but the data is at "
                f"{rate} Hz: band and window are off by that ratio"
            )
        summary["data"] = dict(getattr(dataset, "meta", {}))
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


def _l2(delta: Tensor) -> Tensor:
    return delta.flatten(1).norm(dim=1)


def _add_noise(x: Tensor, u: Tensor, scale: Tensor) -> Tensor:
    """``x`` plus noise ``u`` at the SNR that makes its L2 norm ``scale`` (per clip), through
    ``torchaudio.functional.add_noise`` over the whole clip (all channels together)."""
    import torchaudio.functional as F

    flat_x, flat_u = x.flatten(1), u.flatten(1)
    snr = 20 * torch.log10(flat_x.norm(dim=1) / (scale * flat_u.norm(dim=1)).clamp(min=1e-30))
    return F.add_noise(flat_x, flat_u, snr).view_as(x)


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
