"""Synthesizer twin in MLX (spec §5), channels-last [B, T, C] throughout.

Same class, module and parameter names as model_torch.py (= upstream state-dict names), so conversion is layout
only (convert.py reads the files; this module sees only numpy weights). Inputs and outputs are channels-last: phone
[B, T, C], eps [B, T, inter], audio [B, T * upp, 1]; nothing inside transposes between NCL and NLC. Channel splits,
flips and concatenations act on the last axis.

Two choices differ from the torch twin's op sequence, not its numbers:
- relative attention gathers the 2W+1 window directly (take_along_axis) instead of skewing [T, 2T-1] matrices;
- the dilated convs and the ConvTranspose1d upsamplers are the layers of rvc_bench.mlx_kernels (same parameters as
  the stock ones), which run them as plain stride-1 convs on the CPU, where MLX has no fast kernel for either.
On the CPU device the decoder's filter also runs in time tiles by default (`Synthesizer.tile_frames`, tiling.py):
MLX's CPU convs unfold their inputs, and one pass over a 41 s window needs more than 24 GB. The torch twin can tile
too (off by default there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from rvc_bench.checkpoints import load_mlx_module
from rvc_bench.mlx_kernels import PolyphaseConvTranspose1d, SpaceToBatchConv1d, on_cpu
from rvc_bench.synth import tiling
from rvc_bench.synth.config import (
    FLOW_DILATION_RATE,
    FLOW_KERNEL,
    FLOW_LAYERS,
    LRELU_SLOPE,
    LRELU_SLOPE_POST,
    N_FLOWS,
    NOISE_STD,
    PRIOR_NOISE_SCALE,
    SINE_AMP,
    WINDOW_SIZE,
    SynthConfig,
    stream_heads,
)


def sequence_mask(lengths: mx.array, t: int) -> mx.array:
    return mx.arange(t)[None, :] < lengths[:, None]  # [B, T] bool


def _masked(x, mask):
    return x if mask is None else x * mask


# ---- text encoder (attentions) ---------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """LayerNorm over channels (the last axis here); parameters named gamma/beta as upstream."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = mx.ones((channels,))
        self.beta = mx.zeros((channels,))

    def __call__(self, x):  # [B, T, C]
        return mx.fast.layer_norm(x, self.gamma, self.beta, self.eps)


def relative_indices(t: int, w: int = WINDOW_SIZE):
    """Gather indices for windowed relative attention over T frames.

    key_idx [T, T]: column of the [.., 2W+2] relative-logit matrix for pair (i, j): j - i + W inside the window,
    else 2W+1 (a zero column). val_idx, val_ok [T, 2W+1]: for window slot r, the key j = i + r - W (clipped) and
    whether it exists.
    """
    i = mx.arange(t)[:, None]
    rel = mx.arange(t)[None, :] - i + w  # [T, T]
    key_idx = mx.where((rel >= 0) & (rel <= 2 * w), rel, 2 * w + 1)
    j = i + mx.arange(2 * w + 1)[None, :] - w  # [T, 2W+1]
    val_ok = ((j >= 0) & (j < t)).astype(mx.float32)
    return key_idx, mx.clip(j, 0, t - 1), val_ok


class MultiHeadAttention(nn.Module):
    """Self-attention with windowed relative position embeddings shared across heads (closed form of spec §5.2)."""

    def __init__(self, channels: int, n_heads: int, window_size: int = WINDOW_SIZE):
        super().__init__()
        self.n_heads, self.window_size = n_heads, window_size
        self.k_channels = channels // n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.emb_rel_k = mx.zeros((1, 2 * window_size + 1, self.k_channels))
        self.emb_rel_v = mx.zeros((1, 2 * window_size + 1, self.k_channels))

    def __call__(self, x, attn_mask, indices):  # x [B, T, C]; attn_mask [B, 1, T, T] bool or None
        b, t, c = x.shape
        key_idx, val_idx, val_ok = indices

        def heads(y):  # [B, T, C] -> [B, H, T, d]; channel index = head * d + k
            return y.reshape(b, t, self.n_heads, self.k_channels).transpose(0, 2, 1, 3)

        q = heads(self.conv_q(x)) / math.sqrt(self.k_channels)
        k, v = heads(self.conv_k(x)), heads(self.conv_v(x))
        rel = q @ self.emb_rel_k[0].T  # [B, H, T, 2W+1]: q_i . E_k[r]
        rel = mx.pad(rel, [(0, 0), (0, 0), (0, 0), (0, 1)])  # slot 2W+1 = 0 for pairs outside the window
        scores = q @ k.transpose(0, 1, 3, 2) + mx.take_along_axis(rel, key_idx[None, None], axis=-1)
        if attn_mask is not None:
            scores = mx.where(attn_mask, scores, -1e4)
        p = mx.softmax(scores, axis=-1)  # [B, H, T, T]
        p_rel = mx.take_along_axis(p, val_idx[None, None], axis=-1) * val_ok  # [B, H, T, 2W+1]: p(i, i + r - W)
        out = p @ v + p_rel @ self.emb_rel_v[0]  # [B, H, T, d]
        return self.conv_o(out.transpose(0, 2, 1, 3).reshape(b, t, c))


