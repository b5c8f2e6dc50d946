"""RMVPE in MLX (spec §3), the twin of model_torch.py: same classes, same attribute names, channels-last inside.

Layout: the log-mel arrives as [B, T, 128] (channels-last from rvc_bench.mel.model_mlx); the U-Net runs on NHWC
images [B, T, 128, C] (T is the height, mel bins the width, exactly as torch's [B, C, T, 128]); the only transpose
is at the cnn -> BiGRU boundary, where features must be ordered channel * 128 + mel like torch's flatten.

The BiGRU holds two mlx.nn.GRU per layer (parameters mapped from torch by rvc_bench.layout.gru). Its recurrence is
the one sequential part: see `GRUStack` for how the per-step work is kept small.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from rvc_bench.checkpoints import load_mlx_module
from rvc_bench.mel.model_mlx import MelSpectrogram
from rvc_bench.rmvpe.config import PAD_MULTIPLE, THRESHOLD, RMVPEConfig, chunk_windows
from rvc_bench.rmvpe.decode import decode


class ConvBlockRes(nn.Module):
    """Two (conv3x3 -> BN -> ReLU) plus a shortcut (1x1 conv with bias when channels change), added at the end."""

    def __init__(self, in_channels: int, out_channels: int, eps: float = 1e-5):
        super().__init__()
        # A list keeps torch's Sequential indices (conv.0, conv.1, conv.3, conv.4) as the parameter names.
        self.conv = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm(out_channels, eps=eps),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm(out_channels, eps=eps),
            nn.ReLU(),
        ]
        self.is_shortcut = in_channels != out_channels
        if self.is_shortcut:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def __call__(self, x: mx.array) -> mx.array:  # [B, T, M, in] -> [B, T, M, out]
        y = x
        for layer in self.conv:
            y = layer(y)
        return y + (self.shortcut(x) if self.is_shortcut else x)


class ResEncoderBlock(nn.Module):
    """n_blocks ConvBlockRes, then (if kernel_size) AvgPool; returns the pre-pool tensor too (the U-Net skip)."""

    def __init__(self, in_channels, out_channels, kernel_size, n_blocks, eps=1e-5):
        super().__init__()
        self.conv = [ConvBlockRes(in_channels, out_channels, eps)] + [ConvBlockRes(out_channels, out_channels, eps)
                                                                      for _ in range(n_blocks - 1)]
        self.has_pool = kernel_size is not None
        if self.has_pool:
            self.pool = nn.AvgPool2d(kernel_size=tuple(kernel_size), stride=tuple(kernel_size))

    def __call__(self, x):
        for conv in self.conv:
            x = conv(x)
        if self.has_pool:
            return x, self.pool(x)  # skip [B, T, M, C], pooled [B, T/2, M/2, C]
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.bn = nn.BatchNorm(cfg.in_channels, eps=cfg.bn_eps)
        channels = [cfg.in_channels] + [cfg.en_out_channels * 2**i for i in range(cfg.en_de_layers)]
        self.layers = [ResEncoderBlock(channels[i], channels[i + 1], cfg.kernel_size, cfg.n_blocks, cfg.bn_eps)
                       for i in range(cfg.en_de_layers)]
        self.out_channel = channels[-1]

    def __call__(self, x):  # [B, T, 128, 1] -> [B, T/32, 4, 256], skips (finest first)
        x = self.bn(x)
        skips = []
        for layer in self.layers:
            skip, x = layer(x)
            skips.append(skip)
        return x, skips


class Intermediate(nn.Module):
    def __init__(self, in_channels, out_channels, n_inters, n_blocks, eps=1e-5):
        super().__init__()
        self.layers = [ResEncoderBlock(in_channels, out_channels, None, n_blocks, eps)] + [
            ResEncoderBlock(out_channels, out_channels, None, n_blocks, eps) for _ in range(n_inters - 1)]

    def __call__(self, x):  # [B, T/32, 4, 256] -> [B, T/32, 4, 512]
        for layer in self.layers:
            x = layer(x)
        return x


# Sub-pixel form of ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1). Output row 2m takes kernel row 1
# at input row m; output row 2m+1 takes kernel row 2 at input row m and kernel row 0 at input row m+1 (zero past
# the end, which is what output_padding adds). The same holds for columns, so each output phase (a, b) is a 2x2
# stride-1 convolution of the input padded by one row and column at the end; _PHASE_TAPS[a][d] is the kernel
# row (column) of phase a at offset d, None where that tap does not exist.
_PHASE_TAPS = ((1, None), (2, 0))
_ZERO_TAP = 9  # index of an appended zero tap in the flattened 3x3 kernel
_PHASE_INDEX = mx.array([[_ZERO_TAP if kh is None or kw is None else 3 * kh + kw
                          for kh in _PHASE_TAPS[a] for kw in _PHASE_TAPS[b]]
                         for a in (0, 1) for b in (0, 1)]).reshape(-1)  # [4 phases x 4 taps]


class ConvTranspose2d(nn.ConvTranspose2d):
    """mlx.nn.ConvTranspose2d (same parameters) with a fast path for MLX's CPU backend.

    The CPU backend routes any input-dilated (transposed) convolution to its naive reference loop, ~120 ms per
    RMVPE decoder level whatever its size. On CPU the k3/s2/p1/op1 case is instead computed as one ordinary 2x2
    convolution producing the four output phases as channels, then interleaved (depth-to-space): the same sums,
    fewer multiplies (16 taps per input pixel instead of 36). Other devices and configurations use MLX's op.
    """

    def __call__(self, x: mx.array) -> mx.array:
        if not (mx.default_device() == mx.cpu and self.weight.shape[1:3] == (3, 3) and tuple(self.stride) == (2, 2)
                and tuple(self.padding) == (1, 1) and tuple(self.output_padding) == (1, 1) and self.dilation == 1):
            return super().__call__(x)
        batch, height, width, _ = x.shape
        out, _, _, cin = self.weight.shape
        taps = mx.concatenate([self.weight.reshape(out, 9, cin), mx.zeros((out, 1, cin), x.dtype)], axis=1)
        w = mx.take(taps, _PHASE_INDEX, axis=1).reshape(out, 4, 2, 2, cin).swapaxes(0, 1).reshape(4 * out, 2, 2, cin)
        y = mx.conv2d(mx.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)]), w)  # [B, H, W, (a, b, out)]
        y = y.reshape(batch, height, width, 2, 2, out).transpose(0, 1, 3, 2, 4, 5)  # [B, H, a, W, b, out]
        y = y.reshape(batch, 2 * height, 2 * width, out)
        return y + self.bias if "bias" in self else y


class ResDecoderBlock(nn.Module):
    """ConvTranspose (x2 up, output_padding restores even sizes) -> BN -> ReLU, concat [up, skip], n_blocks ConvBlockRes."""

    def __init__(self, in_channels, out_channels, stride, n_blocks, eps=1e-5):
        super().__init__()
        output_padding = tuple(s - 1 for s in stride)
        self.conv1 = [
            ConvTranspose2d(in_channels, out_channels, 3, stride=tuple(stride), padding=1,
                               output_padding=output_padding, bias=False),
            nn.BatchNorm(out_channels, eps=eps),
            nn.ReLU(),
        ]
        self.conv2 = [ConvBlockRes(out_channels * 2, out_channels, eps)] + [
            ConvBlockRes(out_channels, out_channels, eps) for _ in range(n_blocks - 1)]

    def __call__(self, x, skip):  # [B, t, m, in], skip [B, 2t, 2m, out] -> [B, 2t, 2m, out]
        for layer in self.conv1:
            x = layer(x)
        x = mx.concatenate([x, skip], axis=-1)  # torch: cat on channels, [upsampled, skip]
        for conv in self.conv2:
            x = conv(x)
        return x


class Decoder(nn.Module):
    def __init__(self, in_channels, n_decoders, stride, n_blocks, eps=1e-5):
        super().__init__()
        channels = [in_channels // 2**i for i in range(n_decoders + 1)]
        self.layers = [ResDecoderBlock(channels[i], channels[i + 1], stride, n_blocks, eps) for i in range(n_decoders)]

    def __call__(self, x, skips):  # skips are consumed coarsest first
        for i, layer in enumerate(self.layers):
            x = layer(x, skips[-1 - i])
        return x


class DeepUnet(nn.Module):
    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.intermediate = Intermediate(self.encoder.out_channel, self.encoder.out_channel * 2, cfg.inter_layers,
                                         cfg.n_blocks, cfg.bn_eps)
        self.decoder = Decoder(self.encoder.out_channel * 2, cfg.en_de_layers, cfg.kernel_size, cfg.n_blocks, cfg.bn_eps)

    def __call__(self, x):  # [B, T, 128, 1] -> [B, T, 128, 16]
        x, skips = self.encoder(x)
        x = self.intermediate(x)
        return self.decoder(x, skips)


@mx.compile
def _gru_step(xp: mx.array, h: mx.array, wh_t: mx.array, bhn: mx.array) -> mx.array:
    """One step of both directions at once (torch gate order r, z, n).

    xp: [2, B, 3H] input projections with b already added; h: [2, B, H]; wh_t: [2, H, 3H]; bhn: [2, 1, H].
    Compiled, so the gate arithmetic after the one batched matmul is a single fused kernel.
    """
    hidden = h.shape[-1]
    hp = h @ wh_t  # [2, B, 3H]
    rz = mx.sigmoid(xp[..., : 2 * hidden] + hp[..., : 2 * hidden])
    r, z = rz[..., :hidden], rz[..., hidden:]
    n = mx.tanh(xp[..., 2 * hidden :] + r * (hp[..., 2 * hidden :] + bhn))
    return (1 - z) * n + z * h


class GRUStack(nn.Module):
    """torch's nn.GRU(bidirectional=True) as mlx.nn.GRU pairs named like torch's key suffixes: l0, l0_reverse, l1 ...

    Fast path (default): per layer, the input projections of both directions for all T steps are one matmul; the
    loop over time then does one batched [2, B, H] x [2, H, 3H] matmul and one fused gate kernel per step, running
    the forward direction at step i and the backward direction at step T-1-i together. `fused=False` calls the two
    mlx.nn.GRU modules as they are (two Python loops of ~10 ops per step); kept as the reference and for timing.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        for k in range(num_layers):
            size = input_size if k == 0 else 2 * hidden_size
            setattr(self, f"l{k}", nn.GRU(size, hidden_size))
            setattr(self, f"l{k}_reverse", nn.GRU(size, hidden_size))

    def __call__(self, x: mx.array, fused: bool = True) -> mx.array:  # [B, T, D] -> [B, T, 2H]
        for k in range(self.num_layers):
            fwd, bwd = self[f"l{k}"], self[f"l{k}_reverse"]
            if fused:
                x = _bidirectional(x, fwd, bwd)
            else:
                h0 = mx.zeros((x.shape[0], fwd.hidden_size), x.dtype)  # explicit zeros: see prior_art, mlx#3249
                x = mx.concatenate([fwd(x, h0), bwd(x[:, ::-1], h0)[:, ::-1]], axis=-1)
        return x


