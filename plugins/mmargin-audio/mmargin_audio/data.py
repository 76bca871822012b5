"""Audio data loaders: each returns an :class:`mmargin.data.Dataset` of fixed-length clips.

``x`` is float32 ``(N, samples)`` in ``[-1, 1]`` (mono), ``y`` int64, one id per clip. A
loader never fails on one bad file: what it changed or skipped is said in ``meta``
(``resampled``, ``mixed_down``, ``clipped``, ``cropped``, ``chunked``, ``padded``,
``skipped`` with the reason per file), and the run writes that next to its results.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.plugin import Dataset
from mmargin_audio.wav import read_audio, resample, to_mono

__all__ = ["AUDIO_SUFFIXES", "DIGITS_DIR", "fit_length", "load_audio_folder", "load_spoken_digits"]

DIGITS_DIR = Path(__file__).resolve().parent / "digits"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
"""File name endings :func:`load_audio_folder` reads (case-insensitive); others are ignored."""
LONG_POLICIES = ("crop", "chunk", "reject")


def center(wave: np.ndarray, length: int) -> np.ndarray:
    """``wave`` (``(samples,)``) zero-padded evenly on both sides, or its middle cut out."""
    n = wave.shape[-1]
    if n >= length:
        start = (n - length) // 2
        return wave[start : start + length]
    left = (length - n) // 2
    return np.pad(wave, (left, length - n - left))


def _loudest(wave: np.ndarray, length: int) -> np.ndarray:
    """The window of ``length`` samples with the most energy (hop of 1/10 window)."""
    energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    hop = max(length // 10, 1)
    starts = np.arange(0, wave.shape[-1] - length + 1, hop)
    best = int(starts[np.argmax(energy[starts + length] - energy[starts])])
    return wave[best : best + length]


def fit_length(wave: np.ndarray, length: int, long: str = "crop") -> list[np.ndarray]:
    """Mono ``wave`` as clips of exactly ``length`` samples.

    Shorter clips are zero-padded around the centre. Longer ones follow ``long``:
    ``"crop"`` keeps the loudest window, ``"chunk"`` cuts consecutive windows (the last
    one zero-padded), ``"reject"`` returns no clip.
    """
    if long not in LONG_POLICIES:
        raise ValueError(f"long: expected one of {LONG_POLICIES}, got {long!r}")
    n = wave.shape[-1]
    if n <= length:
        return [center(wave, length)]
    if long == "reject":
        return []
    if long == "crop":
        return [_loudest(wave, length)]
    chunks = [wave[s : s + length] for s in range(0, n, length)]
    return [c if c.shape[-1] == length else np.pad(c, (0, length - c.shape[-1])) for c in chunks]


# --------------------------------------------------------------------------- spoken digits


def load_spoken_digits(
    split: str = "test",
    sample_rate: int = 8000,
    duration: float = 1.0,
    folder: str | None = None,
) -> Dataset:
    """The committed synthetic spoken digits (``python -m mmargin_audio.synth``).

    ``split`` is ``"train"`` (24 voices × 10 digits) or ``"test"`` (12 other voices × 10
    digits). Clips are centred in ``duration`` seconds; stored at 8 kHz, they are resampled
    (and ``meta`` says so) when another ``sample_rate`` is asked for. Ids read
    ``digits-test-7-fl-slt``. ``folder`` points at another synthesised set.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    root = Path(folder) if folder is not None else DIGITS_DIR
    files = sorted((root / split).glob("*/*.wav"), key=lambda p: (int(p.parent.name), p.stem))
    if not files:
        raise FileNotFoundError(
            f"no clips under {root / split}; run `python -m mmargin_audio.synth`"
        )
    length = _samples(duration, sample_rate)
    xs, ys, ids = [], [], []
    stored_rate = None
    for file in files:
        wave, rate = read_audio(file)
        stored_rate = rate
        xs.append(center(resample(to_mono(wave), rate, sample_rate), length))
        ys.append(int(file.parent.name))
        ids.append(f"digits-{split}-{file.parent.name}-{file.stem}")
    meta: dict[str, Any] = {
        "source": str(root),
        "split": split,
        "sample_rate": sample_rate,
        "duration": duration,
        "classes": [str(d) for d in range(10)],
        "voices": sorted({f.stem for f in files}),
    }
    manifest = root / "manifest.json"
    if manifest.is_file():
        meta["synth"] = {
            k: v
            for k, v in json.loads(manifest.read_text()).items()
            if k in ("tools", "command", "seed")
        }
    if stored_rate != sample_rate:
        meta["resampled"] = {"from": stored_rate, "to": sample_rate, "files": len(files)}
    return Dataset(np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64), ids, meta)