class FFN(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel_size: int):
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size, padding=kernel_size // 2)

    def __call__(self, x, x_mask):  # [B, T, C], [B, T, 1] or None
        x = nn.relu(self.conv_1(_masked(x, x_mask)))
        return _masked(self.conv_2(_masked(x, x_mask)), x_mask)


class Encoder(nn.Module):
    """Post-norm transformer: x = LN1(x + MHA(x)); x = LN2(x + FFN(x))."""

    def __init__(self, hidden: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int):
        super().__init__()
        self.attn_layers = [MultiHeadAttention(hidden, n_heads) for _ in range(n_layers)]
        self.norm_layers_1 = [LayerNorm(hidden) for _ in range(n_layers)]
        self.ffn_layers = [FFN(hidden, filter_channels, kernel_size) for _ in range(n_layers)]
        self.norm_layers_2 = [LayerNorm(hidden) for _ in range(n_layers)]

    def __call__(self, x, x_mask):  # [B, T, C], [B, T, 1] or None
        attn_mask = None
        if x_mask is not None:
            valid = x_mask[..., 0] > 0  # [B, T]
            attn_mask = (valid[:, :, None] & valid[:, None, :])[:, None]  # [B, 1, T, T]
        indices = relative_indices(x.shape[1], self.attn_layers[0].window_size)  # shared by every layer
        x = _masked(x, x_mask)
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm1(x + attn(x, attn_mask, indices))
            x = norm2(x + ffn(x, x_mask))
        return _masked(x, x_mask)


class TextEncoder(nn.Module):
    """enc_p: content features (+ coarse pitch) -> prior mean m_p and log-std logs_p, [B, T, inter] each."""

    def __init__(self, cfg: SynthConfig):
        super().__init__()
        self.hidden = cfg.hidden_channels
        self.emb_phone = nn.Linear(cfg.phone_channels, cfg.hidden_channels)
        if cfg.f0:
            self.emb_pitch = nn.Embedding(256, cfg.hidden_channels)
        self.encoder = Encoder(cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size)
        self.proj = nn.Conv1d(cfg.hidden_channels, 2 * cfg.inter_channels, 1)

    def __call__(self, phone, pitch, x_mask, head: int = 0):  # [B, T, C], [B, T] int or None, [B, T, 1] or None
        """head: frames dropped before proj (streaming: attention still sees all T frames)."""
        x = self.emb_phone(phone)
        if pitch is not None:
            x = x + self.emb_pitch(pitch)
        x = nn.leaky_relu(x * math.sqrt(self.hidden), LRELU_SLOPE)
        x = self.encoder(_masked(x, x_mask), x_mask)
        if head:
            x, x_mask = x[:, head:], None if x_mask is None else x_mask[:, head:]
        m, logs = mx.split(_masked(self.proj(x), x_mask), 2, axis=-1)
        return m, logs


# ---- flow (modules) --------------------------------------------------------------------------------------------


