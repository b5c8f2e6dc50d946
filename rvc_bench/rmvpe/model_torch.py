"""RMVPE in PyTorch (spec §3): DeepUnet + BiGRU + Linear + Sigmoid, the baseline twin.

Class and attribute names follow the upstream state dict of `rmvpe.pt`, so its weights load unchanged. The forward
pass performs the same operations as the reference (one transpose in, one out, nothing else), so it runs as fast as
the original on the same device. Files are read by convert.py; this module sees only numpy weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rvc_bench.checkpoints import load_torch_module
from rvc_bench.mel.model_torch import MelSpectrogram
from rvc_bench.rmvpe.config import PAD_MULTIPLE, THRESHOLD, RMVPEConfig, bounded_chunk, chunk_windows
from rvc_bench.rmvpe.decode import decode


def _chain(layers, x):
    """Apply `layers` in order (an nn.ModuleList keeps the upstream parameter names)."""
    for layer in layers:
        x = layer(x)
    return x


class ConvBlockRes(nn.Module):
    """Two (conv3x3 -> BN -> ReLU) plus a shortcut (1x1 conv with bias when channels change), added at the end."""

    def __init__(self, in_channels: int, out_channels: int, momentum: float = 0.01, eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(),
        )
        self.is_shortcut = in_channels != out_channels
        if self.is_shortcut:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in, T, M] -> [B, out, T, M]
        return self.conv(x) + (self.shortcut(x) if self.is_shortcut else x)


class ResEncoderBlock(nn.Module):
    """n_blocks ConvBlockRes, then (if kernel_size) AvgPool; returns the pre-pool tensor too (the U-Net skip)."""

    def __init__(self, in_channels, out_channels, kernel_size, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        self.conv = nn.ModuleList(
            ConvBlockRes(out_channels if i else in_channels, out_channels, momentum, eps) for i in range(n_blocks)
        )
        self.kernel_size = kernel_size
        if kernel_size is not None:
            self.pool = nn.AvgPool2d(kernel_size=kernel_size)

    def forward(self, x):
        x = _chain(self.conv, x)
        if self.kernel_size is not None:
            return x, self.pool(x)  # skip [B, C, T, M], pooled [B, C, T/2, M/2]
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.bn = nn.BatchNorm2d(cfg.in_channels, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        channels = [cfg.in_channels] + [cfg.en_out_channels * 2**i for i in range(cfg.en_de_layers)]
        self.layers = nn.ModuleList(
            ResEncoderBlock(channels[i], channels[i + 1], cfg.kernel_size, cfg.n_blocks, cfg.bn_momentum, cfg.bn_eps)
            for i in range(cfg.en_de_layers)
        )
        self.out_channel = channels[-1]

    def forward(self, x):  # [B, 1, T, 128] -> [B, 256, T/32, 4], skips (finest first)
        x = self.bn(x)
        skips = []
        for layer in self.layers:
            skip, x = layer(x)
            skips.append(skip)
        return x, skips


class Intermediate(nn.Module):
    def __init__(self, in_channels, out_channels, n_inters, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        self.layers = nn.ModuleList(
            ResEncoderBlock(out_channels if i else in_channels, out_channels, None, n_blocks, momentum, eps)
            for i in range(n_inters)
        )

    def forward(self, x):  # [B, 256, T/32, 4] -> [B, 512, T/32, 4]
        return _chain(self.layers, x)


class ResDecoderBlock(nn.Module):
    """ConvTranspose (x2 up, output_padding restores even sizes) -> BN -> ReLU, concat [up, skip], n_blocks
    ConvBlockRes."""

    def __init__(self, in_channels, out_channels, stride, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        output_padding = tuple(s - 1 for s in stride)
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(
                in_channels, out_channels, 3, stride=stride, padding=1, output_padding=output_padding, bias=False
            ),
            nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList(
            ConvBlockRes(out_channels if i else 2 * out_channels, out_channels, momentum, eps) for i in range(n_blocks)
        )

    def forward(self, x, skip):  # [B, in, t, m], skip [B, out, 2t, 2m] -> [B, out, 2t, 2m]
        return _chain(self.conv2, torch.cat((self.conv1(x), skip), dim=1))  # channels: [upsampled, skip]


class Decoder(nn.Module):
    def __init__(self, in_channels, n_decoders, stride, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        channels = [in_channels // 2**i for i in range(n_decoders + 1)]
        self.layers = nn.ModuleList(
            ResDecoderBlock(channels[i], channels[i + 1], stride, n_blocks, momentum, eps) for i in range(n_decoders)
        )

    def forward(self, x, skips):  # skips are consumed coarsest first
        for layer, skip in zip(self.layers, reversed(skips)):
            x = layer(x, skip)
        return x


class DeepUnet(nn.Module):
    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.intermediate = Intermediate(
            self.encoder.out_channel,
            self.encoder.out_channel * 2,
            cfg.inter_layers,
            cfg.n_blocks,
            cfg.bn_momentum,
            cfg.bn_eps,
        )
        self.decoder = Decoder(
            self.encoder.out_channel * 2, cfg.en_de_layers, cfg.kernel_size, cfg.n_blocks, cfg.bn_momentum, cfg.bn_eps
        )

    def forward(self, x):  # [B, 1, T, 128] -> [B, 16, T, 128]
        x, skips = self.encoder(x)
        x = self.intermediate(x)
        return self.decoder(x, skips)


class BiGRU(nn.Module):
    def __init__(self, input_features, hidden_features, num_layers):
        super().__init__()
        self.gru = nn.GRU(input_features, hidden_features, num_layers=num_layers, batch_first=True, bidirectional=True)

    def forward(self, x):  # [B, T, 384] -> [B, T, 2H] (forward | backward)
        return self.gru(x)[0]


class E2E(nn.Module):
    """Log-mel [B, 128, T] (T a multiple of 32) -> salience [B, T, 360]."""

    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.unet = DeepUnet(cfg)
        self.cnn = nn.Conv2d(cfg.en_out_channels, 3, 3, padding=1)
        self.fc = nn.Sequential(
            BiGRU(cfg.cnn_out, cfg.gru_hidden, cfg.n_gru),
            nn.Linear(2 * cfg.gru_hidden, cfg.n_bins),
            nn.Dropout(0.25),
            nn.Sigmoid(),
        )
        self.cfg = cfg  # read by mel2hidden and the runner (default overlap)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.fc(self.cnn_features(mel))  # [B, T, 360]

    def cnn_features(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, 128, T] -> [B, T, 384]: the convolutional part, whose receptive field is finite
        (config.receptive_field)."""
        x = mel.transpose(-1, -2).unsqueeze(1)  # [B, 1, T, 128]: T is the image height, mel bins the width
        return self.cnn(self.unet(x)).transpose(1, 2).flatten(-2)  # [B, 3, T, 128] -> [B, T, 3 * 128]

    def mel2hidden(
        self,
        mel: torch.Tensor,
        chunk_frames: int | None = None,
        overlap_frames: int | None = None,
        cut_gru: bool = False,
    ) -> torch.Tensor:
        """[B, 128, T] -> [B, T, 360]: zero-pad T to a multiple of 32 in the log-mel domain, run, crop back to T.

        chunk_frames: run the U-Net in windows of that many frames (a multiple of 32), each with `overlap_frames`
        (a multiple of 32; default cfg.default_overlap, the receptive field) of context per side that is run and
        dropped, then the BiGRU and the output layer over the whole sequence: the same numbers as one pass (the
        BiGRU's state spans the sequence, so no overlap could make chunks of it exact). cut_gru: the whole network
        per chunk instead, the BiGRU's state cut at every chunk (a measured variant only, never a default).
        """
        n_frames = mel.shape[-1]
        mel = pad_frames(mel, n_frames)
        if chunk_frames is None:
            return self.forward(mel)[:, :n_frames]
        overlap_frames = self.cfg.default_overlap if overlap_frames is None else overlap_frames
        run = self.forward if cut_gru else self.cnn_features
        parts = [
            run(mel[..., lo:hi])[:, keep_lo:keep_hi]
            for lo, hi, keep_lo, keep_hi in chunk_windows(mel.shape[-1], chunk_frames, overlap_frames)
        ]
        out = torch.cat(parts, dim=1)
        return (out if cut_gru else self.fc(out))[:, :n_frames]


