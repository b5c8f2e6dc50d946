"""Seeded synthetic voice checkpoints in the real `.pth` format, and seeded inputs for the synthesizer.

The file is what RVC's "extract model" writes: torch.save of {weight: net_g state dict without enc_q, fp16, weight
norm as legacy weight_g/weight_v pairs (or torch>=2.1 parametrization names on request), config: the 18-entry list,
info, sr: "40k", f0: 1/0, version: "v1"/"v2"}.

Random weights are scaled like a trained network's rather than like upstream's init (HiFi-GAN's N(0, 0.01) would
give a near-silent decoder): convolutions keep activations at unit scale (He-style std sqrt(gain / fan_in)),
residual branches are damped so the 3 x 3 residual adds per stage do not blow up, the flow's output convs are small
(trained couplings are close to identity), logs_p sits around -1 like a trained prior, the NSF source is strong
enough to shape the output, and conv_post is scaled so the waveform has a speech-like std (~0.1) without
saturating the final tanh. Weight norm is stored with a random per-channel g, so folding is really exercised.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rvc_bench.checkpoints import save_torch_checkpoint
from rvc_bench.layout import WEIGHT_NORM_STYLES
from rvc_bench.rmvpe.decode import coarse_pitch
from rvc_bench.synth.config import DEFAULT_VARIANT, NAMES, SynthConfig, parse_name, preset
from rvc_bench.synth.convert import expected_torch_shapes, is_weight_normed

GENERATOR_VERSION = 1  # bump when the recipe changes, so cached files are regenerated
WN_STYLES = WEIGHT_NORM_STYLES

# (key pattern, std gain g, scale): weight ~ N(0, scale * sqrt(g / fan_in)). First match wins. Biases: N(0, 0.02).
_INIT: tuple[tuple[str, float, float], ...] = (
    (r"enc_p\.emb_phone\.weight", 1.0, 1.0),
    (r"enc_p\.encoder\.attn_layers\.\d+\.conv_[qkvo]\.weight", 1.0, 1.0),
    (r"enc_p\.encoder\.ffn_layers\.\d+\.conv_1\.weight", 2.0, 1.0),  # ReLU follows
    (r"enc_p\.encoder\.ffn_layers\.\d+\.conv_2\.weight", 1.0, 1.0),
    (r"enc_p\.proj\.weight", 1.0, 0.5),
    (r"flow\.flows\.\d+\.pre\.weight", 1.0, 1.0),
    (r"flow\.flows\.\d+\.enc\.cond_layer\.weight", 1.0, 0.5),
    (r"flow\.flows\.\d+\.enc\.in_layers\.\d+\.weight", 1.0, 1.0),
    (r"flow\.flows\.\d+\.enc\.res_skip_layers\.\d+\.weight", 1.0, 1.0),
    (r"flow\.flows\.\d+\.post\.weight", 1.0, 0.2),  # trained couplings move z by a fraction of its scale
    (r"dec\.conv_pre\.weight", 1.0, 1.0),
    (r"dec\.cond\.weight", 1.0, 0.5),
    (r"dec\.ups\.\d+\.weight", 2.0, 1.0),  # LeakyReLU before; fan_in fixed below for the transposed layout
    (r"dec\.noise_convs\.\d+\.weight", 1.0, 2.0),
    (r"dec\.resblocks\.\d+\.convs1\.\d+\.weight", 2.0, 1.0),
    (r"dec\.resblocks\.\d+\.convs2\.\d+\.weight", 2.0, 0.35),  # residual branch damped
    (r"dec\.conv_post\.weight", 1.0, 0.12),  # waveform std ~0.1 (see module docstring)
)
_INIT_RULES = [(re.compile(p + "$"), g, s) for p, g, s in _INIT]
LOGS_BIAS = -1.0  # prior log-std offset: exp(-1) ~ 0.37
L_LINEAR = (4.0, 0.0)  # NSF source: tanh(4 e) for a 0.1-amplitude sine: strong but unsaturated


def _init_weight(key: str, shape: tuple, rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    if key == "dec.m_source.l_linear.weight":
        return np.full(shape, L_LINEAR[0], np.float32)
    if key == "dec.m_source.l_linear.bias":
        return np.full(shape, L_LINEAR[1], np.float32)
    if key.endswith(".bias"):
        b = 0.02 * rng.standard_normal(shape)
        if key == "enc_p.proj.bias":
            b[cfg.inter_channels :] += LOGS_BIAS
        return b.astype(np.float32)
    if key.endswith(".gamma"):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    if key.endswith(".beta"):
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)
    if ".emb_rel_" in key:  # upstream's init: N(0, d^-1/2)
        return (rng.standard_normal(shape) * shape[-1] ** -0.5).astype(np.float32)
    if key in ("enc_p.emb_pitch.weight", "emb_g.weight"):
        return rng.standard_normal(shape).astype(np.float32) * (0.5 if "pitch" in key else 1.0)
    for pattern, gain, scale in _INIT_RULES:
        if pattern.match(key):
            if ".ups." in key:  # ConvTranspose1d [in, out, k]: each output sums in * k / stride taps
                stride = cfg.upsample_rates[int(key.split(".")[2])]
                fan_in = shape[0] * shape[2] / stride
            else:
                fan_in = math.prod(shape[1:])
            w = rng.standard_normal(shape) * scale * math.sqrt(gain / fan_in)
            if key == "enc_p.proj.weight":
                w[cfg.inter_channels :] *= 0.3  # logs_p varies less than m_p
            return w.astype(np.float32)
    raise KeyError(f"no init rule for {key!r}")


def build_weight(cfg: SynthConfig, seed: int = 0, wn_style: str = "legacy") -> dict:
    """net_g state dict (torch fp16 tensors, upstream key names, weight norm split into g/v, no enc_q)."""
    import torch

    g_suffix, v_suffix = WN_STYLES[wn_style]
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in expected_torch_shapes(cfg).items():
        w = _init_weight(key, shape, rng, cfg)
        module = key[: -len(".weight")]
        if key.endswith(".weight") and is_weight_normed(module):
            # w = g * v / |v| (norm over all but dim 0): store v at an arbitrary per-channel scale and g = |w|.
            g = np.sqrt(np.sum(w.astype(np.float64) ** 2, axis=tuple(range(1, w.ndim)), keepdims=True))
            v = w * rng.uniform(0.5, 2.0, size=g.shape)
            out[module + g_suffix] = torch.from_numpy(g.astype(np.float32)).half()
            out[module + v_suffix] = torch.from_numpy(v.astype(np.float32)).half()
        else:
            out[key] = torch.from_numpy(w).half()
    return out


def make_checkpoint(name: str, size: str = "full", seed: int = 0, wn_style: str = "legacy") -> dict:
    """The voice `.pth` dict of a named variant ("v2-40k", "v1-32k-nono", ...)."""
    cfg = preset(name, size)
    version, rate, f0 = parse_name(name)
    return {
        "weight": build_weight(cfg, seed, wn_style),
        "config": cfg.to_list(),
        "info": f"synthetic rvc-bench {name} {size} seed {seed}",
        "sr": rate,
        "f0": int(f0),
        "version": version,
    }


def checkpoint_path(cache_dir: str | Path, size: str, seed: int = 0, variant: str = DEFAULT_VARIANT) -> Path:
    return Path(cache_dir) / "checkpoints" / f"synth-{variant}-{size}-seed{seed}-v{GENERATOR_VERSION}.pth"


def ensure_checkpoint(cache_dir: str | Path, size: str, seed: int = 0, variant: str = DEFAULT_VARIANT) -> Path:
    """Path of the synthetic voice .pth for ("full"/"tiny", seed, variant name), generated on first use."""
    if variant not in NAMES:
        parse_name(variant)  # raises with the list of names
    path = checkpoint_path(cache_dir, size, seed, variant)
    if not path.is_file():
        save_torch_checkpoint(path, make_checkpoint(variant, size, seed))
    return path


# ---- inputs ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthInputs:
    """One call's inputs, numpy, framework-neutral (time-major; the twins add the batch axis and their layout)."""

    phone: np.ndarray  # [T, C] float32 content features
    pitch: np.ndarray  # [T] int64 coarse pitch 1..255
    pitchf: np.ndarray  # [T] float32 f0 in Hz, 0 = unvoiced
    eps: np.ndarray  # [T, inter] float32 prior noise (N(0, 1), or zeros)
    sine_noise: np.ndarray  # [T * upp] float32 source noise (N(0, 1), or zeros)

    @property
    def frames(self) -> int:
        return self.phone.shape[0]


