"""Log-mel front end of RMVPE (spec §3): |STFT| (n_fft 1024, hop 160, periodic Hann, reflect pad 512), an HTK mel
filterbank of 128 bands between 30 and 8000 Hz with Slaney area normalisation, then ln(max(mel, 1e-5))."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_FFT = 1024  # samples (64 ms at 16 kHz)
HOP = 160  # samples (10 ms)
N_MELS = 128
FMIN, FMAX = 30.0, 8000.0  # Hz
SAMPLE_RATE = 16000
CLAMP = 1e-5  # floor before the log


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


@lru_cache(maxsize=None)
def mel_basis() -> np.ndarray:
    """[128, 513] float32: triangles on the HTK mel scale, each scaled to unit area (librosa's norm="slaney")."""
    fft_freqs = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(FMIN), _hz_to_mel(FMAX), N_MELS + 2))
    widths = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (mel_freqs[2:] - mel_freqs[:-2]))[:, None]
    return weights.astype(np.float32)


def n_frames(n_samples: int) -> int:
    return n_samples // HOP + 1
