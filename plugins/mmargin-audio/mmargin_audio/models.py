"""Audio classifiers over raw waveforms, so gradients reach the samples.

:class:`KeywordCNN` computes its log-mel features with ``torchaudio.transforms.MelSpectrogram``
inside ``forward``: the engine perturbs the waveform and differentiates through the front
end. :func:`digits_kws` returns it trained on the committed spoken digits (weights in
``weights/``, rebuilt by ``python -m mmargin_audio.train``). :func:`hf_audio_classifier`
wraps a Hugging Face audio-classification model saved in a local folder (raw-waveform
models: wav2vec2, HuBERT, WavLM, data2vec-audio ...), importing ``transformers`` lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchaudio
from torch import Tensor, nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class KeywordCNN(nn.Module):
    """A small keyword-spotting CNN on log-mel features of a mono waveform (~20k weights).

    Input ``(B, samples)`` or ``(B, channels, samples)`` (channels are averaged) in
    ``[-1, 1]``. Front end: 32 ms Hann frames every 16 ms, ``n_mels`` mel bands,
    ``log(mel + floor)`` minus its per-clip mean (so overall gain hardly matters). Body:
    three 3×3 conv + ReLU blocks (16, 32, 48 channels, the first two max-pooled), global
    average pooling, dropout and a linear layer to ``classes`` logits.
    """

    def __init__(
        self, sample_rate: int = 8000, n_mels: int = 32, classes: int = 10, floor: float = 1e-4
    ) -> None:
        super().__init__()
        n_fft = round(0.032 * sample_rate)
        self.sample_rate = sample_rate
        self.floor = floor
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=n_fft // 2,
            f_min=20.0,
            f_max=sample_rate / 2,
            n_mels=n_mels,
            power=2.0,
        )
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(32, classes),
        )

    def features(self, wave: Tensor) -> Tensor:
        """Mean-normalised log-mel features ``(B, 1, n_mels, frames)`` of a waveform batch."""
        if wave.dim() == 3:
            wave = wave.mean(dim=1)
        logmel = torch.log(self.mel(wave) + self.floor)
        mean = logmel.mean(dim=(1, 2), keepdim=True)
        std = logmel.std(dim=(1, 2), keepdim=True)
        return ((logmel - mean) / (std + 1e-3)).unsqueeze(1)

    def forward(self, wave: Tensor) -> Tensor:
        """Logits ``(B, classes)``."""
        logits: Tensor = self.body(self.features(wave))
        return logits


def digits_kws(weights: str | Path | None = None) -> KeywordCNN:
    """The :class:`KeywordCNN` trained on the spoken digits (8 kHz, 1 s), in eval mode.

    ``weights`` overrides the committed state_dict (read with ``weights_only=True``).
    """
    model = KeywordCNN()
    path = WEIGHTS_DIR / "digits_kws.pt" if weights is None else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"digits_kws: no weights file at {path}; rebuild it with "
            "`python -m mmargin_audio.train`"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"digits_kws: {path} does not fit KeywordCNN: {exc}") from None
    setattr(model, "class_names", [str(d) for d in range(10)])  # noqa: B010 - folder names
    return model.eval()


class HFWaveformClassifier(nn.Module):
    """A Hugging Face audio classifier that takes raw waveforms, made differentiable end to end.

    The feature extractor of raw-waveform models only normalises each clip to zero mean and
    unit variance (``do_normalize``); that step is redone here in torch, so the engine can
    perturb the waveform itself. ``sample_rate`` is the rate the model expects.
    """

    def __init__(self, model: nn.Module, sample_rate: int, do_normalize: bool = True) -> None:
        super().__init__()
        self.model = model
        self.sample_rate = int(sample_rate)
        self.do_normalize = do_normalize

    def forward(self, wave: Tensor) -> Tensor:
        """Logits ``(B, classes)`` of ``(B, samples)`` or ``(B, channels, samples)`` waveforms."""
        if wave.dim() == 3:
            wave = wave.mean(dim=1)
        if self.do_normalize:
            mean = wave.mean(dim=-1, keepdim=True)
            var = wave.var(dim=-1, keepdim=True, unbiased=False)
            wave = (wave - mean) / torch.sqrt(var + 1e-7)
        out = self.model(input_values=wave)
        logits: Tensor = getattr(out, "logits", out)
        return logits


def hf_audio_classifier(path: str, sample_rate: int | None = None) -> HFWaveformClassifier:
    """A local Hugging Face audio-classification model (``save_pretrained`` folder).

    Loads ``AutoModelForAudioClassification`` and its feature extractor with
    ``local_files_only=True`` (nothing is downloaded). Only extractors that take raw
    waveforms (``Wav2Vec2FeatureExtractor``: wav2vec2, HuBERT, WavLM, data2vec-audio) are
    supported; spectrogram extractors compute features in numpy, which gradients cannot
    cross, and raise ``ValueError``. ``sample_rate`` must match the extractor's when given.
    """
    try:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification
    except ImportError as exc:
        raise ImportError(
            "hf_audio_classifier needs `transformers` (pip install 'mmargin-audio[hf]')"
        ) from exc
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {folder}")
    extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    kind = type(extractor).__name__
    if kind != "Wav2Vec2FeatureExtractor":
        raise ValueError(
            f"{folder}: feature extractor {kind} is not differentiable; "
            "expected a raw-waveform model (Wav2Vec2FeatureExtractor)"
        )
    rate = int(extractor.sampling_rate)
    if sample_rate is not None and int(sample_rate) != rate:
        raise ValueError(
            f"{folder}: the model expects {rate} Hz audio, got sample_rate="
            f"{sample_rate}; load the data at {rate} Hz"
        )
    model: Any = AutoModelForAudioClassification.from_pretrained(folder, local_files_only=True)
    return HFWaveformClassifier(model.eval(), rate, bool(extractor.do_normalize)).eval()