def pad_frames(mel: torch.Tensor, n_frames: int) -> torch.Tensor:
    n_pad = -n_frames % PAD_MULTIPLE
    return F.pad(mel, (0, n_pad), mode="constant") if n_pad else mel


def build(cfg: RMVPEConfig) -> E2E:
    return E2E(cfg).eval().requires_grad_(False)


def load(weights: Mapping[str, np.ndarray], cfg: RMVPEConfig, what: str = "RMVPE (torch)") -> E2E:
    """E2E in eval mode holding `weights` (torch layout, numpy). Strict: every key consumed (num_batches_tracked
    included), every shape checked; errors name the key."""
    return load_torch_module(build(cfg), weights, what)


class RMVPE:
    """Audio (16 kHz mono float32) -> log-mel -> salience -> f0, as the RVC pipeline calls it."""

    def __init__(
        self, model: E2E, chunk_frames: int | None = None, overlap_frames: int | None = None, cut_gru: bool = False
    ):
        """chunk_frames, overlap_frames, cut_gru: inputs longer than one window of chunk_frames plus the overlap
        (default cfg.default_overlap) on each side run the U-Net in such chunks (config.bounded_chunk; see
        E2E.mel2hidden). Default None: the whole sequence in one call, as upstream runs it (the baseline must cost
        what upstream's code costs: chunks with context run up to 2x the U-Net's frames; torch's whole pass needs
        ~2 GiB at 5 min)."""
        self.model = model.eval()
        device = next(model.parameters()).device
        self.mel = MelSpectrogram().to(device)
        self.chunk_frames, self.overlap_frames, self.cut_gru = chunk_frames, overlap_frames, cut_gru

    def salience(self, audio: torch.Tensor) -> torch.Tensor:
        """[N] -> [T, 360], T = N // 160 + 1."""
        with torch.inference_mode():
            mel = self.mel(audio.unsqueeze(0))  # [1, 128, T]
            overlap = self.model.cfg.default_overlap if self.overlap_frames is None else self.overlap_frames
            chunk = bounded_chunk(mel.shape[-1], self.chunk_frames, overlap)
            return self.model.mel2hidden(mel, chunk, overlap, self.cut_gru)[0]

    def __call__(self, audio: torch.Tensor, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
        """[N] -> (salience [T, 360] float32, f0 [T] Hz float64, 0 = unvoiced), both numpy."""
        salience = self.salience(audio).cpu().numpy()
        return salience, decode(salience, threshold)
