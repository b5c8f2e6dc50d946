"""float64 numpy log-mel: the yardstick both twins are compared against."""

from __future__ import annotations

import numpy as np

from rvc_bench.mel import CLAMP, HOP, N_FFT, mel_basis


def log_mel(audio: np.ndarray) -> np.ndarray:
    """[N] samples -> [128, N // 160 + 1] log-mel, computed in float64."""
    x = np.pad(np.asarray(audio, dtype=np.float64), N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(frames * window, axis=-1))  # [T, 513]
    mel = mel_basis().astype(np.float64) @ magnitude.T
    return np.log(np.maximum(mel, CLAMP))
