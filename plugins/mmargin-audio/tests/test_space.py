"""The waveform space against exact margins of linear models over waveforms, and its reports.

Oracles: ``mmargin.testing.linear_margin`` (box [-1, 1], time-window mask) and, for the
band restriction, the closed form ``min_j g_j / ‖P a_j‖₂`` with ``P`` the band projector.
The report runs through the plugin's ``mmargin_sample_report`` hook with passes set aside
for it, so its figures are charged to each clip's budget.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mmargin
from mmargin.plugin import InvalidInputError, NoiseConfig, SampleResult, Status, TorchAdapter, lp
from mmargin.testing import SearchSpec, linear_margin, minimal_flip
from mmargin_audio.plugin import mmargin_sample_report
from mmargin_audio.space import WaveformSpace
from mmargin_audio.wav import PCM16_STEP

RATE = 8000
N_SAMPLES = 400  # 50 ms at 8 kHz
CLASSES = 10


def _linear_problem(count: int, seed: int = 0, channels: int = 0):  # type: ignore[no-untyped-def]
    """A random linear classifier over flattened waveforms and clips it labels itself."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    shape = (channels, N_SAMPLES) if channels else (N_SAMPLES,)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), CLASSES))
    t = np.arange(N_SAMPLES) / RATE
    clips = []
    for _ in range(count):
        tone = 0.4 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t + rng.uniform(0, 6))
        clips.append(np.broadcast_to(tone, shape) + 0.05 * rng.standard_normal(shape))
    x = np.stack(clips).astype(np.float32)
    with torch.no_grad():
        z = model(torch.from_numpy(x)).double().numpy()
    return model, x, z, z.argmax(1)


def _space(**options: object) -> WaveformSpace:
    base: dict[str, object] = {"sample_rate": RATE, "noise": None, "roundtrip": False}
    return WaveformSpace(**{**base, **options})  # type: ignore[arg-type]


def _reported(
    model: nn.Module, x: np.ndarray, y: np.ndarray, space: WaveformSpace, reserve: int = 200
) -> list[SampleResult]:
    """L∞ flips with the audio report hook, ``reserve`` passes per clip set aside for it."""
    spec = SearchSpec(budget=1000, exact="never", report_passes=reserve)

    def report(*args: Any) -> Any:  # the engine's report(model, x, x_adv, labels, goal)
        return mmargin_sample_report(space, *args)

    return minimal_flip(TorchAdapter(model), space, lp("linf"), x, y, spec=spec, report=report)


def _weights(model: nn.Sequential) -> tuple[np.ndarray, np.ndarray]:
    return model[1].weight.detach().double().numpy(), model[1].bias.detach().double().numpy()


@pytest.mark.parametrize(("distance", "p"), [("l2", 2.0), ("linf", math.inf)])
def test_engine_margin_matches_the_exact_linear_margin(distance: str, p: float) -> None:
    model, x, _, y = _linear_problem(24)
    results = mmargin.evaluate(model, x, y, distance, space=_space(), exact="never")
    assert all(r.status is Status.FLIPPED for r in results)
    w, b = _weights(model)
    exact = [
        linear_margin(w, b, x[i].astype(np.float64), int(y[i]), p, lower=-1.0, upper=1.0)
        for i in range(len(y))
    ]
    ratio = np.array([r.margin / e.margin for r, e in zip(results, exact, strict=True)])
    assert np.median(ratio) <= 1.01
    assert ratio.min() >= 1 - 1e-4  # never below the exact minimum


def test_time_window_margin_matches_the_exact_masked_margin() -> None:
    model, x, _, y = _linear_problem(16, seed=1)
    space = _space(window=(0.01, 0.03))  # samples 80..240
    results = mmargin.evaluate(model, x, y, "linf", space=space, exact="never")
    assert all(r.status is Status.FLIPPED for r in results)
    mask = np.zeros(N_SAMPLES)
    mask[80:240] = 1
    w, b = _weights(model)
    ratio = []
    for i, r in enumerate(results):
        delta = np.asarray(r.adversarial) - x[i]
        assert np.abs(delta[:80]).max() == 0 and np.abs(delta[240:]).max() == 0
        e = linear_margin(
            w, b, x[i].astype(np.float64), int(y[i]), math.inf, lower=-1.0, upper=1.0, mask=mask
        )
        ratio.append(r.margin / e.margin)
    assert np.median(ratio) <= 1.01 and min(ratio) >= 1 - 1e-4


def test_band_limited_l2_margin_matches_the_projected_closed_form() -> None:
    model, x, z, y = _linear_problem(20, seed=2)
    space = _space(band=(500.0, 1500.0))
    results = mmargin.evaluate(model, x, y, "l2", space=space, exact="never")
    # the band filter is an orthogonal projector P: symmetric and idempotent
    proj = space.restrict(torch.eye(N_SAMPLES, dtype=torch.float64)).numpy()
    assert np.abs(proj - proj.T).max() < 1e-12 and np.abs(proj @ proj - proj).max() < 1e-12
    w, _ = _weights(model)
    flipped = [i for i, r in enumerate(results) if r.status is Status.FLIPPED]
    assert len(flipped) >= 0.9 * len(results)
    ratio = []
    freqs = np.fft.rfftfreq(N_SAMPLES, 1 / RATE)
    for i in flipped:
        others = [j for j in range(CLASSES) if j != y[i]]
        exact = min(
            (z[i, y[i]] - z[i, j]) / np.linalg.norm(proj @ (w[j] - w[y[i]])) for j in others
        )
        ratio.append(results[i].margin / exact)
        spectrum = np.abs(np.fft.rfft(np.asarray(results[i].adversarial) - x[i])) ** 2
        outside = spectrum[(freqs < 500) | (freqs > 1500)].sum() / spectrum.sum()
        assert outside < 1e-6
    assert np.median(ratio) <= 1.01 and min(ratio) >= 1 - 1e-4