def make_noise(cfg: SynthConfig, frames: int, seed: int = 0, zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(eps [T, inter], sine_noise [T * upp]) standard normal float32 from `seed`, or zeros."""
    if zero:
        return (np.zeros((frames, cfg.inter_channels), np.float32), np.zeros(frames * cfg.upp, np.float32))
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((frames, cfg.inter_channels), dtype=np.float32)
    return eps, rng.standard_normal(frames * cfg.upp, dtype=np.float32)


def smooth_features(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    """Content-feature-like input [T, C]: unit-variance noise smoothed over ~50 ms, as features vary by phone."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((frames + 4, channels))
    x = (x[:-4] + x[1:-3] + x[2:-2] + x[3:-1] + x[4:]) / math.sqrt(5)
    return x.astype(np.float32)


def make_inputs(cfg: SynthConfig, f0: np.ndarray, seed: int = 0, zero_noise: bool = False) -> SynthInputs:
    """Seeded inputs for len(f0) frames: smooth random features, coarse pitch from f0 (spec §3), injected noise."""
    f0 = np.asarray(f0, dtype=np.float32)
    frames = f0.shape[0]
    eps, sine_noise = make_noise(cfg, frames, seed + 1, zero_noise)
    return SynthInputs(
        phone=smooth_features(frames, cfg.phone_channels, seed),
        pitch=coarse_pitch(f0),
        pitchf=f0,
        eps=eps,
        sine_noise=sine_noise,
    )
