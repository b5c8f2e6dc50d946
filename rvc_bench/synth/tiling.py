"""Time tiles for the synthesizer's decoder (framework-free; both twins loop over the same spans).

The decoder's filter (conv_pre, the ConvTranspose stages, the ResBlocks, the NSF noise convs, conv_post) is a
stack of convolutions whose rates are whole multiples of the frame rate, so it commutes with shifts by whole frames
and each output frame depends on a fixed window of frames around it (`context`). Evaluating the filter on a tile
widened by that window on each side and keeping the tile's own samples therefore gives the untiled output, up to
float rounding. The harmonic source is not local (the sine phase is a cumulative sum over the whole sequence), so it
is computed once for the whole length and sliced per tile.
"""

from __future__ import annotations

import math

from rvc_bench.synth.config import SynthConfig

# Default decoder tile of the MLX twin on the CPU device, in 10 ms frames. Measured on full-size v2-40k (MLX 0.32.4
# CPU, 2-core AMD EPYC, MKL sgemm preloaded, shared machine): one pass peaks at 4.6 GiB (MLX counter) at 10 s and
# does not fit 24 GB at 41 s; tiles of 100 / 250 / 500 / 1000 frames peak at 0.58 / 1.27 / 2.41 / 4.70 GiB at
# 41 s, as at 10 s. Interleaved medians: a 41 s window in 124 s (250), 125 s (500), 141 s (1000); 10 s in 26.8 s
# (250) against 28.9 s in one pass. 250 is as fast as any and half the memory of 500.
TILE_FRAMES_CPU = 250

CONV_PRE_PAD = 3  # conv_pre and conv_post: kernel 7, "same" padding
CONV_POST_PAD = 3


def context(cfg: SynthConfig) -> tuple[int, int]:
    """(left, right): how many frames before and after an output frame its samples depend on, through every layer
    of the filter (activations and the harmonic source alike). Full size: 10 to 13 frames per side (v2-40k: 11).

    Walks the dependency interval of output frame 0 (samples [0, upp)) back through the stack without boundaries:
    a stride-1 conv widens it by its padding on each side, a ConvTranspose(k, u, p) maps output n to inputs
    ceil((n + p - k + 1) / u) .. floor((n + p) / u), a noise conv (k 2s, stride s, pad s/2; or 1x1) maps stage
    sample j to source samples j s - s/2 .. j s + 3s/2 - 1. Each interval is converted to frames at its own rate.
    """
    left = right = 0

    def reach(lo: int, hi: int, rate: int) -> None:  # interval [lo, hi] in samples at `rate` per frame
        nonlocal left, right
        left = max(left, -(lo // rate))
        right = max(right, hi // rate)

    rates = [math.prod(cfg.upsample_rates[: i + 1]) for i in range(len(cfg.upsample_rates))]
    resblock_pad = max(
        sum((k - 1) // 2 * (d + 1) for d in dil)  # per pair: dilated conv, then a dilation-1 conv
        for k, dil in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
    )
    lo, hi = -CONV_POST_PAD, cfg.upp - 1 + CONV_POST_PAD
    for i in reversed(range(len(rates))):
        lo, hi = lo - resblock_pad, hi + resblock_pad  # the stage's ResBlocks (averaged: the widest counts)
        reach(lo, hi, rates[i])
        if cfg.f0:
            s = cfg.noise_strides[i]
            reach(lo * s - s // 2, hi * s + 3 * s // 2 - 1, cfg.upp) if i < len(rates) - 1 else reach(lo, hi, cfg.upp)
        u, k = cfg.upsample_rates[i], cfg.upsample_kernel_sizes[i]
        p = (k - u) // 2
        lo, hi = -(-(lo + p - k + 1) // u), (hi + p) // u
        reach(lo, hi, rates[i] // u)
    reach(lo - CONV_PRE_PAD, hi + CONV_PRE_PAD, 1)
    return left, right


def spans(frames: int, tile_frames: int | None, ctx: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(lo, a, b, hi) per tile: frames [lo, hi) are computed, [a, b) kept. One span (0, 0, T, T) when tiling is off
    (tile_frames 0 or None) or the whole length fits one tile plus its context."""
    if not tile_frames or frames <= tile_frames + ctx[0] + ctx[1]:
        return [(0, 0, frames, frames)]
    return [
        (max(0, a - ctx[0]), a, min(a + tile_frames, frames), min(frames, a + tile_frames + ctx[1]))
        for a in range(0, frames, tile_frames)
    ]