def _bidirectional(x: mx.array, fwd: nn.GRU, bwd: nn.GRU) -> mx.array:
    """[B, T, D] -> [B, T, 2H]: both directions of one layer in a single loop over time."""
    batch, steps, _ = x.shape
    hidden = fwd.hidden_size
    w_x = mx.concatenate([fwd.Wx, bwd.Wx], axis=0)  # [6H, D]
    b = mx.concatenate([fwd.b, bwd.b])  # [6H]
    xp = mx.addmm(b, x, w_x.T).reshape(batch, steps, 2, 3 * hidden)  # [B, T, 2, 3H], one matmul for all steps
    # Step-major, backward direction time-reversed, made contiguous once so each step reads one block.
    xp = mx.contiguous(mx.stack([xp[:, :, 0], xp[:, ::-1, 1]]).transpose(2, 0, 1, 3))  # [T, 2, B, 3H]
    wh_t = mx.stack([fwd.Wh.T, bwd.Wh.T])  # [2, H, 3H]
    bhn = mx.stack([fwd.bhn, bwd.bhn])[:, None, :]  # [2, 1, H]
    h = mx.zeros((2, batch, hidden), x.dtype)
    states = []
    for i in range(steps):
        h = _gru_step(xp[i], h, wh_t, bhn)
        states.append(h)
    hs = mx.stack(states)  # [T, 2, B, H]
    out = mx.concatenate([hs[:, 0], hs[::-1, 1]], axis=-1)  # [T, B, 2H]: forward | backward in input time order
    return out.transpose(1, 0, 2)