class WN(nn.Module):
    """WaveNet-style gated stack with a global condition g (speaker); returns the sum of skip outputs."""

    def __init__(self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int):
        super().__init__()
        self.hidden, self.n_layers = hidden, n_layers
        self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = []
        self.res_skip_layers = []
        for i in range(n_layers):
            d = dilation_rate**i
            self.in_layers.append(
                SpaceToBatchConv1d(hidden, 2 * hidden, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)
            )
            self.res_skip_layers.append(nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1))

    def __call__(self, x, x_mask, g):  # [B, T, H], [B, T, 1] or None, [B, 1, gin]
        h = self.hidden
        g = self.cond_layer(g)  # [B, 1, 2H * L]
        output = mx.zeros_like(x)
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x) + g[..., 2 * h * i : 2 * h * (i + 1)]
            acts = mx.tanh(a[..., :h]) * mx.sigmoid(a[..., h:])
            rs = res_skip(acts)
            if i < self.n_layers - 1:
                x = _masked(x + rs[..., :h], x_mask)
                output = output + rs[..., h:]
            else:
                output = output + rs
        return _masked(output, x_mask)


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling; only the inverse (inference) direction is implemented."""

    def __init__(self, channels: int, hidden: int, gin_channels: int):
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WN(hidden, FLOW_KERNEL, FLOW_DILATION_RATE, FLOW_LAYERS, gin_channels)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def __call__(self, x, x_mask, g):  # reverse=True
        x0, x1 = x[..., : self.half], x[..., self.half :]
        h = _masked(self.pre(x0), x_mask)
        m = _masked(self.post(self.enc(h, x_mask, g)), x_mask)
        return mx.concatenate([x0, _masked(x1 - m, x_mask)], axis=-1)


class Flip(nn.Module):
    def __call__(self, x, x_mask, g):
        return x[..., ::-1]


class ResidualCouplingBlock(nn.Module):
    """flows = [Coupling, Flip] x 4 (couplings at flows.0/2/4/6); inference runs the list backwards."""

    def __init__(self, channels: int, hidden: int, gin_channels: int):
        super().__init__()
        self.flows = []
        for _ in range(N_FLOWS):
            self.flows.append(ResidualCouplingLayer(channels, hidden, gin_channels))
            self.flows.append(Flip())

    def __call__(self, x, x_mask, g):  # reverse=True
        for flow in reversed(self.flows):
            x = flow(x, x_mask, g)
        return x


# ---- decoder (HiFi-GAN / NSF) ------------------------------------------------------------------------------------


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with LeakyReLU(0.1) before each conv and a residual add around each pair."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...]):
        super().__init__()
        self.convs1 = [
            SpaceToBatchConv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)
            for d in dilation
        ]
        self.convs2 = [nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilation]

    def __call__(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = c2(nn.leaky_relu(c1(nn.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)) + x
        return x


class SineGen(nn.Module):
    """Harmonic source; same closed-form phase as the torch twin (see model_torch.SineGen for the derivation).

    The per-frame phase offsets are computed in float64 on the CPU stream (Metal has no float64); they are [B, T].
    """

    def __init__(self, sr: int, upp: int):
        super().__init__()
        self.sr, self.upp = sr, upp

    def __call__(self, f0, noise=None):  # [B, T] Hz; noise [B, T * upp] standard normal or None (drawn)
        b, t = f0.shape
        rad = mx.remainder(f0 / self.sr, 1.0)  # [B, T] cycles per sample
        with mx.stream(mx.cpu):  # float64 runs on the CPU only; [B, T] is small
            rad64 = mx.remainder(f0.astype(mx.float64) / self.sr, 1.0)
            start = mx.cumsum(rad64, axis=1, inclusive=False) * self.upp
            start = (start - mx.floor(start)).astype(mx.float32)  # [B, T] phase at each frame start
        phase = rad[..., None] * mx.arange(1, self.upp + 1, dtype=mx.float32) + start[..., None]  # [B, T, upp]
        phase = phase - mx.floor(phase)
        sine = SINE_AMP * mx.sin(2 * math.pi * phase)
        uv = (f0 > 0).astype(f0.dtype)[..., None]  # [B, T, 1], held over the frame
        noise = mx.random.normal(sine.shape) if noise is None else noise.reshape(b, t, self.upp)
        noise_amp = uv * NOISE_STD + (1 - uv) * (SINE_AMP / 3)
        e = sine * uv + noise_amp * noise
        return e.reshape(b, t * self.upp, 1)  # [B, T * upp, 1]


class SourceModuleHnNSF(nn.Module):
    def __init__(self, sr: int, upp: int):
        super().__init__()
        self.l_sin_gen = SineGen(sr, upp)
        self.l_linear = nn.Linear(1, 1)

    def __call__(self, f0, noise=None):
        return mx.tanh(self.l_linear(self.l_sin_gen(f0, noise)))  # [B, T * upp, 1]


class Generator(nn.Module):
    """dec: HiFi-GAN. With `f0` (GeneratorNSF) each stage also adds a strided conv of the harmonic source."""

    def __init__(self, cfg: SynthConfig):
        super().__init__()
        uic = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.inter_channels, uic, 7, padding=3)
        self.ups = []
        self.resblocks = []
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            ch = cfg.stage_channels[i]
            self.ups.append(PolyphaseConvTranspose1d(uic // 2**i, ch, k, u, padding=(k - u) // 2))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(ch, rk, rd))
        self.conv_post = nn.Conv1d(cfg.stage_channels[-1], 1, 7, padding=3, bias=False)
        self.cond = nn.Conv1d(cfg.gin_channels, uic, 1)
        self.upp, self.context = cfg.upp, tiling.context(cfg)
        if cfg.f0:
            self.m_source = SourceModuleHnNSF(cfg.sr, cfg.upp)
            last = len(cfg.upsample_rates) - 1  # the last stage is already at the output rate: a 1x1 conv
            self.noise_convs = [
                nn.Conv1d(1, ch, 2 * s, stride=s, padding=s // 2) if i < last else nn.Conv1d(1, ch, 1)
                for i, (ch, s) in enumerate(zip(cfg.stage_channels, cfg.noise_strides))
            ]

    def __call__(self, x, g, f0=None, noise=None, intermediates=None, tile_frames=None):
        """z [B, T, inter], g [B, 1, gin], f0 [B, T] -> audio [B, T * upp, 1]. tile_frames (0/None: off): run the
        filter over tiles of that many frames plus its context (tiling.py); the source always spans the whole T."""
        har = None
        if f0 is not None:
            har = self.m_source(f0, noise)  # [B, T * upp, 1]
            if intermediates is not None:
                intermediates["har"] = har
        upp, outs = self.upp, []
        for lo, a, b, hi in tiling.spans(x.shape[1], tile_frames, self.context):
            y = self.filter(x[:, lo:hi], g, None if har is None else har[:, lo * upp : hi * upp])
            outs.append(y[:, (a - lo) * upp : (b - lo) * upp])
            if b < x.shape[1]:
                mx.eval(outs[-1])  # one tile's activations in memory at a time
        return outs[0] if len(outs) == 1 else mx.concatenate(outs, axis=1)

    def filter(self, x, g, har=None):  # z [B, T, inter], g [B, 1, gin], har [B, T * upp, 1] -> [B, T * upp, 1]
        x = self.conv_pre(x) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(nn.leaky_relu(x, LRELU_SLOPE))
            if har is not None:
                x = x + self.noise_convs[i](har)
            rbs = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = rbs[0](x)
            for rb in rbs[1:]:
                xs = xs + rb(x)
            x = xs / self.num_kernels
        x = self.conv_post(nn.leaky_relu(x, LRELU_SLOPE_POST))  # default slope here, not 0.1
        return mx.tanh(x)


# ---- synthesizer (models) --------------------------------------------------------------------------------------


class Synthesizer(nn.Module):
    """SynthesizerTrnMs{256,768}NSFsid[_nono] at inference: enc_p, flow, dec, emb_g (enc_q is not part of it)."""

    def __init__(self, cfg: SynthConfig):
        super().__init__()
        self.cfg = cfg
        self.enc_p = TextEncoder(cfg)
        self.dec = Generator(cfg)
        self.flow = ResidualCouplingBlock(cfg.inter_channels, cfg.hidden_channels, cfg.gin_channels)
        self.emb_g = nn.Embedding(cfg.spk_embed_dim, cfg.gin_channels)
        self.tile_frames = tiling.TILE_FRAMES_CPU if on_cpu() else None  # decoder tiles (tiling.py); 0/None: off

    def infer(
        self,
        phone,
        phone_lengths=None,
        pitch=None,
        nsff0=None,
        sid=None,
        eps=None,
        sine_noise=None,
        return_intermediates: bool = False,
        skip_head: int | None = None,
        return_length: int | None = None,
    ):
        """phone [B, T, C] float, phone_lengths [B] int or None (all valid), pitch [B, T] int and nsff0 [B, T] Hz
        (pitch models only), sid [B] int (default speaker 0); eps [B, T, inter] and sine_noise [B, T * upp] replace
        the random draws (zeros make the output deterministic). Returns audio [B, T * upp, 1], or
        (audio, intermediates). Streaming (rt spec §4.5): skip_head and return_length return only frames
        [skip_head, skip_head + return_length) (audio [B, return_length * upp, 1]); the flow runs from
        fh = skip_head - FLOW_CONTEXT, so eps is [B, T - fh, inter] and sine_noise [B, return_length * upp]."""
        if self.cfg.f0 and (pitch is None or nsff0 is None):
            raise ValueError("this is a pitch model: pass pitch and nsff0")
        fh, dh = stream_heads(skip_head, return_length)
        z, x_mask, g, (m_p, logs_p) = self.prior(phone, phone_lengths, pitch, sid, eps, fh)
        if skip_head is not None:
            z, x_mask = z[:, dh : dh + return_length], None if x_mask is None else x_mask[:, dh : dh + return_length]
            nsff0 = None if nsff0 is None else nsff0[:, skip_head : skip_head + return_length]
        inter = {} if return_intermediates else None
        audio = self.dec(_masked(z, x_mask), g, nsff0 if self.cfg.f0 else None, sine_noise, inter, self.tile_frames)
        if inter is None:
            return audio
        inter.update(m_p=m_p, logs_p=logs_p, z=z, audio=audio)
        return audio, inter

    def prior(self, phone, phone_lengths=None, pitch=None, sid=None, eps=None, fh: int = 0):
        """The decoder's input from frame fh on: (z [B, T - fh, inter], its mask [B, T - fh, 1] or None, g
        [B, 1, gin], (m_p, logs_p)); arguments as infer's."""
        b, t = phone.shape[:2]
        if sid is None:
            sid = mx.zeros((b,), dtype=mx.int32)
        x_mask = None
        if phone_lengths is not None:
            x_mask = sequence_mask(phone_lengths, t)[..., None].astype(phone.dtype)  # [B, T, 1]
        g = self.emb_g(sid)[:, None, :]  # [B, 1, gin]
        m_p, logs_p = self.enc_p(phone, pitch if self.cfg.f0 else None, x_mask, fh)
        if fh and x_mask is not None:
            x_mask = x_mask[:, fh:]
        eps = mx.random.normal(m_p.shape) if eps is None else eps
        z_p = _masked(m_p + mx.exp(logs_p) * eps * PRIOR_NOISE_SCALE, x_mask)
        return self.flow(z_p, x_mask, g), x_mask, g, (m_p, logs_p)


