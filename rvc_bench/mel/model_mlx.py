"""MLX log-mel with mx.fft.rfft; channels-last output [T, 128], the layout the MLX RMVPE consumes."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from rvc_bench.mel import CLAMP, HOP, N_FFT, mel_basis


class MelSpectrogram(nn.Module):
    def __init__(self):
        super().__init__()
        # Constants, not parameters: kept out of parameters() so weight loading ignores them.
        self._basis_t = mx.array(mel_basis().T)  # [513, 128]
        self._window = mx.array((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32))

    def __call__(self, audio: mx.array) -> mx.array:
        """[N] -> [T, 128], T = N // 160 + 1."""
        pad = N_FFT // 2
        if audio.shape[0] <= pad:
            raise ValueError(f"reflect padding needs more than {pad} samples, got {audio.shape[0]}")
        x = mx.concatenate([audio[1 : pad + 1][::-1], audio, audio[-pad - 1 : -1][::-1]])
        n_frames = (x.shape[0] - N_FFT) // HOP + 1
        frames = mx.as_strided(x, shape=(n_frames, N_FFT), strides=(HOP, 1))  # [T, 1024], a view
        magnitude = mx.abs(mx.fft.rfft(frames * self._window, axis=-1))  # [T, 513]
        return mx.log(mx.maximum(magnitude @ self._basis_t, CLAMP))
