"""RMVPE in MLX (spec §3), the twin of model_torch.py: same classes, same attribute names, channels-last inside.

Layout: the log-mel arrives as [B, T, 128] (channels-last from rvc_bench.mel.model_mlx); the U-Net runs on NHWC
images [B, T, 128, C] (T is the height, mel bins the width, exactly as torch's [B, C, T, 128]); the only transpose
is at the cnn -> BiGRU boundary, where features must be ordered channel * 128 + mel like torch's flatten.
The decoder's transposed convs and the BiGRU are the fast layers of rvc_bench.mlx_kernels (same parameters as the
stock ones). Files are read by convert.py; this module sees only numpy weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from rvc_bench.checkpoints import load_mlx_module
from rvc_bench.mel.model_mlx import MelSpectrogram
from rvc_bench.mlx_kernels import BidirectionalGRU, PhaseConvTranspose2d
from rvc_bench.rmvpe.config import CHUNK_FRAMES, PAD_MULTIPLE, THRESHOLD, RMVPEConfig, bounded_chunk, chunk_windows
from rvc_bench.rmvpe.decode import decode


def _chain(layers, x):
    """Apply `layers` in order (a list keeps torch's nn.Sequential / nn.ModuleList parameter names)."""
    for layer in layers:
        x = layer(x)
    return x


class ConvBlockRes(nn.Module):
    """Two (conv3x3 -> BN -> ReLU) plus a shortcut (1x1 conv with bias when channels change), added at the end."""

    def __init__(self, in_channels: int, out_channels: int, momentum: float = 0.01, eps: float = 1e-5):
        super().__init__()
        # A list keeps torch's Sequential indices (conv.0, conv.1, conv.3, conv.4) as the parameter names.
        self.conv = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(),
        ]
        self.is_shortcut = in_channels != out_channels
        if self.is_shortcut:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def __call__(self, x: mx.array) -> mx.array:  # [B, T, M, in] -> [B, T, M, out]
        return _chain(self.conv, x) + (self.shortcut(x) if self.is_shortcut else x)


