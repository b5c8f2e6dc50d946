"""ContentVec / HuBERT-base in MLX (spec §2): the twin of model_torch.py, channels-last throughout.

Same class and attribute names as the torch twin (= fairseq's state-dict names); fairseq's nn.Sequential slots are
plain lists so that `conv_layers.0.2.weight` and `pos_conv.0.weight` keep their indices. Activations are [B, T, C]
from the waveform on: there is no layout change inside the stage. Files are read by convert.py; this module sees
only numpy weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from rvc_bench.checkpoints import load_mlx_module
from rvc_bench.hubert.config import T_MAX_SECONDS, HubertConfig


class SamePad(nn.Module):
    """An even kernel padded k/2 on both sides gives one extra step: drop the last one."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def __call__(self, x):  # [B, T+1, C] -> [B, T, C]
        return x[:, : -self.remove, :] if self.remove else x


def _time_mean(x):  # [B, T, C] -> [B, 1, C]
    """Mean over time summed in two levels of ~sqrt(T) terms (blocks, then block sums): fp32 rounding then grows
    like sqrt(T) instead of T, which a plain reduction over ~200k steps at 60 s does not give (max abs error of the
    normalised output 3.5e-4 -> 2.1e-6 against float64)."""
    b, t, c = x.shape
    block = math.isqrt(t)
    m = t // block * block
    blocks = mx.as_strided(x, (b, m // block, block, c), (t * c, block * c, c, 1))  # a view of x[:, :m], no copy
    return ((blocks.sum(axis=2).sum(axis=1) + x[:, m:].sum(axis=1)) / t)[:, None, :]


class ChannelGroupNorm(nn.Module):
    """GroupNorm with one group per channel over [B, T, C] (torch's GroupNorm(C, C)): centred two-pass statistics
    with _time_mean. Peak memory: the output plus one temporary the size of x (nn.GroupNorm's pytorch_compatible
    path transposes into copies: 4x)."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))

    def __call__(self, x):
        mean = _time_mean(x)
        var = _time_mean(mx.square(x - mean))
        # x - mean is formed again rather than kept: keeping it holds a third buffer while the square is live.
        return (x - mean) * (mx.rsqrt(var + self.eps) * self.weight) + self.bias


class ConvFeatureExtractionModel(nn.Module):
    """7 bias-free strided convs + GELU; GroupNorm(C groups) on the first: [B, N] -> [B, F, C]."""

    def __init__(self, conv_layers: tuple[tuple[int, int, int], ...], eps: float):
        super().__init__()
        self.conv_layers, in_ch = [], 1
        for i, (ch, k, stride) in enumerate(conv_layers):
            mods = [nn.Conv1d(in_ch, ch, k, stride=stride, bias=False), nn.Identity()]  # slot 1: fairseq's dropout
            if i == 0:
                mods.append(ChannelGroupNorm(ch, eps))
            mods.append(nn.GELU())
            self.conv_layers.append(mods)
            in_ch = ch

    def __call__(self, source):  # [B, N]
        x = source[..., None]  # [B, N, 1]
        for mods in self.conv_layers:
            for m in mods:
                x = m(x)
        return x  # [B, F, C]


class MultiheadAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5  # fairseq scales q by 1/sqrt(head_dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, x):  # [B, T, D]
        b, t, d = x.shape
        q = self.q_proj(x).reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3)  # [B, H, T, Dh]
        k = self.k_proj(x).reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(b, t, self.heads, -1).transpose(0, 2, 1, 3)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)  # [B, H, T, Dh]
        return self.out_proj(o.transpose(0, 2, 1, 3).reshape(b, t, d))


class TransformerSentenceEncoderLayer(nn.Module):
    """Post-LN block: x = LN1(x + MHA(x)); x = LN2(x + fc2(GELU(fc1(x))))."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, eps: float):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def __call__(self, x):  # [B, T, D]
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(nn.gelu(self.fc1(x))))  # nn.gelu is the exact (erf) GELU


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        d, k = cfg.embed_dim, cfg.pos_conv_kernel
        # Weight norm (dim 2) is folded by the converter: the conv holds g * v / ||v|| as its plain weight.
        self.pos_conv = [nn.Conv1d(d, d, k, padding=k // 2, groups=cfg.pos_conv_groups), SamePad(k), nn.GELU()]
        self.layer_norm = nn.LayerNorm(d, eps=cfg.eps)
        self.layers = [TransformerSentenceEncoderLayer(d, cfg.ffn_dim, cfg.heads, cfg.eps) for _ in range(cfg.layers)]

    def __call__(self, x, output_layer: int, all_layers: bool = False):  # [B, T, D]
        pos = x
        for m in self.pos_conv:
            pos = m(pos)
        x = self.layer_norm(x + pos)  # post-LN models normalise right after the positional add
        states = [x]
        for layer in self.layers[:output_layer]:
            x = layer(x)
            if all_layers:
                states.append(x)
        return states if all_layers else x


class HubertModel(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = ConvFeatureExtractionModel(cfg.conv_layers, cfg.eps)
        self.layer_norm = nn.LayerNorm(cfg.conv_dim, eps=cfg.eps)
        self.post_extract_proj = nn.Linear(cfg.conv_dim, cfg.embed_dim)
        self.encoder = TransformerEncoder(cfg)
        self.final_proj = nn.Linear(cfg.embed_dim, cfg.final_dim)

    def _layer(self, output_layer: int | None) -> int:
        layer = self.cfg.layers if output_layer is None else output_layer
        if not 0 <= layer <= self.cfg.layers:
            raise ValueError(f"output_layer {layer} is outside 0..{self.cfg.layers}")
        return layer

    def _front(self, source):  # [B, N] -> [B, F, D]
        if source.ndim != 2 or source.shape[1] < self.cfg.receptive_field:
            raise ValueError(
                f"expected 16 kHz audio [batch, samples >= {self.cfg.receptive_field}], got {tuple(source.shape)}"
            )
        return self.post_extract_proj(self.layer_norm(self.feature_extractor(source)))

    def extract_features(self, source, output_layer: int | None = None):
        """Output of transformer layer `output_layer` (1-based; 0 = encoder input): [B, N] -> [B, F, D]."""
        return self.encoder(self._front(source), self._layer(output_layer))

    __call__ = extract_features

    def hidden_states(self, source, output_layer: int | None = None) -> list:
        """[encoder input, layer 1, ..., layer output_layer] (= HF hidden_states), each [B, F, D]."""
        return self.encoder(self._front(source), self._layer(output_layer), all_layers=True)

    def features(self, source, version: str = "v2"):
        """RVC's content features: v1 = final_proj(layer 9) [B, F, 256]; v2 = layer 12 [B, F, 768]."""
        if version == "v1":
            return self.final_proj(self.extract_features(source, self.cfg.v1_layer))
        if version == "v2":
            return self.extract_features(source, self.cfg.v2_layer)
        raise ValueError(f"unknown RVC version {version!r}: 'v1' or 'v2'")

    def features_windowed(self, source, version: str = "v2", max_seconds: float = T_MAX_SECONDS):
        """features() over windows of at most max_seconds (attention memory is quadratic in length), concatenated.

        Windows tile the frame grid (HubertConfig.windows): same frame count as one call, same conv inputs. Each
        window is evaluated before the next is built, so peak memory is that of one window, as in the pipeline.
        """
        spans = self.cfg.windows(source.shape[-1], max_seconds)
        if len(spans) <= 1:
            return self.features(source, version)
        outs = []
        for a, b in spans:
            outs.append(self.features(source[:, a:b], version))
            mx.eval(outs[-1])
        return mx.concatenate(outs, axis=1)


def upsample2x(feats):
    """The pipeline's nearest 2x upsampling along time: [B, F, C] -> [B, 2F, C] (each frame twice)."""
    return mx.repeat(feats, 2, axis=1)


def build(cfg: HubertConfig) -> HubertModel:
    return HubertModel(cfg).eval()


def load(weights: Mapping[str, np.ndarray], cfg: HubertConfig, what: str = "hubert (mlx)") -> HubertModel:
    """A HubertModel holding MLX-layout weights (strict: every key and shape checked)."""
    return load_mlx_module(build(cfg), weights, what)
