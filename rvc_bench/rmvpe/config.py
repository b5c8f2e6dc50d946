"""RMVPE configuration (framework-free): the E2E(n_blocks, n_gru, kernel_size) network of spec §3 plus the
inference constants (padding multiple, voicing threshold)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rvc_bench.layout import CheckpointError
from rvc_bench.stage_config import StageConfig

PAD_MULTIPLE = 32  # frames: the log-mel is zero-padded to a multiple of this before the U-Net (WebUI mel2hidden)
THRESHOLD = 0.03  # salience at or below this is unvoiced (the value the RVC pipeline passes; decode's default is 0.05)
N_BINS = 360  # pitch bins, 20 cents apart
# MLX RMVPE's default chunk for long inputs (frames): the U-Net runs in windows of CHUNK_FRAMES plus the receptive
# field on each side (2944 + 2 x 1600 = 6144 frames, 61 s at full size), the BiGRU over the whole sequence. 6144 is
# the largest window MLX's whole pass was measured to run in bounded memory (3.65 GiB at 60 s; 13.5 GiB whole at
# 300 s), so the peak at any length stays that of 61 s plus the whole-sequence BiGRU (384 + 512 floats a frame).
CHUNK_FRAMES = 2944


@dataclass(frozen=True)
class RMVPEConfig(StageConfig):
    n_mels: int = 128  # width of the U-Net input (mel bins)
    en_de_layers: int = 5  # encoder/decoder depth; each level halves T and the mel axis
    inter_layers: int = 4  # bottleneck ResEncoderBlocks
    in_channels: int = 1
    en_out_channels: int = 16  # channels after the first encoder level; doubles per level
    n_blocks: int = 4  # ConvBlockRes per ResEncoder/ResDecoder block
    kernel_size: tuple[int, int] = (2, 2)  # AvgPool2d kernel = stride in the encoder
    n_gru: int = 1  # BiGRU layers
    gru_hidden: int = 256  # per direction
    n_bins: int = N_BINS
    bn_momentum: float = 0.01  # training only; kept so the torch twin's BatchNorm2d matches upstream's repr
    bn_eps: float = 1e-5

    def __post_init__(self):
        object.__setattr__(self, "kernel_size", tuple(self.kernel_size))
        if PAD_MULTIPLE % (self.kernel_size[0] ** self.en_de_layers):
            raise ValueError(
                f"en_de_layers={self.en_de_layers} pools T by more than the padding multiple {PAD_MULTIPLE}"
            )
        if self.n_mels % (self.kernel_size[1] ** self.en_de_layers):
            raise ValueError(f"n_mels={self.n_mels} is not divisible by the pooling of {self.en_de_layers} levels")

    @property
    def cnn_out(self) -> int:
        """BiGRU input size: 3 channels x n_mels (feature index = channel * n_mels + mel)."""
        return 3 * self.n_mels

    @property
    def default_overlap(self) -> int:
        """Context frames per side of a U-Net chunk: the receptive field rounded up to the 32-frame pooling grid
        (full size 1583 -> 1600 frames, tiny 59 -> 64), so chunked inference computes exactly the whole pass."""
        return -(-receptive_field(self) // PAD_MULTIPLE) * PAD_MULTIPLE


PRESETS: dict[str, RMVPEConfig] = {
    # The released rmvpe.pt: E2E(n_blocks=4, n_gru=1, kernel_size=(2, 2)), 90.4 M parameters.
    "full": RMVPEConfig(),
    # CI: same topology with 3 levels, 1 bottleneck block, 1 ConvBlockRes per block, 4 base channels, GRU 16.
    "tiny": RMVPEConfig(en_de_layers=3, inter_layers=1, n_blocks=1, en_out_channels=4, gru_hidden=16),
}


def preset(name: str) -> RMVPEConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown RMVPE preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def receptive_field(cfg: RMVPEConfig) -> int:
    """Log-mel frames on either side of frame t that the U-Net + cnn output at t depends on, the most over the 32
    alignments of t to the pooling grid. Derived from the architecture by following each layer's frame interval
    back from the output: a 3x3 conv widens it by one frame at its level, AvgPool(2) maps coarse [a, b] to fine
    [2a, 2b + 1], ConvTranspose(3, stride 2, padding 1) maps fine [a, b] to coarse [ceil((a - 1) / 2),
    floor((b + 1) / 2)], and a decoder level needs the union of its skip's and its upsampled input's intervals.
    The BiGRU after it has no finite receptive field: it is never chunked (see chunked_mel2hidden)."""
    if cfg.kernel_size[0] != 2:
        raise ValueError(f"receptive_field assumes pooling by 2 in time, got {cfg.kernel_size}")
    convs = 2 * cfg.n_blocks  # per block of n_blocks ConvBlockRes (the 1x1 shortcut adds nothing)

    def grow(iv, r):
        return iv[0] - r, iv[1] + r

    def encoder_input(level, iv):  # log-mel frames behind the encoder's input at `level` over iv
        return iv if level == 0 else encoder_input(level - 1, grow((2 * iv[0], 2 * iv[1] + 1), convs))

    def decoder_output(level, iv):
        iv = grow(iv, convs)  # the block's ConvBlockRes, at this level
        up = (-((1 - iv[0]) // 2), (iv[1] + 1) // 2)  # the transposed conv's input, one level coarser
        if level == cfg.en_de_layers - 1:
            coarser = encoder_input(cfg.en_de_layers, grow(up, convs * cfg.inter_layers))  # the bottleneck
        else:
            coarser = decoder_output(level + 1, up)
        skip = encoder_input(level, grow(iv, convs))
        return min(skip[0], coarser[0]), max(skip[1], coarser[1])

    reach = 0
    for t in range(PAD_MULTIPLE):
        lo, hi = decoder_output(0, (t - 1, t + 1))  # the cnn's 3x3 conv first
        reach = max(reach, t - lo, hi - t)
    return reach


def chunk_windows(n_frames: int, chunk_frames: int, overlap_frames: int) -> list[tuple[int, int, int, int]]:
    """Chunked inference plan: (lo, hi, keep_lo, keep_hi) per chunk; run frames [lo, hi), keep [keep_lo, keep_hi)
    of that window's output. Chunks tile [0, n_frames); each window adds up to overlap_frames of context per side.

    Both must be multiples of 32 so every window starts on the pooling grid of the whole sequence (otherwise each
    AvgPool level would group different frames and the chunks could not match whole-sequence inference).
    """
    if chunk_frames <= 0 or chunk_frames % PAD_MULTIPLE or overlap_frames < 0 or overlap_frames % PAD_MULTIPLE:
        raise ValueError(
            f"chunk_frames ({chunk_frames}) and overlap_frames ({overlap_frames}) must be multiples of "
            f"{PAD_MULTIPLE} (chunk_frames > 0)"
        )
    plan = []
    for start in range(0, n_frames, chunk_frames):
        lo, hi = max(0, start - overlap_frames), min(n_frames, start + chunk_frames + overlap_frames)
        plan.append((lo, hi, start - lo, min(start + chunk_frames, n_frames) - lo))
    return plan


def bounded_chunk(n_frames: int, chunk_frames: int | None, overlap_frames: int) -> int | None:
    """The chunk the RMVPE stage runs `n_frames` in: None (whole sequence) when chunking is off or when one window
    of chunk_frames plus the overlap on each side covers the input (whole inference then needs no more memory than
    one chunk); else chunk_frames. So the U-Net's peak is that of one such window at any length.
    """
    if chunk_frames is None or n_frames <= chunk_frames + 2 * overlap_frames:
        return None
    return chunk_frames


def infer_config(state: Mapping[str, Any]) -> RMVPEConfig:
    """Read the architecture from a state dict's key names and a few shapes (the strict load checks the rest).

    Used to open a checkpoint whose size is not known in advance, e.g. a real rmvpe.pt (-> the "full" config).
    """

    def count(prefix: str) -> int:
        n = 0
        while any(k.startswith(f"{prefix}.{n}.") for k in state):
            n += 1
        return n

    try:
        gru_w = state["fc.0.gru.weight_hh_l0"]
        return RMVPEConfig(
            n_mels=state["fc.0.gru.weight_ih_l0"].shape[1] // 3,
            en_de_layers=count("unet.encoder.layers"),
            inter_layers=count("unet.intermediate.layers"),
            in_channels=state["unet.encoder.bn.weight"].shape[0],
            en_out_channels=state["unet.encoder.layers.0.conv.0.conv.0.weight"].shape[0],
            n_blocks=count("unet.encoder.layers.0.conv"),
            n_gru=sum(1 for k in state if k.startswith("fc.0.gru.weight_hh_l") and not k.endswith("_reverse")),
            gru_hidden=gru_w.shape[1],
            n_bins=state["fc.1.weight"].shape[0],
        )
    except KeyError as err:
        raise CheckpointError(f"cannot read the RMVPE architecture: missing key {err.args[0]!r}") from None
    except ValueError as err:
        raise CheckpointError(f"not a usable RMVPE state dict: {err}") from None
