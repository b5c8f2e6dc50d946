"""Synthesizer twin in PyTorch, the baseline (spec §5): TextEncoder -> prior sample -> reversed flow -> decoder.

Layout is upstream's, channels-first [B, C, T], and so are module and parameter names, so a voice checkpoint loads
after weight norm is folded (convert.py, which reads the files; this module sees only numpy weights). The numerics
follow upstream op for op, with three deliberate differences:
- weight norm is folded once at load time instead of recomputed on every call (same weights, less work);
- the SineGen phase is computed in its closed form (see `SineGen`), which is the same signal as upstream's
  cumsum / linear-interpolation / wrap-detection formulation, without its float32 accumulation error;
- `phone_lengths=None` means "all frames valid" and skips the mask multiplications, which are identities then
  (the pipeline always passes full-length chunks of batch 1).
Randomness is injectable: `eps` ([B, T, inter]) and `sine_noise` ([B, T * upp]) replace the two draws that matter.
Every input of `Synthesizer.infer` is time-major, as in the MLX twin; the channels-first layout starts inside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rvc_bench.checkpoints import load_torch_module
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


def sequence_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]  # [B, T] bool


def _masked(x, mask):
    return x if mask is None else x * mask


# ---- text encoder (attentions) ---------------------------------------------------------------------------------


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T]; parameters named gamma/beta as upstream."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):  # [B, C, T]
        x = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class MultiHeadAttention(nn.Module):
    """Self-attention with windowed relative position embeddings shared across heads (keys and values).

    Closed form: logit(i, j) = q_i.k_j / sqrt(d) + q_i.E_k[j - i + W] / sqrt(d) for |j - i| <= W; output_i =
    sum_j p(i, j) (v_j + E_v[j - i + W]). Computed, as upstream, on relative axes of length 2T - 1 that are skewed
    into [T, T] by pad-and-reshape (rel_to_abs / abs_to_rel).
    """

    def __init__(self, channels: int, n_heads: int, window_size: int = WINDOW_SIZE):
        super().__init__()
        self.n_heads, self.window_size = n_heads, window_size
        self.k_channels = channels // n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window_size + 1, self.k_channels))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window_size + 1, self.k_channels))

    def _relative_embeddings(self, emb, t: int):
        """[1, 2W+1, d] -> [1, 2T-1, d]: index m is relative position m - (T-1); zero outside the window."""
        w = self.window_size
        pad = max(t - (w + 1), 0)
        start = max((w + 1) - t, 0)
        if pad > 0:
            emb = F.pad(emb, (0, 0, pad, pad))
        return emb[:, start : start + 2 * t - 1]

    @staticmethod
    def _rel_to_abs(x):
        """[B, H, T, 2T-1] (relative index m) -> [B, H, T, T] with out[i, j] = x[i, j - i + T - 1]."""
        b, h, t, _ = x.shape
        x = F.pad(x, (0, 1)).view(b, h, 2 * t * t)  # rows of 2T: shifting by one extra column per row skews them
        x = F.pad(x, (0, t - 1))
        return x.view(b, h, t + 1, 2 * t - 1)[:, :, :t, t - 1 :]

    @staticmethod
    def _abs_to_rel(x):
        """[B, H, T, T] -> [B, H, T, 2T-1] with out[i, m] = x[i, i + m - (T-1)] (zero where that j is outside)."""
        b, h, t, _ = x.shape
        x = F.pad(x, (0, t - 1)).view(b, h, t * (2 * t - 1))
        x = F.pad(x, (t, 0))
        return x.view(b, h, t, 2 * t)[:, :, :, 1:]

    def forward(self, x, attn_mask):  # x [B, C, T], attn_mask [B, 1, T, T] or None
        b, c, t = x.shape
        # [B, C, T] -> [B, H, T, d]; channel index = head * d + k, as upstream's view(b, h, d, t)
        q = self.conv_q(x).view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        k = self.conv_k(x).view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        v = self.conv_v(x).view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        q = q / math.sqrt(self.k_channels)
        scores = torch.matmul(q, k.transpose(-2, -1))  # [B, H, T, T]
        rel_k = self._relative_embeddings(self.emb_rel_k, t)  # [1, 2T-1, d]
        scores = scores + self._rel_to_abs(torch.matmul(q, rel_k.unsqueeze(0).transpose(-2, -1)))
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask == 0, -1e4)
        p = F.softmax(scores, dim=-1)
        out = torch.matmul(p, v)
        rel_v = self._relative_embeddings(self.emb_rel_v, t)
        out = out + torch.matmul(self._abs_to_rel(p), rel_v.unsqueeze(0))  # [B, H, T, d]
        out = out.transpose(2, 3).contiguous().view(b, c, t)
        return self.conv_o(out)


class FFN(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel_size: int):
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x, x_mask):  # [B, C, T], [B, 1, T] or None
        x = torch.relu(self.conv_1(_masked(x, x_mask)))
        return _masked(self.conv_2(_masked(x, x_mask)), x_mask)


class Encoder(nn.Module):
    """Post-norm transformer: x = LN1(x + MHA(x)); x = LN2(x + FFN(x))."""

    def __init__(self, hidden: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int):
        super().__init__()
        self.attn_layers = nn.ModuleList(MultiHeadAttention(hidden, n_heads) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(LayerNorm(hidden) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(FFN(hidden, filter_channels, kernel_size) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(LayerNorm(hidden) for _ in range(n_layers))

    def forward(self, x, x_mask):  # [B, C, T], [B, 1, T] or None
        attn_mask = None
        if x_mask is not None:
            attn_mask = x_mask.unsqueeze(2) * x_mask.unsqueeze(-1)  # [B, 1, T, T]
        x = _masked(x, x_mask)
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm1(x + attn(x, attn_mask))
            x = norm2(x + ffn(x, x_mask))
        return _masked(x, x_mask)


class TextEncoder(nn.Module):
    """enc_p: content features (+ coarse pitch) -> prior mean m_p and log-std logs_p, [B, inter, T] each."""

    def __init__(self, cfg: SynthConfig):
        super().__init__()
        self.hidden = cfg.hidden_channels
        self.emb_phone = nn.Linear(cfg.phone_channels, cfg.hidden_channels)
        if cfg.f0:
            self.emb_pitch = nn.Embedding(256, cfg.hidden_channels)
        self.encoder = Encoder(cfg.hidden_channels, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size)
        self.proj = nn.Conv1d(cfg.hidden_channels, 2 * cfg.inter_channels, 1)

    def forward(self, phone, pitch, x_mask, head: int = 0):  # [B, T, C], [B, T] long or None, [B, 1, T] or None
        """head: frames dropped before proj (streaming: attention still sees all T frames)."""
        x = self.emb_phone(phone)
        if pitch is not None:
            x = x + self.emb_pitch(pitch)
        x = F.leaky_relu(x * math.sqrt(self.hidden), LRELU_SLOPE).transpose(1, -1)  # [B, H, T]
        x = self.encoder(_masked(x, x_mask), x_mask)
        if head:
            x, x_mask = x[..., head:], None if x_mask is None else x_mask[..., head:]
        m, logs = torch.chunk(_masked(self.proj(x), x_mask), 2, dim=1)
        return m, logs


# ---- flow (modules) --------------------------------------------------------------------------------------------


class WN(nn.Module):
    """WaveNet-style gated stack with a global condition g (speaker); returns the sum of skip outputs."""

    def __init__(self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int):
        super().__init__()
        self.hidden, self.n_layers = hidden, n_layers
        self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            d = dilation_rate**i
            self.in_layers.append(
                nn.Conv1d(hidden, 2 * hidden, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2)
            )
            self.res_skip_layers.append(nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1))

    def forward(self, x, x_mask, g):  # [B, H, T], [B, 1, T] or None, [B, gin, 1]
        h = self.hidden
        g = self.cond_layer(g)  # [B, 2H * L, 1]
        output = torch.zeros_like(x)
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            a = in_layer(x) + g[:, 2 * h * i : 2 * h * (i + 1)]
            acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
            rs = res_skip(acts)
            if i < self.n_layers - 1:
                x = _masked(x + rs[:, :h], x_mask)
                output = output + rs[:, h:]
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

    def forward(self, x, x_mask, g):  # reverse=True
        x0, x1 = torch.split(x, [self.half, self.half], 1)
        h = _masked(self.pre(x0), x_mask)
        m = _masked(self.post(self.enc(h, x_mask, g)), x_mask)
        return torch.cat([x0, _masked(x1 - m, x_mask)], 1)  # logs == 0: exp(-logs) == 1


class Flip(nn.Module):
    def forward(self, x, x_mask, g):
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    """flows = [Coupling, Flip] x 4 (couplings at flows.0/2/4/6); inference runs the list backwards."""

    def __init__(self, channels: int, hidden: int, gin_channels: int):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(N_FLOWS):
            self.flows.append(ResidualCouplingLayer(channels, hidden, gin_channels))
            self.flows.append(Flip())

    def forward(self, x, x_mask, g):  # reverse=True
        for flow in reversed(self.flows):
            x = flow(x, x_mask, g)
        return x


# ---- decoder (HiFi-GAN / NSF) ------------------------------------------------------------------------------------


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with LeakyReLU(0.1) before each conv and a residual add around each pair."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=(kernel_size * d - d) // 2) for d in dilation
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2) for _ in dilation
        )

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE)) + x
        return x


class SineGen(nn.Module):
    """Harmonic source (harmonic_num 0): sine of the running f0 phase on voiced samples, plus noise.

    Upstream's phase is cumsum(rad_up - wrap) with rad = f0 / sr held over each frame and `wrap` integer
    corrections found by linear (align_corners=True) interpolation; the corrections are integers, so
    sin(2 pi phase) = sin(2 pi sum_{m <= n} rad_up[m]). For sample n = f * upp + k that sum is
    upp * sum_{f' < f} rad[f'] + (k + 1) * rad[f]. The first term is computed per frame in float64 and reduced
    mod 1, so no error accumulates over the chunk; the second is small (<= f0 / 100 cycles) and done in float32.
    (Measured on 10 s at 48 kHz against float64: upstream's ops in float32 drift to 4e-4 abs on the 0.1-amplitude
    sine; this form stays within 4e-7.)
    """

    def __init__(self, sr: int, upp: int):
        super().__init__()
        self.sr, self.upp = sr, upp
        self.register_buffer("steps", torch.arange(1, upp + 1, dtype=torch.float32), persistent=False)  # k + 1

    def forward(self, f0, noise=None):  # [B, T] Hz; noise [B, T * upp] standard normal or None (drawn)
        b, t = f0.shape
        rad = (f0 / self.sr) % 1  # [B, T] cycles per sample
        rad64 = (f0.to("cpu", torch.float64) / self.sr) % 1  # float64 needs the CPU on mps; [B, T] is small
        start = F.pad(torch.cumsum(rad64, dim=1)[:, :-1], (1, 0)) * self.upp
        start = (start - torch.floor(start)).to(rad.device, torch.float32)  # [B, T] phase at each frame start
        phase = rad.unsqueeze(-1) * self.steps + start.unsqueeze(-1)  # [B, T, upp]
        phase = phase - torch.floor(phase)
        sine = SINE_AMP * torch.sin(2 * math.pi * phase)
        uv = (f0 > 0).to(f0.dtype).unsqueeze(-1)  # [B, T, 1], held over the frame like upstream's nearest upsample
        noise = torch.randn_like(sine) if noise is None else noise.view(b, t, self.upp)
        noise_amp = uv * NOISE_STD + (1 - uv) * (SINE_AMP / 3)
        e = sine * uv + noise_amp * noise
        return e.reshape(b, t * self.upp, 1)  # [B, T * upp, 1]


class SourceModuleHnNSF(nn.Module):
    def __init__(self, sr: int, upp: int):
        super().__init__()
        self.l_sin_gen = SineGen(sr, upp)
        self.l_linear = nn.Linear(1, 1)

    def forward(self, f0, noise=None):
        return torch.tanh(self.l_linear(self.l_sin_gen(f0, noise)))  # [B, T * upp, 1]


class Generator(nn.Module):
    """dec: HiFi-GAN. With `f0` (GeneratorNSF) each stage also adds a strided conv of the harmonic source."""

    def __init__(self, cfg: SynthConfig):
        super().__init__()
        uic = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.inter_channels, uic, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            ch = cfg.stage_channels[i]
            self.ups.append(nn.ConvTranspose1d(uic // 2**i, ch, k, u, padding=(k - u) // 2))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(ch, rk, rd))
        self.conv_post = nn.Conv1d(cfg.stage_channels[-1], 1, 7, padding=3, bias=False)
        self.cond = nn.Conv1d(cfg.gin_channels, uic, 1)
        self.upp, self.context = cfg.upp, tiling.context(cfg)
        if cfg.f0:
            self.m_source = SourceModuleHnNSF(cfg.sr, cfg.upp)
            last = len(cfg.upsample_rates) - 1  # the last stage is already at the output rate: a 1x1 conv
            self.noise_convs = nn.ModuleList(
                nn.Conv1d(1, ch, 2 * s, stride=s, padding=s // 2) if i < last else nn.Conv1d(1, ch, 1)
                for i, (ch, s) in enumerate(zip(cfg.stage_channels, cfg.noise_strides))
            )

    def forward(self, x, g, f0=None, noise=None, intermediates=None, tile_frames=None):
        """z [B, inter, T], g [B, gin, 1], f0 [B, T] -> audio [B, 1, T * upp]. tile_frames (0/None: off): run the
        filter over tiles of that many frames plus its context (tiling.py); the source always spans the whole T."""
        har = None
        if f0 is not None:
            har = self.m_source(f0, noise).transpose(1, 2)  # [B, 1, T * upp]
            if intermediates is not None:
                intermediates["har"] = har
        upp, outs = self.upp, []
        for lo, a, b, hi in tiling.spans(x.shape[-1], tile_frames, self.context):
            y = self.filter(x[..., lo:hi], g, None if har is None else har[..., lo * upp : hi * upp])
            outs.append(y[..., (a - lo) * upp : (b - lo) * upp])
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def filter(self, x, g, har=None):  # z [B, inter, T], g [B, gin, 1], har [B, 1, T * upp] -> [B, 1, T * upp]
        x = self.conv_pre(x) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            if har is not None:
                x = x + self.noise_convs[i](har)
            rbs = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = rbs[0](x)
            for rb in rbs[1:]:
                xs = xs + rb(x)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x, LRELU_SLOPE_POST))  # default slope here, not 0.1
        return torch.tanh(x)


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
        self.tile_frames = None  # decoder tiles in frames (tiling.py); 0/None: one pass over the whole length

    @torch.inference_mode()
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
        """phone [B, T, C] float, phone_lengths [B] long or None (all valid), pitch [B, T] long and nsff0 [B, T] Hz
        (pitch models only), sid [B] long (default speaker 0); eps [B, T, inter] and sine_noise [B, T * upp] replace
        the random draws (zeros make the output deterministic). Returns audio [B, 1, T * upp], or
        (audio, intermediates). Streaming (rt spec §4.5): skip_head and return_length return only frames
        [skip_head, skip_head + return_length) (audio [B, 1, return_length * upp]); the flow runs from
        fh = skip_head - FLOW_CONTEXT, so eps is [B, T - fh, inter] and sine_noise [B, return_length * upp]."""
        if self.cfg.f0 and (pitch is None or nsff0 is None):
            raise ValueError("this is a pitch model: pass pitch and nsff0")
        fh, dh = stream_heads(skip_head, return_length)
        z, x_mask, g, (m_p, logs_p) = self.prior(phone, phone_lengths, pitch, sid, eps, fh)
        if skip_head is not None:
            z, x_mask = (
                z[..., dh : dh + return_length],
                None if x_mask is None else x_mask[..., dh : dh + return_length],
            )
            nsff0 = None if nsff0 is None else nsff0[:, skip_head : skip_head + return_length]
        inter = {} if return_intermediates else None
        audio = self.dec(_masked(z, x_mask), g, nsff0 if self.cfg.f0 else None, sine_noise, inter, self.tile_frames)
        if inter is None:
            return audio
        inter.update(m_p=m_p, logs_p=logs_p, z=z, audio=audio)
        return audio, inter

    def prior(self, phone, phone_lengths=None, pitch=None, sid=None, eps=None, fh: int = 0):
        """The decoder's input from frame fh on: (z [B, inter, T - fh], its mask [B, 1, T - fh] or None, g
        [B, gin, 1], (m_p, logs_p)); arguments as infer's."""
        b, t = phone.shape[:2]
        if sid is None:
            sid = torch.zeros(b, dtype=torch.long, device=phone.device)
        x_mask = None
        if phone_lengths is not None:
            x_mask = sequence_mask(phone_lengths, t).unsqueeze(1).to(phone.dtype)  # [B, 1, T]
        g = self.emb_g(sid).unsqueeze(-1)  # [B, gin, 1]
        m_p, logs_p = self.enc_p(phone, pitch if self.cfg.f0 else None, x_mask, fh)
        if fh and x_mask is not None:
            x_mask = x_mask[..., fh:]
        eps = torch.randn_like(m_p) if eps is None else eps.transpose(1, 2)
        z_p = _masked(m_p + torch.exp(logs_p) * eps * PRIOR_NOISE_SCALE, x_mask)
        return self.flow(z_p, x_mask, g), x_mask, g, (m_p, logs_p)


