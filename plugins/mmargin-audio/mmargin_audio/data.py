"""Audio data loaders: each returns an :class:`mmargin.data.Dataset` of fixed-length clips.

``x`` is float32 ``(N, samples)`` in ``[-1, 1]`` (mono), ``y`` int64, one id per clip. A
loader never fails on one bad file: what it changed or skipped is said in ``meta``
(``resampled``, ``mixed_down``, ``clipped``, ``cropped``, ``chunked``, ``padded``,
``skipped`` with the reason per file), and the run writes that next to its results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmargin.plugin import Dataset, folder_classes
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
    sample_rate: int | None = None,
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
    if sample_rate is None:
        sample_rate = read_audio(files[0])[1]
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
        note = f"resampled {stored_rate} -> {sample_rate} Hz"
        meta["repaired"] = {sample: [note] for sample in ids}
    return Dataset(np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64), ids, meta)


def _samples(duration: float, sample_rate: int) -> int:
    if not duration > 0 or not sample_rate > 0:
        raise ValueError(f"duration and sample_rate must be > 0, got {duration} and {sample_rate}")
    return round(duration * sample_rate)


# --------------------------------------------------------------------------- user folders


def load_audio_folder(
    path: str,
    sample_rate: int | None = None,
    duration: float = 1.0,
    long: str = "crop",
    max_seconds: float = 600.0,
    classes: Sequence[str] | Mapping[str, int] | None = None,
) -> Dataset:
    """A folder of labelled sound files: ``path/<class>/*.wav`` (also FLAC / OGG).

    Labels come from ``classes`` (the model's class names in order, or a table
    ``{ name = index }``; the folder may hold any subset of them), else from the sorted
    sub-folder names, which a run maps onto the model's class names when it declares them
    (:func:`mmargin.plugin.folder_classes`). Every clip is mixed down to mono, resampled to
    ``sample_rate`` with ``torchaudio.functional.resample`` and made ``duration`` seconds
    long (see :func:`fit_length` for ``long``). ``sample_rate=None`` keeps the files' own
    rate (a run fills in the rate its model declares first); files at different rates then
    need an explicit one. Files that cannot be read, hold no samples, or last longer than
    ``max_seconds`` are skipped (``meta["skipped"]``: file, label, reason; a run reports
    them as error records); what was changed in a loaded clip is in ``meta["repaired"]``
    (sample id → notes). Raises ``ValueError`` only when no usable clip remains.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    mapping = folder_classes(root, classes)
    files = [
        (file, label)
        for name, label in sorted(mapping.labels.items())
        for file in sorted((root / name).rglob("*"))
        if file.is_file() and not file.name.startswith(".")
    ]
    sounds = [(f, label) for f, label in files if f.suffix.lower() in AUDIO_SUFFIXES]
    rate = int(sample_rate) if sample_rate is not None else _common_rate(root, sounds)
    length = _samples(duration, rate)
    notes: dict[str, Any] = {
        k: []
        for k in ("resampled", "mixed_down", "clipped", "cropped", "chunked", "padded", "skipped")
    }
    repaired: dict[str, list[str]] = {}
    xs: list[np.ndarray] = []
    ys: list[int] = []
    ids: list[str] = []
    for file, label in sounds:
        rel = file.relative_to(root).as_posix()
        before = len(notes["skipped"])
        clips = _read_clip(file, rel, rate, length, long, max_seconds, notes)
        for entry in notes["skipped"][before:]:
            entry["label"] = label
        changes = _changes(notes, rel)
        for k, clip in enumerate(clips):
            xs.append(clip)
            ys.append(label)
            ids.append(rel if len(clips) == 1 else f"{rel}#{k}")
            if changes:
                repaired[ids[-1]] = changes
    meta: dict[str, Any] = {
        "source": str(root),
        "sample_rate": rate,
        "duration": duration,
        **mapping.meta(),
        "long": long,
        "ignored_files": len(files) - len(sounds),
        "mono": "every clip is mixed down to one channel (mean of the channels)",
        **{k: v for k, v in notes.items() if v},
        "repaired": repaired,
    }
    if not xs:
        reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in notes["skipped"][:5])
        raise ValueError(f"{root}: no usable sound files ({reasons or 'none found'})")
    return Dataset(np.stack(xs).astype(np.float32), np.array(ys, dtype=np.int64), ids, meta)


def _common_rate(root: Path, sounds: Sequence[tuple[Path, int]]) -> int:
    """The one sample rate of the readable files (``ValueError`` when they differ)."""
    import soundfile as sf

    rates: dict[int, str] = {}
    for file, _ in sounds:
        try:
            rates.setdefault(int(sf.info(str(file)).samplerate), file.relative_to(root).as_posix())
        except (RuntimeError, TypeError, ValueError, OSError):
            continue  # skipped (with its reason) when read
    if len(rates) > 1:
        shown = ", ".join(f"{r} Hz ({f})" for r, f in sorted(rates.items()))
        raise ValueError(f"{root}: the files are at different sample rates ({shown}) and "
                         "neither the task nor the model gives one; set sample_rate")  # fmt: skip
    return next(iter(rates), 16000)  # none readable: every file is skipped with its reason


def _changes(notes: dict[str, Any], rel: str) -> list[str]:
    """What :func:`_read_clip` changed in file ``rel``, as short notes."""
    said: list[str] = []
    for entry in notes["resampled"]:
        if entry["file"] == rel:
            said.append(f"resampled {entry['from']} -> {entry['to']} Hz")
    for entry in notes["mixed_down"]:
        if entry["file"] == rel:
            said.append(f"mixed down from {entry['channels']} channels")
    for entry in notes["clipped"]:
        if entry["file"] == rel:
            said.append(f"clipped (peak {entry['peak']:.3g})")
    said += [kind.replace("_", " ") for kind in ("cropped", "chunked", "padded")
             if rel in notes[kind]]  # fmt: skip
    return said


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
