"""PyTorch log-mel, as RVC's RMVPE front end computes it (torch.stft, magnitude, mel matmul, log)."""

from __future__ import annotations

import torch
from torch import nn

from rvc_bench.mel import CLAMP, HOP, N_FFT, mel_basis


class MelSpectrogram(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mel_basis", torch.from_numpy(mel_basis()), persistent=False)  # [128, 513]
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)  # periodic

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """[N] or [B, N] -> [128, T] or [B, 128, T], T = N // 160 + 1."""
        spec = torch.stft(
            audio,
            N_FFT,
            hop_length=HOP,
            win_length=N_FFT,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        magnitude = spec.abs()  # [.., 513, T]
        return torch.log(torch.clamp(torch.matmul(self.mel_basis, magnitude), min=CLAMP))