def _samples(duration: float, sample_rate: int) -> int:
    if not duration > 0 or not sample_rate > 0:
        raise ValueError(f"duration and sample_rate must be > 0, got {duration} and {sample_rate}")
    return round(duration * sample_rate)


# --------------------------------------------------------------------------- user folders


def load_audio_folder(
    path: str,
    sample_rate: int = 16000,
    duration: float = 1.0,
    long: str = "crop",
    max_seconds: float = 600.0,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """A folder of labelled sound files: ``path/<class>/*.wav`` (also FLAC / OGG).

    Classes are the sub-folder names in sorted order (or ``classes``, which fixes the
    label numbering to match a model). Every clip is mixed down to mono, resampled to
    ``sample_rate`` with ``torchaudio.functional.resample`` and made ``duration`` seconds
    long (see :func:`fit_length` for ``long``). Files that cannot be read, hold no samples,
    or last longer than ``max_seconds`` are skipped with their reason in ``meta``.
    Raises ``ValueError`` only when no usable clip remains.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    names = (
        list(classes)
        if classes is not None
        else sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    if not names:
        raise ValueError(f"{root}: expected one sub-folder per class, found none")
    length = _samples(duration, sample_rate)
    notes: dict[str, Any] = {
        k: []
        for k in ("resampled", "mixed_down", "clipped", "cropped", "chunked", "padded", "skipped")
    }
    ignored = 0
    xs: list[np.ndarray] = []
    ys: list[int] = []
    ids: list[str] = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            raise ValueError(f"{root}: class {name!r} has no sub-folder")
        for file in sorted(folder.rglob("*")):
            if not file.is_file() or file.name.startswith("."):
                continue
            if file.suffix.lower() not in AUDIO_SUFFIXES:
                ignored += 1
                continue
            rel = file.relative_to(root).as_posix()
            clips = _read_clip(file, rel, sample_rate, length, long, max_seconds, notes)
            for k, clip in enumerate(clips):
                xs.append(clip)
                ys.append(label)
                ids.append(rel if len(clips) == 1 else f"{rel}#{k}")
    meta: dict[str, Any] = {
        "source": str(root),
        "sample_rate": sample_rate,
        "duration": duration,
        "classes": names,
        "long": long,
        "ignored_files": ignored,
        "mono": "every clip is mixed down to one channel (mean of the channels)",
        **{k: v for k, v in notes.items() if v},
    }
    if not xs:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in notes["skipped"][:5])
        raise ValueError(f"{root}: no usable sound files ({reasons or 'none found'})")
    return Dataset(np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64), ids, meta)


def _read_clip(
    file: Path,
    rel: str,
    sample_rate: int,
    length: int,
    long: str,
    max_seconds: float,
    notes: dict[str, Any],
) -> list[np.ndarray]:
    """One file as fixed-length mono clips, recording every change in ``notes``."""
    import soundfile as sf

    try:
        info = sf.info(str(file))
    except (RuntimeError, TypeError, ValueError, OSError) as exc:
        notes["skipped"].append({"file": rel, "reason": f"not a readable sound file ({exc})"})
        return []
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds > max_seconds:
        notes["skipped"].append(
            {
                "file": rel,
                "reason": f"{seconds:.1f} s is longer than "
                f"max_seconds={max_seconds:g}; cut it or raise the limit",
            }
        )
        return []
    try:
        wave, rate = read_audio(file)
    except ValueError as exc:
        notes["skipped"].append({"file": rel, "reason": str(exc).removeprefix(f"{file}: ")})
        return []
    if wave.shape[0] > 1:
        notes["mixed_down"].append({"file": rel, "channels": int(wave.shape[0])})
    mono = to_mono(wave)
    if rate != sample_rate:
        notes["resampled"].append({"file": rel, "from": rate, "to": sample_rate})
        mono = resample(mono, rate, sample_rate)
    if not np.all(np.isfinite(mono)):
        notes["skipped"].append({"file": rel, "reason": "holds NaN/inf samples"})
        return []
    if np.abs(mono).max() > 1.0:
        notes["clipped"].append({"file": rel, "peak": float(np.abs(mono).max())})
        mono = np.clip(mono, -1.0, 1.0)
    clips = fit_length(mono, length, long)
    n = mono.shape[-1]
    if n < length:
        notes["padded"].append(rel)
    elif n > length and long == "reject":
        notes["skipped"].append(
            {
                "file": rel,
                "reason": f"{n / sample_rate:.2f} s is longer than duration and long='reject'",
            }
        )
    elif n > length:
        notes["chunked" if long == "chunk" else "cropped"].append(rel)
    return clips
