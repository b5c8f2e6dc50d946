"""Synthesizer configuration (framework-free): the voice checkpoint's positional `config` list (spec §5.1) plus the
two facts the list leaves out (model version -> content-feature width, and whether the model takes pitch), and the
constants upstream hard-codes in its classes.

Variant names: "v{1,2}-{32,40,48}k" with pitch (NSF-HiFiGAN decoder), "...-nono" without (plain HiFi-GAN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rvc_bench.stage_config import StageConfig

# Constants upstream hard-codes (not in the config list).
WINDOW_SIZE = 10  # relative attention: positions j-i in [-10, 10] get an embedding, others none
FLOW_KERNEL = 5  # ResidualCouplingBlock(inter, hidden, 5, 1, 3): WN kernel, dilation rate, layers
FLOW_DILATION_RATE = 1
FLOW_LAYERS = 3
N_FLOWS = 4  # coupling layers, each followed by a channel flip
LRELU_SLOPE = 0.1  # every LeakyReLU in the decoder except the one before conv_post (torch default 0.01)
LRELU_SLOPE_POST = 0.01
SINE_AMP = 0.1  # SineGen amplitude; unvoiced noise std is SINE_AMP / 3
NOISE_STD = 0.003  # SineGen noise std on voiced samples
PRIOR_NOISE_SCALE = 0.66666  # z_p = m_p + exp(logs_p) * eps * 0.66666
# Left receptive field of the reverse flow in frames (4 couplings x 3 WN layers x 2 frames for kernel 5): streaming
# inference (skip_head) runs the flow from this many frames before the first frame it returns.
FLOW_CONTEXT = N_FLOWS * FLOW_LAYERS * (FLOW_KERNEL // 2)
PHONE_CHANNELS = {"v1": 256, "v2": 768}  # content-feature width: HuBERT layer 9 + final_proj (v1) / layer 12 (v2)
SR_NAMES = {"32k": 32000, "40k": 40000, "48k": 48000}


def stream_heads(skip_head: int | None, return_length: int | None) -> tuple[int, int]:
    """(fh, dh) of streaming inference (rt spec §4.5): the text encoder's output is cropped to frames [fh, T), the
    flow's to [fh + dh, fh + dh + return_length) = [skip_head, skip_head + return_length). (0, 0): the whole length."""
    if (skip_head is None) != (return_length is None):
        raise ValueError("skip_head and return_length go together")
    if skip_head is None:
        return 0, 0
    if skip_head < 0 or return_length < 1:
        raise ValueError(f"skip_head must be >= 0 and return_length >= 1, got {skip_head}, {return_length}")
    fh = max(skip_head - FLOW_CONTEXT, 0)
    return fh, skip_head - fh


# Upstream's positional constructor arguments, in checkpoint `config` order.
CONFIG_FIELDS = (
    "spec_channels",
    "segment_size",
    "inter_channels",
    "hidden_channels",
    "filter_channels",
    "n_heads",
    "n_layers",
    "kernel_size",
    "p_dropout",
    "resblock",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "upsample_rates",
    "upsample_initial_channel",
    "upsample_kernel_sizes",
    "spk_embed_dim",
    "gin_channels",
    "sr",
)