def build(cfg: SynthConfig) -> Synthesizer:
    return Synthesizer(cfg).eval()


def load(weights: Mapping[str, np.ndarray], cfg: SynthConfig, what: str = "synthesizer (mlx)") -> Synthesizer:
    """A Synthesizer with `weights` (MLX layout, weight norm folded, numpy) loaded strictly, in eval mode."""
    return load_mlx_module(build(cfg), weights, what)


# ---- stage boundary: numpy in, numpy out -------------------------------------------------------------------------


def prepare(inputs) -> dict:
    """SynthInputs (time-major numpy) -> infer() keyword arguments, batch 1."""
    a = lambda x: mx.array(np.ascontiguousarray(x))[None]  # noqa: E731
    return dict(
        phone=a(inputs.phone),
        pitch=a(inputs.pitch),
        nsff0=a(inputs.pitchf),
        eps=a(inputs.eps),
        sine_noise=a(inputs.sine_noise),
    )


def run(model: Synthesizer, inputs) -> dict:
    """One deterministic call; returns audio [T * upp], har [T * upp] (pitch models), m_p, logs_p, z [T, inter]."""
    _, inter = model.infer(**prepare(inputs), return_intermediates=True)
    mx.eval(inter)
    return {k: (np.array(v[0]) if k in ("m_p", "logs_p", "z") else np.array(v).reshape(-1)) for k, v in inter.items()}