class ResEncoderBlock(nn.Module):
    """n_blocks ConvBlockRes, then (if kernel_size) AvgPool; returns the pre-pool tensor too (the U-Net skip)."""

    def __init__(self, in_channels, out_channels, kernel_size, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        self.conv = [
            ConvBlockRes(out_channels if i else in_channels, out_channels, momentum, eps) for i in range(n_blocks)
        ]
        self.kernel_size = kernel_size
        if kernel_size is not None:
            self.pool = nn.AvgPool2d(kernel_size=kernel_size)

    def __call__(self, x):
        x = _chain(self.conv, x)
        if self.kernel_size is not None:
            return x, self.pool(x)  # skip [B, T, M, C], pooled [B, T/2, M/2, C]
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.bn = nn.BatchNorm(cfg.in_channels, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        channels = [cfg.in_channels] + [cfg.en_out_channels * 2**i for i in range(cfg.en_de_layers)]
        self.layers = [
            ResEncoderBlock(channels[i], channels[i + 1], cfg.kernel_size, cfg.n_blocks, cfg.bn_momentum, cfg.bn_eps)
            for i in range(cfg.en_de_layers)
        ]
        self.out_channel = channels[-1]

    def __call__(self, x):  # [B, T, 128, 1] -> [B, T/32, 4, 256], skips (finest first)
        x = self.bn(x)
        skips = []
        for layer in self.layers:
            skip, x = layer(x)
            skips.append(skip)
        return x, skips


class Intermediate(nn.Module):
    def __init__(self, in_channels, out_channels, n_inters, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        self.layers = [
            ResEncoderBlock(out_channels if i else in_channels, out_channels, None, n_blocks, momentum, eps)
            for i in range(n_inters)
        ]

    def __call__(self, x):  # [B, T/32, 4, 256] -> [B, T/32, 4, 512]
        return _chain(self.layers, x)


class ResDecoderBlock(nn.Module):
    """ConvTranspose (x2 up, output_padding restores even sizes) -> BN -> ReLU, concat [up, skip], n_blocks
    ConvBlockRes."""

    def __init__(self, in_channels, out_channels, stride, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        output_padding = tuple(s - 1 for s in stride)
        self.conv1 = [
            PhaseConvTranspose2d(
                in_channels, out_channels, 3, stride=stride, padding=1, output_padding=output_padding, bias=False
            ),
            nn.BatchNorm(out_channels, eps=eps, momentum=momentum),
            nn.ReLU(),
        ]
        self.conv2 = [
            ConvBlockRes(out_channels if i else 2 * out_channels, out_channels, momentum, eps) for i in range(n_blocks)
        ]

    def __call__(self, x, skip):  # [B, t, m, in], skip [B, 2t, 2m, out] -> [B, 2t, 2m, out]
        return _chain(self.conv2, mx.concatenate([_chain(self.conv1, x), skip], axis=-1))  # channels: [upsampled, skip]


class Decoder(nn.Module):
    def __init__(self, in_channels, n_decoders, stride, n_blocks, momentum=0.01, eps=1e-5):
        super().__init__()
        channels = [in_channels // 2**i for i in range(n_decoders + 1)]
        self.layers = [
            ResDecoderBlock(channels[i], channels[i + 1], stride, n_blocks, momentum, eps) for i in range(n_decoders)
        ]

    def __call__(self, x, skips):  # skips are consumed coarsest first
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

    def __call__(self, x):  # [B, T, 128, 1] -> [B, T, 128, 16]
        x, skips = self.encoder(x)
        x = self.intermediate(x)
        return self.decoder(x, skips)


class BiGRU(nn.Module):
    def __init__(self, input_features, hidden_features, num_layers):
        super().__init__()
        self.gru = BidirectionalGRU(input_features, hidden_features, num_layers)

    def __call__(self, x):  # [B, T, 384] -> [B, T, 2H] (forward | backward)
        return self.gru(x)


class E2E(nn.Module):
    """Log-mel [B, T, 128] (T a multiple of 32) -> salience [B, T, 360]."""

    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.unet = DeepUnet(cfg)
        self.cnn = nn.Conv2d(cfg.en_out_channels, 3, 3, padding=1)
        # List, not nn.Sequential, so the names are fc.0 / fc.1 as in torch (nn.Sequential would add ".layers").
        self.fc = [
            BiGRU(cfg.cnn_out, cfg.gru_hidden, cfg.n_gru),
            nn.Linear(2 * cfg.gru_hidden, cfg.n_bins),
            nn.Dropout(0.25),
            nn.Sigmoid(),
        ]
        self.cfg = cfg  # read by mel2hidden and the runner (default overlap)

    def __call__(self, mel: mx.array) -> mx.array:
        return _chain(self.fc, self.cnn_features(mel))  # [B, T, 360]

    def cnn_features(self, mel: mx.array) -> mx.array:
        """[B, T, 128] -> [B, T, 384]: the convolutional part, whose receptive field is finite
        (config.receptive_field)."""
        batch, steps, n_mels = mel.shape
        x = mel[..., None]  # [B, T, 128, 1]: T is the image height, mel bins the width
        return self.cnn(self.unet(x)).transpose(0, 1, 3, 2).reshape(batch, steps, 3 * n_mels)  # [B, T, 3 * 128]

    def mel2hidden(
        self, mel: mx.array, chunk_frames: int | None = None, overlap_frames: int | None = None, cut_gru: bool = False
    ) -> mx.array:
        """[B, T, 128] -> [B, T, 360]: zero-pad T to a multiple of 32 in the log-mel domain, run, crop back to T.

        chunk_frames: run the U-Net in windows of that many frames (a multiple of 32), each with `overlap_frames`
        (a multiple of 32; default cfg.default_overlap, the receptive field) of context per side that is run and
        dropped, then the BiGRU and the output layer over the whole sequence: the same numbers as one pass (the
        BiGRU's state spans the sequence, so no overlap could make chunks of it exact). Each window is evaluated
        before the next is built, so only one window's activations are alive at a time. cut_gru: the whole network
        per chunk instead, the BiGRU's state cut at every chunk (a measured variant only, never a default).
        """
        n_frames = mel.shape[1]
        mel = pad_frames(mel, n_frames)
        if chunk_frames is None:
            return self(mel)[:, :n_frames]
        overlap_frames = self.cfg.default_overlap if overlap_frames is None else overlap_frames
        run = self.__call__ if cut_gru else self.cnn_features
        parts = []
        for lo, hi, keep_lo, keep_hi in chunk_windows(mel.shape[1], chunk_frames, overlap_frames):
            parts.append(run(mel[:, lo:hi])[:, keep_lo:keep_hi])
            mx.eval(parts[-1])
        out = mx.concatenate(parts, axis=1)
        return (out if cut_gru else _chain(self.fc, out))[:, :n_frames]


def pad_frames(mel: mx.array, n_frames: int) -> mx.array:
    n_pad = -n_frames % PAD_MULTIPLE
    return mx.pad(mel, [(0, 0), (0, n_pad), (0, 0)]) if n_pad else mel


def build(cfg: RMVPEConfig) -> E2E:
    return E2E(cfg).eval()


def load(weights: Mapping[str, np.ndarray], cfg: RMVPEConfig, what: str = "RMVPE (mlx)") -> E2E:
    """E2E in eval mode holding `weights` (MLX layout, numpy). Strict: every key, every shape; errors name the key."""
    return load_mlx_module(build(cfg), weights, what)


class RMVPE:
    """Audio (16 kHz mono float32) -> log-mel -> salience -> f0, as the RVC pipeline calls it."""

    def __init__(
        self,
        model: E2E,
        chunk_frames: int | None = CHUNK_FRAMES,
        overlap_frames: int | None = None,
        cut_gru: bool = False,
    ):
        """chunk_frames, overlap_frames, cut_gru: inputs longer than one window of chunk_frames plus the overlap
        (default cfg.default_overlap) on each side run the U-Net in such chunks (config.bounded_chunk; see
        E2E.mel2hidden); chunk_frames=None: always the whole sequence in one call. Bounded by default on MLX only:
        its whole pass peaks at 13.5 GiB at 5 min (torch's at ~2 GiB), so torch and ONNX Runtime default to whole,
        as upstream."""
        self.model = model.eval()
        self.mel = MelSpectrogram()
        self.chunk_frames, self.overlap_frames, self.cut_gru = chunk_frames, overlap_frames, cut_gru

    def salience(self, audio: mx.array) -> mx.array:
        """[N] -> [T, 360], T = N // 160 + 1."""
        mel = self.mel(audio)[None]  # [1, T, 128]
        overlap = self.model.cfg.default_overlap if self.overlap_frames is None else self.overlap_frames
        chunk = bounded_chunk(mel.shape[1], self.chunk_frames, overlap)
        return self.model.mel2hidden(mel, chunk, overlap, self.cut_gru)[0]

    def __call__(self, audio: mx.array, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
        """[N] -> (salience [T, 360] float32, f0 [T] Hz float64, 0 = unvoiced), both numpy."""
        salience = np.array(self.salience(audio))
        return salience, decode(salience, threshold)