@dataclass(frozen=True)
class SynthConfig(StageConfig):
    spec_channels: int = 1025  # sizes only enc_q (posterior encoder, training only, absent from voice files)
    segment_size: int = 32  # training only
    inter_channels: int = 192  # latent z channels
    hidden_channels: int = 192  # text encoder / flow width
    filter_channels: int = 768  # text encoder FFN width
    n_heads: int = 2
    n_layers: int = 6  # text encoder layers
    kernel_size: int = 3  # text encoder FFN kernel
    p_dropout: float = 0.0
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 10, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    spk_embed_dim: int = 109
    gin_channels: int = 256
    sr: int = 40000  # output sample rate (tiny presets: 100 * upp, so a frame still spans f0/100 sine cycles)
    version: str = "v2"  # v1: 256-d content features, v2: 768-d
    f0: bool = True  # pitch model (NSF decoder + pitch embedding) or "nono"

    def __post_init__(self):
        tup = lambda xs: tuple(int(x) for x in xs)  # noqa: E731 -- lists from JSON / checkpoints -> hashable tuples
        object.__setattr__(self, "resblock_kernel_sizes", tup(self.resblock_kernel_sizes))
        object.__setattr__(self, "resblock_dilation_sizes", tuple(tup(d) for d in self.resblock_dilation_sizes))
        object.__setattr__(self, "upsample_rates", tup(self.upsample_rates))
        object.__setattr__(self, "upsample_kernel_sizes", tup(self.upsample_kernel_sizes))
        object.__setattr__(self, "resblock", str(self.resblock))
        object.__setattr__(self, "f0", bool(self.f0))
        if isinstance(self.sr, str):
            object.__setattr__(self, "sr", SR_NAMES.get(self.sr, self.sr))
        problems = []
        if self.version not in PHONE_CHANNELS:
            problems.append(f"version {self.version!r} (expected v1 or v2)")
        if self.resblock != "1":
            problems.append(f"resblock {self.resblock!r} (only ResBlock '1' is used by RVC configs)")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            problems.append("upsample_rates and upsample_kernel_sizes differ in length")
        if any((k - u) % 2 for k, u in zip(self.upsample_kernel_sizes, self.upsample_rates)):
            problems.append("an upsample kernel minus its rate is odd (the ConvTranspose would not scale exactly)")
        if any(s % 2 for s in self.noise_strides[:-1]):
            problems.append("an NSF noise-conv stride is odd (its output would not match the stage length)")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            problems.append("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if self.kernel_size % 2 == 0 or any(k % 2 == 0 for k in self.resblock_kernel_sizes):
            problems.append('an even convolution kernel ("same" padding needs odd kernels)')
        if self.hidden_channels % self.n_heads or self.inter_channels % 2:
            problems.append("hidden_channels not divisible by n_heads, or odd inter_channels")
        sizes = (
            self.spec_channels,
            self.inter_channels,
            self.hidden_channels,
            self.filter_channels,
            self.n_heads,
            self.n_layers,
            self.kernel_size,
            self.upsample_initial_channel,
            self.spk_embed_dim,
            self.gin_channels,
            *self.upsample_rates,
            *self.upsample_kernel_sizes,
            *self.resblock_kernel_sizes,
            *(d for ds in self.resblock_dilation_sizes for d in ds),
        )
        if not all(type(n) is int and n > 0 for n in sizes):
            problems.append("a size, rate or kernel that is not a positive integer")
        if not isinstance(self.sr, int) or self.sr <= 0:
            problems.append(f"sample rate {self.sr!r}")
        elif self.sr != 100 * self.upp:  # else the output is labelled with a rate it was not made at
            problems.append(
                f"sample rate {self.sr} Hz, but the decoder makes {self.upp} samples per 10 ms frame "
                f"(the product of upsample_rates), i.e. {100 * self.upp} Hz"
            )
        if problems:
            raise ValueError("unsupported synthesizer config: " + "; ".join(problems))

    # ---- derived sizes
    @property
    def phone_channels(self) -> int:
        return PHONE_CHANNELS[self.version]

    @property
    def upp(self) -> int:
        """Output samples per 10 ms frame: the product of the upsample rates."""
        return math.prod(self.upsample_rates)

    @property
    def noise_strides(self) -> tuple[int, ...]:
        """Stride of each NSF noise conv: the upsampling still to come after that stage (1 for the last)."""
        return tuple(math.prod(self.upsample_rates[i + 1 :]) for i in range(len(self.upsample_rates)))

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.upsample_initial_channel // 2 ** (i + 1) for i in range(len(self.upsample_rates)))

    @property
    def name(self) -> str:
        rate = {v: k for k, v in SR_NAMES.items()}.get(self.sr, f"{self.sr}hz")
        return f"{self.version}-{rate}" + ("" if self.f0 else "-nono")

    # ---- (de)serialisation
    @classmethod
    def from_list(cls, config: Sequence, version: str = "v1", f0: bool = True) -> SynthConfig:
        """From a voice checkpoint's positional `config` list (18 entries, upstream order)."""
        if len(config) != len(CONFIG_FIELDS):
            raise ValueError(f"a synthesizer config list has {len(CONFIG_FIELDS)} entries, got {len(config)}")
        return cls(**dict(zip(CONFIG_FIELDS, config)), version=version, f0=f0)

    def to_list(self) -> list:
        d = self.to_dict()
        return [d[k] for k in CONFIG_FIELDS]


# ---- presets -------------------------------------------------------------------------------------------------
# Per-rate decoder shapes of the shipped configs (spec §5.1): (spec_channels, upsample_rates, upsample_kernel_sizes).
_FULL_RATES = {
    ("v1", "32k"): (513, (10, 4, 2, 2, 2), (16, 16, 4, 4, 4)),
    ("v1", "40k"): (1025, (10, 10, 2, 2), (16, 16, 4, 4)),
    ("v1", "48k"): (1025, (10, 6, 2, 2, 2), (16, 16, 4, 4, 4)),
    ("v2", "32k"): (513, (10, 8, 2, 2), (20, 16, 4, 4)),
    ("v2", "40k"): (1025, (10, 10, 2, 2), (16, 16, 4, 4)),  # v2 40k reuses the v1 40k config
    ("v2", "48k"): (1025, (12, 10, 2, 2), (24, 20, 4, 4)),
}
# Tiny twins of each: same number of stages, small rates (upp 8..16), kernel/rate pairs chosen so the ConvTranspose
# paddings vary (0..3) like the real ones do.
_TINY_RATES = {
    ("v1", "32k"): ((4, 2, 2), (8, 8, 4)),
    ("v1", "40k"): ((5, 2), (9, 4)),
    ("v1", "48k"): ((3, 2, 2), (5, 6, 4)),
    ("v2", "32k"): ((4, 2), (6, 4)),
    ("v2", "40k"): ((5, 2), (9, 4)),
    ("v2", "48k"): ((6, 2), (12, 4)),
}
_TINY_WIDTHS = dict(
    inter_channels=16, hidden_channels=16, filter_channels=32, upsample_initial_channel=32, gin_channels=8
)
_TINY_COUNTS = dict(n_heads=2, n_layers=2, spk_embed_dim=3)

VARIANTS = tuple(f"{v}-{r}" for v in ("v1", "v2") for r in ("32k", "40k", "48k"))
DEFAULT_VARIANT = "v2-40k"  # the voice the benchmarks and the pipeline's synthetic checkpoints use
NAMES = VARIANTS + tuple(f"{n}-nono" for n in VARIANTS)
SIZES = ("full", "tiny")


def parse_name(name: str) -> tuple[str, str, bool]:
    """ "v2-40k-nono" -> ("v2", "40k", False)."""
    parts = name.split("-")
    if len(parts) not in (2, 3) or (parts[0], parts[1]) not in _FULL_RATES or parts[2:] not in ([], ["nono"]):
        raise ValueError(f"unknown synthesizer variant {name!r}: choose one of {', '.join(NAMES)}")
    return parts[0], parts[1], len(parts) == 2


def preset(name: str, size: str = "full") -> SynthConfig:
    """Config of a named variant ("v2-40k", "v1-32k-nono", ...) at size "full" (shipped) or "tiny" (CI)."""
    version, rate, f0 = parse_name(name)
    spec, rates, kernels = _FULL_RATES[(version, rate)]
    cfg = SynthConfig(
        spec_channels=spec,
        upsample_rates=rates,
        upsample_kernel_sizes=kernels,
        sr=SR_NAMES[rate],
        version=version,
        f0=f0,
    )
    if size == "full":
        return cfg
    if size == "tiny":
        rates, kernels = _TINY_RATES[(version, rate)]
        return replace(
            cfg,
            **_TINY_WIDTHS,
            **_TINY_COUNTS,
            upsample_rates=rates,
            upsample_kernel_sizes=kernels,
            sr=100 * math.prod(rates),
        )
    raise ValueError(f"unknown size {size!r}: choose one of {', '.join(SIZES)}")
