"""The keyword spotter's committed weights, gradients through its front end, the HF wrapper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from mmargin_audio.data import load_spoken_digits
from mmargin_audio.models import WEIGHTS_DIR, HFWaveformClassifier, KeywordCNN, digits_kws

MANIFEST = json.loads((WEIGHTS_DIR / "manifest.json").read_text())["digits_kws"]


def test_committed_weights_reach_the_recorded_accuracy_on_unheard_voices() -> None:
    model = digits_kws()
    data = load_spoken_digits("test")
    with torch.no_grad():
        pred = model(torch.from_numpy(data.x)).argmax(1).numpy()
    accuracy = float((pred == data.y).mean())
    assert accuracy == pytest.approx(MANIFEST["test_accuracy"], abs=1 / 120)
    assert accuracy >= 0.85
    assert (WEIGHTS_DIR / "digits_kws.pt").stat().st_size < 1_000_000


def test_gradients_reach_the_waveform_through_the_mel_front_end() -> None:
    model = digits_kws()
    x = torch.from_numpy(load_spoken_digits("test").x[:4]).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x).sum(), x)
    assert grad.shape == x.shape and bool((grad.abs().sum(dim=1) > 0).all())
    stereo = torch.stack([x.detach(), x.detach()], dim=1)
    torch.testing.assert_close(model(stereo), model(x.detach()))  # channels are averaged


def test_overall_gain_barely_changes_the_decision() -> None:
    model = digits_kws()
    x = torch.from_numpy(load_spoken_digits("test").x)
    with torch.no_grad():
        same = (model(x).argmax(1) == model(x * 0.5).argmax(1)).float().mean()
    assert float(same) >= 0.95


def test_weights_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"mmargin_audio\.train"):
        digits_kws(tmp_path / "missing.pt")
    torch.save({"nope": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not fit KeywordCNN"):
        digits_kws(tmp_path / "bad.pt")
    assert KeywordCNN(sample_rate=16000)(torch.zeros(1, 16000) + 0.1).shape == (1, 10)


class _Echo(nn.Module):
    """Stands in for a transformers model: returns its input's first samples as logits."""

    def forward(self, input_values: Tensor) -> Tensor:
        return input_values[:, :3]


def test_hf_wrapper_normalises_each_clip_like_the_feature_extractor() -> None:
    wrapper = HFWaveformClassifier(_Echo(), sample_rate=16000, do_normalize=True)
    wave = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    expected = (wave - 2.5) / torch.sqrt(torch.tensor(1.25) + 1e-7)
    torch.testing.assert_close(wrapper(wave), expected[:, :3])
    raw = HFWaveformClassifier(_Echo(), sample_rate=16000, do_normalize=False)
    torch.testing.assert_close(raw(wave.unsqueeze(1)), wave[:, :3])


def test_hf_audio_classifier_from_a_local_folder(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from mmargin_audio.models import hf_audio_classifier

    config = transformers.Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_feat_extract_layers=2,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
        num_labels=3,
        use_weighted_layer_sum=False,
        classifier_proj_size=8,
    )
    torch.manual_seed(0)
    transformers.Wav2Vec2ForSequenceClassification(config).save_pretrained(tmp_path)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(tmp_path)
    model = hf_audio_classifier(str(tmp_path))
    x = (torch.randn(2, 1600) * 0.1).requires_grad_(True)
    logits = model(x)
    assert logits.shape == (2, 3)
    (grad,) = torch.autograd.grad(logits.sum(), x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="16000 Hz"):
        hf_audio_classifier(str(tmp_path), sample_rate=8000)


def test_hf_audio_classifier_says_what_is_missing(tmp_path: Path) -> None:
    from mmargin_audio.models import hf_audio_classifier

    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="transformers"):
            hf_audio_classifier(str(tmp_path))
    else:
        with pytest.raises(FileNotFoundError, match="no model folder"):
            hf_audio_classifier(str(tmp_path / "missing"))
