"""Deterministic test audio with a known f0 contour, generated into a cache for any length.

The signal alternates voiced segments (harmonic tone with vibrato and glides, f0 known per 10 ms frame), unvoiced
noise bursts and silences, like speech at the level a pitch tracker and a vocoder care about.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rvc_bench.audio import HOP, SAMPLE_RATE
from rvc_bench.fileio import atomic_write_bytes

DEFAULT_GRID = (5, 60, 300)  # seconds: the lengths of the original benchmarks document


def cache_dir() -> Path:
    """Where generated audio and synthetic checkpoints live: $RVC_BENCH_CACHE, else ./fixtures/cache."""
    return Path(os.environ.get("RVC_BENCH_CACHE", Path.cwd() / "fixtures" / "cache"))


@dataclass(frozen=True)
class Clip:
    audio: np.ndarray  # float32 [N] at 16 kHz, mono
    f0: np.ndarray  # float32 [N // 160 + 1] Hz per 10 ms frame (frame t centred on sample 160 t); 0 = unvoiced
    sr: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.audio.size / self.sr


def generate(seconds: float, seed: int = 0) -> Clip:
    """Build a clip of exactly round(seconds * 16000) samples from a seeded generator."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    f0_samples = np.zeros(n)  # instantaneous f0 per sample, 0 where not voiced
    noise_env = np.zeros(n)
    pos = 0
    while pos < n:
        kind = rng.choice(["voiced", "noise", "silence"], p=[0.6, 0.2, 0.2])
        length = int(SAMPLE_RATE * (rng.uniform(0.3, 1.2) if kind == "voiced" else rng.uniform(0.05, 0.3)))
        end = min(n, pos + length)
        t = np.arange(end - pos) / SAMPLE_RATE
        if kind == "voiced":
            base = rng.uniform(90.0, 400.0)
            glide = base * rng.uniform(-0.3, 0.3) * t / max(t[-1], 1e-3) if t.size else 0.0
            vibrato = base * 0.02 * np.sin(2 * np.pi * rng.uniform(4.0, 6.5) * t)
            f0_samples[pos:end] = base + glide + vibrato
        elif kind == "noise":
            noise_env[pos:end] = rng.uniform(0.02, 0.08)
        pos = end
    phase = 2 * np.pi * np.cumsum(f0_samples) / SAMPLE_RATE
    voiced = f0_samples > 0
    # Harmonics with a falling spectral tilt, faded in and out at segment edges to avoid clicks.
    tone = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 9))
    fade = np.convolve(voiced.astype(float), np.hanning(161) / np.hanning(161).sum(), mode="same")
    audio = 0.5 * tone * fade * voiced + noise_env * rng.standard_normal(n) + 1e-4 * rng.standard_normal(n)
    # Frame t is centred on sample 160 t (the STFT uses center=True); voiced only where the whole frame core is.
    centres = np.minimum(np.arange(n // HOP + 1) * HOP, n - 1)
    f0 = np.where(fade[centres] > 0.999, f0_samples[centres], 0.0)
    return Clip(audio.astype(np.float32), f0.astype(np.float32))


def clip(seconds: float, seed: int = 0, directory: Path | None = None) -> Clip:
    """The cached clip for (seconds, seed); generated and written atomically on first use."""
    directory = directory or cache_dir() / "audio"
    path = directory / f"clip-{seconds:g}s-seed{seed}.npz"
    if path.is_file():
        with np.load(path) as data:
            return Clip(data["audio"], data["f0"])
    c = generate(seconds, seed)
    buf = io.BytesIO()
    np.savez(buf, audio=c.audio, f0=c.f0)
    atomic_write_bytes(path, buf.getvalue())
    return c
