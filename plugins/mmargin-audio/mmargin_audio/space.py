"""The waveform perturbation space: additive δ on ``(samples,)`` or ``(channels, samples)``
waveforms in ``[-1, 1]``, optionally restricted to a frequency band and a time window.

The engine searches it like any continuous space (the Lp ball comes from the distance,
``l2`` or ``linf``). ``project`` passes δ through an FFT band mask (an orthogonal
projection onto the band's sinusoids), zeroes it outside the time window and keeps
``x + δ`` inside ``[-1, 1]``. When both restrictions are set, δ is band-filtered then
windowed: strictly inside the window, band-limited up to the spreading the window's edges
cause; the final clamp can likewise add a little out-of-band content where a clip clips.

After verification the engine calls the plugin's ``mmargin_sample_report`` hook, which
gives every flipped clip its figures in dB, the 16-bit WAV round trip and the random-noise
baseline; after a task run, its ``mmargin_write_artifacts`` hook writes the adversarial
clips as WAV files beside the results (both in :mod:`mmargin_audio.report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmargin.plugin import ContinuousSpace, InvalidInputError, NoiseConfig

FINALIZE_ROUNDS = 100
"""Most alternating band / box projections :meth:`WaveformSpace.finalize` makes."""


@dataclass
class WaveformSpace(ContinuousSpace):
    """Additive waveform perturbations, reported in dB relative to the clip.

    ``band`` = ``(low_hz, high_hz)`` keeps δ inside that frequency band, ``window`` =
    ``(start_s, end_s)`` inside that stretch of time (both need the right
    ``sample_rate``). Clips longer than ``max_seconds`` and silent clips are refused per
    sample with a message. ``roundtrip`` re-classifies every adversarial clip after a 16-bit
    WAV round trip; ``noise`` configures the random white-noise baseline (``None``: off).
    ``write_wavs``: the artefact hook writes clean, adversarial and perturbation WAV files.
    ``saved``: flips re-checked as 16-bit WAVs and repaired (``"repair"``), re-checked
    (``"check"``) or not (``"off"``), see :func:`mmargin.plugin.check_saved`.
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
    saved: str = "repair"
    _masks: dict[tuple[str, str, int], tuple[Tensor | None, Tensor | None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.saved not in ("repair", "check", "off"):
            raise ValueError(f"saved: expected 'repair', 'check' or 'off', got {self.saved!r}")
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
        Otherwise band filter and box are applied in turn (at most :data:`FINALIZE_ROUNDS`
        times) until the point is a fixed point of both: where a clip clips, one round
        leaves out-of-band content that a second call would filter again.
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
        for _ in range(FINALIZE_ROUNDS):  # band filter and box in turn, to a fixed point
            again = self.project(x, projected)
            moved = (again - projected).flatten(1).abs().amax(dim=1)
            projected = again
            if bool((moved <= 1e-7 * size).all()):
                break
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

    # -- reports (the plugin's mmargin_sample_report hook calls mmargin_audio.report) --------
    def pcm16_check(
        self, model: Any, x: Tensor, x_adv: Tensor, labels: Tensor, goal: Any = None
    ) -> dict[str, np.ndarray]:
        """Re-classify ``x_adv`` after a 16-bit WAV round trip (see
        :func:`mmargin_audio.report.pcm16_check`); ``goal`` defaults to untargeted."""
        from mmargin_audio.report import pcm16_check

        return pcm16_check(self, model, x, x_adv, labels, goal)