def test_report_gives_hand_checkable_db_figures_and_noise_baseline() -> None:
    model, x, _, y = _linear_problem(6, seed=3)
    space = WaveformSpace(sample_rate=RATE, noise=NoiseConfig(draws=4, budget=120))
    results = _reported(model, x, y, space, reserve=130)
    for i, r in enumerate(results):
        assert r.queries <= 1000
        assert r.status is Status.FLIPPED
        delta = np.asarray(r.adversarial, dtype=np.float64) - x[i]
        peak_x = np.abs(x[i]).max()
        e = r.extras
        assert e["db_x"] == pytest.approx(20 * math.log10(np.abs(delta).max() / peak_x), abs=1e-3)
        assert e["snr_db"] == pytest.approx(
            10 * math.log10((x[i].astype(np.float64) ** 2).sum() / (delta**2).sum()), abs=1e-3
        )
        assert e["dbfs"] == pytest.approx(20 * math.log10(r.margin), abs=1e-3)
        assert e["below_pcm16_step"] is False and e["pcm16_steps"] > 1
        assert isinstance(e["pcm16_flipped"], bool) and isinstance(e["pcm16_label"], int)
        assert (e["pcm16_scale"] == 1.0) == e["pcm16_flipped"] and e["pcm16_scale"] >= 1.0
        assert e["pcm16_db_x"] == pytest.approx(e["db_x"] + 20 * math.log10(e["pcm16_scale"]))
        assert 0 < e["noise_queries"] <= 120
        if math.isfinite(e["noise_snr_db"]):  # white noise is far louder than the attack
            assert e["fragility_db"] == pytest.approx(e["snr_db"] - e["noise_snr_db"])
            assert e["fragility_db"] > 0
    assert sum(math.isfinite(r.extras["noise_snr_db"]) for r in results) >= 3


def test_a_perturbation_below_one_pcm_step_is_flagged_and_lost_in_the_wav() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 1000.0  # class 1 when x[0] > 1e-6: the clip sits just below
        lin.bias.copy_(torch.tensor([1e-3, 0.0]))
    x = np.zeros((1, 64), dtype=np.float32)
    x[0, 1] = 0.5  # a non-silent clip whose first sample must rise by ~1e-6
    model = nn.Sequential(nn.Flatten(), lin)
    r = _reported(model, x, np.array([0]), WaveformSpace(sample_rate=RATE, noise=None), 10)[0]
    assert r.status is Status.FLIPPED and r.margin < PCM16_STEP
    assert r.extras["below_pcm16_step"] is True
    assert r.extras["pcm16_flipped"] is False and r.extras["pcm16_label"] == 0
    assert r.extras["pcm16_scale"] == math.inf  # even 8·δ rounds away in a 16-bit file


def test_a_flip_lost_to_16_bit_rounding_is_scaled_until_it_survives() -> None:
    lin = nn.Linear(64, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 1000.0  # class 1 once x[0] passes 2.4 PCM steps
        lin.bias.copy_(torch.tensor([1000.0 * 2.4 * PCM16_STEP, 0.0]))
    x = np.zeros((1, 64), dtype=np.float32)
    x[0, 1] = 0.5
    model = nn.Sequential(nn.Flatten(), lin)
    r = _reported(model, x, np.array([0]), WaveformSpace(sample_rate=RATE, noise=None), 10)[0]
    assert r.status is Status.FLIPPED and 2.4 < r.extras["pcm16_steps"] < 2.45
    # 2.4 steps round down to 2 in the file: lost; 1.05 · 2.4 = 2.52 rounds up to 3: kept
    assert r.extras["pcm16_flipped"] is False and r.extras["pcm16_scale"] == 1.05
    assert r.extras["pcm16_db_x"] == pytest.approx(r.extras["db_x"] + 20 * math.log10(1.05))


def test_channels_by_samples_waveforms_are_searched() -> None:
    model, x, _, y = _linear_problem(4, seed=4, channels=2)
    results = mmargin.evaluate(model, x, y, "l2", space=_space(), exact="never")
    assert all(r.status is Status.FLIPPED for r in results)
    assert np.asarray(results[0].adversarial).shape == (2, N_SAMPLES)


def test_bad_clips_become_error_results_not_crashes() -> None:
    model, x, _, y = _linear_problem(3, seed=5)
    x[1] = 0.0  # silent
    x[2, 5] = np.nan
    results = mmargin.evaluate(model, x, y, "l2", space=_space(), exact="never")
    assert results[0].status is Status.FLIPPED
    assert results[1].status is Status.ERROR and "silent clip" in results[1].message
    assert results[2].status is Status.ERROR and "NaN" in results[2].message
    too_long = _space(max_seconds=0.01).check(x[:1])
    assert too_long[0] is not None and "longer than max_seconds" in too_long[0]


def test_space_options_and_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="band"):
        WaveformSpace(band=(2000.0, 1000.0))
    with pytest.raises(ValueError, match="window"):
        WaveformSpace(window=(0.5, 0.5))
    with pytest.raises(InvalidInputError, match="window starts"):
        _space(window=(1.0, 2.0)).check(np.zeros((1, 400), dtype=np.float32) + 0.1)
    with pytest.raises(InvalidInputError, match="expected waveforms"):
        _space().check(np.zeros((1, 2, 3, 4), dtype=np.float32))