class BiGRU(nn.Module):
    def __init__(self, input_features, hidden_features, num_layers):
        super().__init__()
        self.gru = GRUStack(input_features, hidden_features, num_layers)

    def __call__(self, x, fused: bool = True):  # [B, T, 384] -> [B, T, 2H]
        return self.gru(x, fused)


class E2E(nn.Module):
    """Log-mel [B, T, 128] (T a multiple of 32) -> salience [B, T, 360]."""

    def __init__(self, cfg: RMVPEConfig):
        super().__init__()
        self.cfg = cfg
        self.unet = DeepUnet(cfg)
        self.cnn = nn.Conv2d(cfg.en_out_channels, 3, 3, padding=1)
        # List, not nn.Sequential, so the names are fc.0 / fc.1 as in torch (nn.Sequential would add ".layers").
        self.fc = [BiGRU(cfg.cnn_out, cfg.gru_hidden, cfg.n_gru), nn.Linear(2 * cfg.gru_hidden, cfg.n_bins),
                   nn.Dropout(0.25), nn.Sigmoid()]
        self.fused_gru = True

    def features(self, mel: mx.array) -> mx.array:
        """[B, T, 128] -> BiGRU input [B, T, 384] (feature index = channel * 128 + mel, as torch flattens)."""
        batch, steps, n_mels = mel.shape
        x = self.cnn(self.unet(mel[..., None]))  # [B, T, 128, 3]
        return x.transpose(0, 1, 3, 2).reshape(batch, steps, 3 * n_mels)  # the one layout change

    def head(self, x: mx.array) -> mx.array:
        x = self.fc[0](x, self.fused_gru)
        for layer in self.fc[1:]:
            x = layer(x)
        return x

    def __call__(self, mel: mx.array) -> mx.array:
        return self.head(self.features(mel))  # [B, T, 360]

    def mel2hidden(self, mel: mx.array, chunk_frames: int | None = None,
                   overlap_frames: int | None = None) -> mx.array:
        """[B, T, 128] -> [B, T, 360]: zero-pad T to a multiple of 32 in the log-mel domain, run, crop back to T.

        chunk_frames / overlap_frames: as in model_torch.E2E.mel2hidden. Each chunk is evaluated before the next
        is built, so only one chunk's activations are alive at a time.
        """
        n_frames = mel.shape[1]
        if chunk_frames is None:
            return self(_pad_frames(mel, n_frames))[:, :n_frames]
        overlap_frames = self.cfg.default_overlap if overlap_frames is None else overlap_frames
        out = []
        for lo, hi, keep_lo, keep_hi in chunk_windows(n_frames, chunk_frames, overlap_frames):
            kept = self(_pad_frames(mel[:, lo:hi], hi - lo))[:, keep_lo:keep_hi]
            mx.eval(kept)
            out.append(kept)
        return mx.concatenate(out, axis=1)


