"""Deterministically (re)train the spoken-digit keyword spotter and write its weights.

Usage::

    python -m mmargin_audio.train [--out DIR] [--threads 2]

Trains :class:`~mmargin_audio.models.KeywordCNN` on the committed ``train`` voices and tests
it on the ``test`` voices (speakers it never heard). Each epoch draws, from a seeded
generator, a speed change (resampling by ±10 %), a placement in the 1 s window, a gain
(−20..0 dB) and, for half the clips, white noise at 10–40 dB SNR. CPU, fixed seeds, a
fixed thread count and ``torch.use_deterministic_algorithms(True)`` make the same command
reproduce the file. Writes ``DIR/digits_kws.pt``, ``manifest.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmargin_audio.data import DIGITS_DIR, load_spoken_digits
from mmargin_audio.models import WEIGHTS_DIR, KeywordCNN
from mmargin_audio.wav import read_audio, resample, to_mono

SAMPLE_RATE = 8000
LENGTH = 8000
SPEEDS = (7200, 7600, 8000, 8400, 8800)
RECIPE: dict[str, Any] = {"epochs": 90, "batch_size": 16, "lr": 3e-3, "lr_decay": 0.97, "seed": 0}


def _variants() -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """Every training clip at every speed (trimmed, unpadded), and the labels."""
    clips, labels = [], []
    for file in sorted((DIGITS_DIR / "train").glob("*/*.wav")):
        wave, rate = read_audio(file)
        mono = to_mono(wave)
        clips.append([torch.from_numpy(resample(mono, rate, s)).float() for s in SPEEDS])
        labels.append(int(file.parent.name))
    return clips, torch.tensor(labels)


def _augment(
    clips: list[list[torch.Tensor]], idx: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """One augmented batch ``(len(idx), LENGTH)`` drawn from ``gen``."""
    out = torch.zeros(len(idx), LENGTH)
    for row, i in enumerate(idx.tolist()):
        speed = int(torch.randint(len(SPEEDS), (1,), generator=gen))
        clip = clips[i][speed][:LENGTH]
        start = int(torch.randint(LENGTH - clip.shape[0] + 1, (1,), generator=gen))
        gain = 10 ** (-20 * float(torch.rand(1, generator=gen)) / 20)
        out[row, start : start + clip.shape[0]] = clip * gain
        if float(torch.rand(1, generator=gen)) < 0.5:
            snr = 10 + 30 * float(torch.rand(1, generator=gen))
            noise = torch.randn(LENGTH, generator=gen)
            power = out[row].pow(2).mean() / 10 ** (snr / 10)
            out[row] += noise * power.sqrt()
    return out.clamp(-1.0, 1.0)


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of clips ``x`` that ``model`` (put in eval mode) labels ``y``."""
    model.eval()
    pred = torch.cat([model(torch.from_numpy(b)) for b in np.array_split(x, 4)]).argmax(1)
    return float((pred.numpy() == y).mean())


def train(log: Any = print) -> tuple[KeywordCNN, dict[str, Any]]:
    """Train the model from scratch; returns it and a record of the run."""
    clips, labels = _variants()
    test = load_spoken_digits("test")
    train_eval = load_spoken_digits("train")
    torch.manual_seed(RECIPE["seed"])
    model = KeywordCNN(sample_rate=SAMPLE_RATE)
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=RECIPE["lr_decay"])
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    for epoch in range(1, RECIPE["epochs"] + 1):
        model.train()
        perm = torch.randperm(len(labels), generator=gen)
        total = 0.0
        for start in range(0, len(perm), RECIPE["batch_size"]):
            idx = perm[start : start + RECIPE["batch_size"]]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(_augment(clips, idx, gen)), labels[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        schedule.step()
        if epoch % 10 == 0 or epoch == RECIPE["epochs"]:
            log(
                f"  epoch {epoch}: loss {total / len(labels):.4f}, "
                f"test acc {accuracy(model, test.x, test.y):.4f}"
            )
    record = {
        **RECIPE,
        "speeds": list(SPEEDS),
        "train_clips": len(labels),
        "test_clips": len(test),
        "train_accuracy": round(accuracy(model, train_eval.x, train_eval.y), 4),
        "test_accuracy": round(accuracy(model, test.x, test.y), 4),
        "train_seconds": round(time.perf_counter() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": str(model),
    }
    return model.eval(), record


def render_readme(r: dict[str, Any]) -> str:
    """The ``weights/README.md`` text for a training record."""
    return "\n".join(
        [
            "# Keyword-spotting weights",
            "",
            "`digits_kws.pt` is the state_dict of `mmargin_audio.models.KeywordCNN` (8 kHz, 1 s "
            "clips, log-mel front end inside the module), loaded by `digits_kws()` with "
            "`torch.load(..., weights_only=True)`. Generated by `python -m mmargin_audio.train`; "
            "do not edit by hand (`manifest.json` holds the same facts).",
            "",
            f"- data: committed spoken digits, train on {r['train_clips']} clips (24 voices), "
            f"test on {r['test_clips']} clips of 12 voices never heard in training",
            f"- augmentation: speed (resampled to {r['speeds']} Hz and read at 8 kHz), random "
            "placement, gain -20..0 dB, white noise at 10-40 dB SNR on half the clips",
            f"- {r['epochs']} epochs, batch {r['batch_size']}, Adam lr {r['lr']:g} "
            f"(x{r['lr_decay']:g} per epoch), seed {r['seed']}, {r['threads']} CPU thread(s), "
            f"torch {r['torch']}, torchaudio {r['torchaudio']}",
            f"- train accuracy {r['train_accuracy']:.4f}, "
            f"**test accuracy {r['test_accuracy']:.4f}**",
            f"- {r['parameters']} parameters; file {r['file_bytes']} bytes, "
            f"sha256 `{r['sha256']}`; trained in {r['train_seconds']} s on {r['machine']}",
            "",
            "```text",
            r["architecture"],
            "```",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    import torchaudio

    parser = argparse.ArgumentParser(
        prog="python -m mmargin_audio.train", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"default: {WEIGHTS_DIR}")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (part of the setup)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    model, record = train(log=lambda m: print(m, flush=True))
    file = args.out / "digits_kws.pt"
    torch.save(model.state_dict(), file)
    record.update(
        command="python -m mmargin_audio.train",
        threads=args.threads,
        torch=torch.__version__,
        torchaudio=torchaudio.__version__,
        machine=f"{platform.machine()} {platform.system()}",
        file_bytes=file.stat().st_size,
        sha256=hashlib.sha256(file.read_bytes()).hexdigest(),
    )
    (args.out / "manifest.json").write_text(json.dumps({"digits_kws": record}, indent=2) + "\n")
    (args.out / "README.md").write_text(render_readme(record))
    print(f"digits_kws: test accuracy {record['test_accuracy']:.4f} -> {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
