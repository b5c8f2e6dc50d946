"""ContentVec / HuBERT-base in PyTorch (spec §2): the baseline twin.

Attribute names are fairseq's state-dict names, so the canonical state from convert.py loads as it is. Inference
only: post-LN encoder, no masking, no dropout, no padding mask (RVC passes an all-False one). Activations are
[B, T, C] between blocks, as fairseq's are [T, B, C]; the conv front end is [B, C, T] as in fairseq. Files are read
by convert.py; this module sees only numpy weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rvc_bench.checkpoints import load_torch_module
from rvc_bench.hubert.config import T_MAX_SECONDS, HubertConfig


class SamePad(nn.Module):
    """An even kernel padded k/2 on both sides gives one extra step: drop the last one."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x):  # [B, C, T+1] -> [B, C, T]
        return x[:, :, : -self.remove] if self.remove else x


class ConvFeatureExtractionModel(nn.Module):
    """7 bias-free strided convs + GELU; GroupNorm(C groups) on the first: [B, N] -> [B, C, F]."""

    def __init__(self, conv_layers: tuple[tuple[int, int, int], ...], eps: float):
        super().__init__()
        layers, in_ch = [], 1
        for i, (ch, k, stride) in enumerate(conv_layers):
            mods = [nn.Conv1d(in_ch, ch, k, stride=stride, bias=False), nn.Identity()]  # slot 1: fairseq's dropout
            if i == 0:
                mods.append(nn.GroupNorm(ch, ch, eps=eps))  # one group per channel: normalise each over time
            mods.append(nn.GELU())
            layers.append(nn.Sequential(*mods))
            in_ch = ch
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, source):  # [B, N]
        x = source.unsqueeze(1)  # [B, 1, N]
        for conv in self.conv_layers:
            x = conv(x)
        return x  # [B, C, F]


class MultiheadAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x):  # [B, T, D]
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.heads, -1).transpose(1, 2)  # [B, H, T, Dh]
        k = self.k_proj(x).view(b, t, self.heads, -1).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.heads, -1).transpose(1, 2)
        # Default scale 1/sqrt(Dh) is fairseq's q scaling; this is the kernel its fast path (need_weights=False) uses.
        o = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, Dh]
        return self.out_proj(o.transpose(1, 2).reshape(b, t, d))


class TransformerSentenceEncoderLayer(nn.Module):
    """Post-LN block: x = LN1(x + MHA(x)); x = LN2(x + fc2(GELU(fc1(x))))."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, eps: float):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):  # [B, T, D]
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: HubertConfig):
        super().__init__()
        d, k = cfg.embed_dim, cfg.pos_conv_kernel
        # Weight norm (dim 2) is folded by the converter: the conv holds g * v / ||v|| as its plain weight.
        self.pos_conv = nn.Sequential(
            nn.Conv1d(d, d, k, padding=k // 2, groups=cfg.pos_conv_groups), SamePad(k), nn.GELU()
        )
        self.layer_norm = nn.LayerNorm(d, eps=cfg.eps)
        self.layers = nn.ModuleList(
            TransformerSentenceEncoderLayer(d, cfg.ffn_dim, cfg.heads, cfg.eps) for _ in range(cfg.layers)
        )

    def forward(self, x, output_layer: int, all_layers: bool = False):  # [B, T, D]
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.layer_norm(x)  # post-LN models normalise right after the positional add
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
        if source.dim() != 2 or source.shape[1] < self.cfg.receptive_field:
            raise ValueError(
                f"expected 16 kHz audio [batch, samples >= {self.cfg.receptive_field}], got {tuple(source.shape)}"
            )
        x = self.feature_extractor(source).transpose(1, 2)  # [B, F, C]
        return self.post_extract_proj(self.layer_norm(x))

    @torch.inference_mode()
    def extract_features(self, source, output_layer: int | None = None):
        """Output of transformer layer `output_layer` (1-based; 0 = encoder input): [B, N] -> [B, F, D]."""
        return self.encoder(self._front(source), self._layer(output_layer))

    forward = extract_features

    @torch.inference_mode()
    def hidden_states(self, source, output_layer: int | None = None) -> list:
        """[encoder input, layer 1, ..., layer output_layer] (= HF hidden_states), each [B, F, D]."""
        return self.encoder(self._front(source), self._layer(output_layer), all_layers=True)

    @torch.inference_mode()
    def features(self, source, version: str = "v2"):
        """RVC's content features: v1 = final_proj(layer 9) [B, F, 256]; v2 = layer 12 [B, F, 768]."""
        if version == "v1":
            return self.final_proj(self.extract_features(source, self.cfg.v1_layer))
        if version == "v2":
            return self.extract_features(source, self.cfg.v2_layer)
        raise ValueError(f"unknown RVC version {version!r}: 'v1' or 'v2'")

    @torch.inference_mode()
    def features_windowed(self, source, version: str = "v2", max_seconds: float = T_MAX_SECONDS):
        """features() over windows of at most max_seconds (attention memory is quadratic in length), concatenated.

        Windows tile the frame grid (HubertConfig.windows): same frame count as one call, same conv inputs.
        """
        spans = self.cfg.windows(source.shape[-1], max_seconds)
        if len(spans) <= 1:
            return self.features(source, version)
        return torch.cat([self.features(source[:, a:b], version) for a, b in spans], dim=1)


def upsample2x(feats):
    """The pipeline's F.interpolate(scale_factor=2) (nearest) along time: [B, F, C] -> [B, 2F, C]."""
    return F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)


def build(cfg: HubertConfig) -> HubertModel:
    return HubertModel(cfg).eval().requires_grad_(False)


def load(weights: Mapping[str, np.ndarray], cfg: HubertConfig, what: str = "hubert (torch)") -> HubertModel:
    """A HubertModel in eval mode holding the canonical state (strict: every key and shape checked)."""
    return load_torch_module(build(cfg), weights, what)