def _pad_frames(mel: mx.array, n_frames: int) -> mx.array:
    n_pad = -n_frames % PAD_MULTIPLE
    return mx.pad(mel, [(0, 0), (0, n_pad), (0, 0)]) if n_pad else mel


def load(source: str | os.PathLike | Mapping[str, np.ndarray], cfg: RMVPEConfig | None = None) -> E2E:
    """Converted weights -> E2E in eval mode (strict: every key, every shape; errors name the key).

    source: a .safetensors written by convert.convert_file (config read from its metadata), a torch rmvpe.pt
    (converted in memory), or a dict of MLX-layout numpy weights (then `cfg` is required).
    """
    from rvc_bench.checkpoints import config_from_metadata, load_safetensors
    from rvc_bench.layout import CheckpointError
    from rvc_bench.rmvpe import convert

    what = "RMVPE weights"
    if isinstance(source, (str, os.PathLike)):
        path, what = Path(source), str(source)
        if path.suffix == ".safetensors":
            weights, meta = load_safetensors(path)
            if cfg is None:
                if "config" not in meta:
                    raise CheckpointError(f"{path}: no RMVPE config in the safetensors metadata")
                cfg = config_from_metadata(RMVPEConfig.from_dict, meta, path)
        else:
            weights, cfg = convert.convert_checkpoint(path, cfg)
    else:
        if cfg is None:
            raise ValueError("an in-memory MLX weight dict needs its RMVPEConfig")
        weights = dict(source)
    model = E2E(cfg)
    load_mlx_module(model, weights, what)
    model.eval()
    return model


class RMVPE:
    """Audio (16 kHz mono float32) -> log-mel -> salience -> f0, as the RVC pipeline calls it."""

    def __init__(self, model: E2E, chunk_frames: int | None = None, overlap_frames: int | None = None):
        model.eval()
        self.model = model
        self.mel = MelSpectrogram()
        self.chunk_frames, self.overlap_frames = chunk_frames, overlap_frames

    def salience(self, audio: mx.array) -> mx.array:
        """[N] -> [T, 360], T = N // 160 + 1."""
        mel = self.mel(audio)[None]  # [1, T, 128]
        return self.model.mel2hidden(mel, self.chunk_frames, self.overlap_frames)[0]

    def __call__(self, audio: mx.array, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
        """[N] -> (salience [T, 360] float32, f0 [T] Hz float64, 0 = unvoiced), both numpy."""
        salience = np.array(self.salience(audio))
        return salience, decode(salience, threshold)
