"""Synthesise the spoken-digits set offline with Debian's ``espeak-ng`` and ``flite``.

Usage::

    python -m mmargin_audio.synth [--out DIR]

Every (voice, digit) pair in :data:`VOICES` is spoken to a temporary WAV file, mixed down,
resampled to 8 kHz with ``torchaudio.functional.resample``, trimmed to the speech (−40 dB
of the peak, 20 ms margins), brought to a per-voice peak level drawn from a seeded
generator and written as 16-bit PCM to ``DIR/<split>/<digit>/<voice>.wav`` (default: the
package's ``digits/`` folder), with ``DIR/manifest.json`` listing voices, commands and
versions. Voices are split by speaker, so the test split holds voices the model never
heard. The synthesisers are deterministic, so the same command reproduces the files; the
files are committed, so nothing else (tests, CI, tasks) needs the synthesisers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmargin_audio.wav import read_audio, resample, to_mono, write_pcm16

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 8000
DIGITS_DIR = Path(__file__).resolve().parent / "digits"


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: engine, voice name, speaking rate / stretch, pitch, split."""

    name: str
    engine: str  # "espeak-ng" or "flite"
    voice: str
    rate: float  # espeak-ng words per minute, or flite duration stretch
    pitch: int  # espeak-ng pitch 0..99, or flite mean F0 in Hz (0 = the voice's own)
    split: str

    def command(self, word: str, out: Path) -> list[str]:
        """The synthesiser command line that speaks ``word`` into ``out``."""
        if self.engine == "espeak-ng":
            return [
                "espeak-ng",
                "-v",
                self.voice,
                "-s",
                str(int(self.rate)),
                "-p",
                str(self.pitch),
                "-w",
                str(out),
                word,
            ]
        cmd = ["flite", "-voice", self.voice, "--setf", f"duration_stretch={self.rate}"]
        if self.pitch:
            cmd += ["--setf", f"int_f0_target_mean={self.pitch}"]
        return [*cmd, "-t", word, "-o", str(out)]


def _espeak(name: str, voice: str, rate: int, pitch: int, split: str) -> Voice:
    return Voice(name, "espeak-ng", voice, rate, pitch, split)


def _flite(name: str, voice: str, stretch: float, f0: int, split: str) -> Voice:
    return Voice(name, "flite", voice, stretch, f0, split)


VOICES: tuple[Voice, ...] = (
    # train: 24 speakers
    _espeak("es-us-m1", "en-us+m1", 160, 45, "train"),
    _espeak("es-us-f1", "en-us+f1", 175, 55, "train"),
    _espeak("es-us-m3", "en-us+m3", 140, 35, "train"),
    _espeak("es-us-f5", "en-us+f5", 190, 60, "train"),
    _espeak("es-gb-m2", "en-gb+m2", 150, 50, "train"),
    _espeak("es-gb-f2", "en-gb+f2", 165, 65, "train"),
    _espeak("es-gb-m7", "en-gb+m7", 200, 40, "train"),
    _espeak("es-sc-m3", "en-gb-scotland+m3", 155, 45, "train"),
    _espeak("es-sc-f3", "en-gb-scotland+f3", 180, 60, "train"),
    _espeak("es-rp-m4", "en-gb-x-rp+m4", 145, 30, "train"),
    _espeak("es-rp-f4", "en-gb-x-rp+f4", 170, 70, "train"),
    _espeak("es-cb-f3", "en-029+f3", 160, 55, "train"),
    _espeak("es-cb-m6", "en-029+m6", 185, 40, "train"),
    _espeak("es-ny-klatt", "en-us-nyc+klatt", 150, 50, "train"),
    _espeak("es-ln-m5", "en-gb-x-gbclan+m5", 175, 35, "train"),
    _espeak("es-us-klatt3", "en-us+klatt3", 165, 55, "train"),
    _espeak("es-gb-croak", "en-gb+croak", 140, 40, "train"),
    _espeak("es-us-m2", "en-us+m2", 210, 50, "train"),
    _flite("fl-kal16", "kal16", 1.0, 0, "train"),
    _flite("fl-kal16-slow", "kal16", 1.25, 125, "train"),
    _flite("fl-awb", "awb", 1.0, 0, "train"),
    _flite("fl-awb-high", "awb", 0.9, 140, "train"),
    _flite("fl-rms", "rms", 1.0, 0, "train"),
    _flite("fl-rms-slow", "rms", 1.2, 95, "train"),
    # test: 12 speakers never heard in training
    _espeak("es-wm-f4", "en-gb-x-gbcwmd+f4", 165, 60, "test"),
    _espeak("es-wm-m8", "en-gb-x-gbcwmd+m8", 150, 40, "test"),
    _espeak("es-us-f2", "en-us+f2", 170, 65, "test"),
    _espeak("es-us-m6", "en-us+m6", 155, 35, "test"),
    _espeak("es-gb-f5", "en-gb+f5", 185, 55, "test"),
    _espeak("es-ny-m4", "en-us-nyc+m4", 145, 45, "test"),
    _espeak("es-sc-klatt2", "en-gb-scotland+klatt2", 175, 50, "test"),
    _espeak("es-cb-m1", "en-029+m1", 160, 30, "test"),
    _flite("fl-slt", "slt", 1.0, 0, "test"),
    _flite("fl-slt-fast", "slt", 0.85, 190, "test"),
    _flite("fl-kal", "kal", 1.0, 0, "test"),
    _flite("fl-kal-slow", "kal", 1.2, 115, "test"),
)