def build(cfg: SynthConfig) -> Synthesizer:
    return Synthesizer(cfg).eval().requires_grad_(False)


def load(weights: Mapping[str, np.ndarray], cfg: SynthConfig, what: str = "synthesizer (torch)") -> Synthesizer:
    """A Synthesizer with `weights` (torch layout, weight norm folded, numpy) loaded strictly, in eval mode."""
    return load_torch_module(build(cfg), weights, what)


# ---- stage boundary: numpy in, numpy out -------------------------------------------------------------------------


def prepare(inputs, device="cpu") -> dict:
    """SynthInputs (time-major numpy) -> infer() keyword arguments, batch 1."""
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)[None]  # noqa: E731
    return dict(
        phone=t(inputs.phone),
        pitch=t(inputs.pitch),
        nsff0=t(inputs.pitchf),
        eps=t(inputs.eps),
        sine_noise=t(inputs.sine_noise),
    )


def run(model: Synthesizer, inputs) -> dict:
    """One deterministic call; returns audio [T * upp], har [T * upp] (pitch models), m_p, logs_p, z [T, inter]."""
    _, inter = model.infer(**prepare(inputs, next(model.parameters()).device), return_intermediates=True)
    out = {k: v[0].detach().cpu().float().numpy() for k, v in inter.items()}
    return {k: (v.T if k in ("m_p", "logs_p", "z") else v.reshape(-1)) for k, v in out.items()}
