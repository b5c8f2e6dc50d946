"""Audio constants (with units), validation, wav I/O and the RVC front end (peak guard, high-pass)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from rvc_bench.fileio import atomic_write_bytes

SAMPLE_RATE = 16000  # Hz: every network input is 16 kHz mono
HOP = 160  # samples per 10 ms frame (the f0 and feature frame rate is 100 Hz)
FRAME_RATE = SAMPLE_RATE // HOP  # 100 frames per second
MIN_SECONDS = 0.1  # shortest input the pipeline accepts: one HuBERT frame needs 400 samples (25 ms); keep margin
SILENCE_PEAK = 1 / 32768  # one 16-bit step: input whose peak is no louder than this is silence (output: all zero)

# Output files by extension: (soundfile format, subtype). The samples are RVC's int16 result, written as they are
# (16-bit PCM; Vorbis in .ogg, which has no PCM).
OUTPUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}

# 5th-order Butterworth high-pass at 48 Hz, as the RVC pipeline applies with filtfilt (spec §1.3).
HIGHPASS_ORDER, HIGHPASS_HZ = 5, 48


class AudioError(ValueError):
    """Unusable audio: the message says what is wrong with it."""


def validate(x: np.ndarray, what: str = "audio", sr: int = SAMPLE_RATE) -> np.ndarray:
    """Reject audio no stage can use (empty, NaN/inf, silent, too short, not mono); return it as float32."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise AudioError(f"{what}: expected mono samples [N], got shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{what}: empty")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{what}: contains NaN or infinite samples")
    if x.size < MIN_SECONDS * sr:
        raise AudioError(f"{what}: {x.size / sr:.3f} s is too short (minimum {MIN_SECONDS} s)")
    peak = float(np.abs(x).max())
    if peak <= SILENCE_PEAK:
        raise AudioError(f"{what}: silent (peak {peak:.3g}, at most one 16-bit step)")
    return x.astype(np.float32, copy=False)


def read_wav(path: str | Path) -> np.ndarray:
    """Read a 16 kHz file as float32 mono; other rates are an error (resampling is out of scope, spec §1.1)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"{path}: unreadable audio ({err})") from None
    if sr != SAMPLE_RATE:
        raise AudioError(f"{path}: sample rate {sr} Hz; rvc-bench expects {SAMPLE_RATE} Hz mono input")
    return validate(x.mean(axis=1), str(path))


def output_format(path: str | Path) -> tuple[str, str]:
    """(format, subtype) for an output file, from its extension; anything else is an error (checked up front)."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise AudioError(f"{path}: unsupported output format {suffix or '(no extension)'!r}: "
                         f"use {', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def write_audio(path: str | Path, samples: np.ndarray, sr: int) -> None:
    """Write int16 samples in the format the extension names, atomically (no half-written file)."""
    import soundfile as sf

    fmt, subtype = output_format(path)
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.int16), sr, format=fmt, subtype=subtype)
    atomic_write_bytes(path, buf.getvalue())


def peak_guard(x: np.ndarray) -> np.ndarray:
    """Attenuate (never boost) so that max |x| <= 0.95 (spec §1.2)."""
    m = np.abs(x).max() / 0.95
    return x / m if m > 1 else x


def highpass(x: np.ndarray) -> np.ndarray:
    """Zero-phase 48 Hz high-pass; float64 out, as the pipeline keeps it until the networks (spec §1.3)."""
    from scipy import signal

    b, a = signal.butter(HIGHPASS_ORDER, HIGHPASS_HZ, btype="high", fs=SAMPLE_RATE)
    return signal.filtfilt(b, a, np.asarray(x, dtype=np.float64))