def trim(
    wave: np.ndarray, sample_rate: int, floor_db: float = -40.0, margin_s: float = 0.02
) -> np.ndarray:
    """The stretch of a mono ``wave`` above ``floor_db`` of its peak, plus margins."""
    peak = float(np.abs(wave).max())
    if peak == 0.0:
        return wave
    loud = np.nonzero(np.abs(wave) >= peak * 10 ** (floor_db / 20))[0]
    pad = int(margin_s * sample_rate)
    return wave[max(loud[0] - pad, 0) : loud[-1] + pad + 1]


def speak(voice: Voice, word: str, folder: Path) -> np.ndarray:
    """``word`` spoken by ``voice``: mono float32 at :data:`SAMPLE_RATE`, trimmed."""
    raw = folder / "raw.wav"
    subprocess.run(voice.command(word, raw), check=True, capture_output=True)
    wave, rate = read_audio(raw)
    return trim(resample(to_mono(wave), rate, SAMPLE_RATE), SAMPLE_RATE)


def _version(tool: str) -> str:
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return next((line for line in lines if "version" in line.lower()), lines[0] if lines else "")


def synthesise(out: Path, seed: int = 0, log: bool = True) -> dict[str, object]:
    """Write every clip under ``out`` and return the manifest (also written as JSON)."""
    for tool in ("espeak-ng", "flite"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} not found; install it with `apt-get install {tool}`")
    rng = np.random.default_rng(seed)
    levels = {v.name: float(rng.uniform(0.2, 0.9)) for v in VOICES}
    for split in ("train", "test"):
        shutil.rmtree(out / split, ignore_errors=True)
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for voice in VOICES:
            for digit, word in enumerate(DIGITS):
                wave = speak(voice, word, Path(tmp))
                wave = wave * (levels[voice.name] / float(np.abs(wave).max()))
                file = out / voice.split / str(digit) / f"{voice.name}.wav"
                file.parent.mkdir(parents=True, exist_ok=True)
                write_pcm16(file, wave, SAMPLE_RATE)
                total += file.stat().st_size
            if log:
                print(f"  {voice.name:<14} {voice.split:<5} peak {levels[voice.name]:.2f}")
    manifest: dict[str, object] = {
        "sample_rate": SAMPLE_RATE,
        "words": list(DIGITS),
        "seed": seed,
        "command": "python -m mmargin_audio.synth",
        "tools": {t: _version(t) for t in ("espeak-ng", "flite")},
        "voices": [{**asdict(v), "peak": round(levels[v.name], 4)} for v in VOICES],
        "bytes": total,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mmargin_audio.synth", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=DIGITS_DIR, help=f"default: {DIGITS_DIR}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-voice levels")
    args = parser.parse_args(argv)
    manifest = synthesise(args.out, seed=args.seed)
    print(f"wrote {len(VOICES) * len(DIGITS)} clips, {manifest['bytes']} bytes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
