"""What the RMVPE parity tests share (test_rmvpe.py, test_rmvpe_checkpoints.py): the tiny and full-size checkpoints
and twins, cached per process, torch's log-mel, each twin's network on a given log-mel, and the bounds of
references/parity_tolerances.csv the twins are held to (tolerances measured: test_rmvpe.py)."""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np
import torch

from rvc_bench import parity, tolerances
from rvc_bench.fixtures import cache_dir
from rvc_bench.mel.model_torch import MelSpectrogram as TorchMel
from rvc_bench.rmvpe import convert, model_mlx, model_torch, synthetic

# Bounds: references/parity_tolerances.csv. Network parity (same log-mel into both twins), checks "network-tiny" (8x
# the measured 2.4e-6) and "network-full" (the 1e-4). Whole stage (own log-mel each), check "benchmark":
# ~3x the measured 3.0e-4 / 5.6e-4 max |Δsalience|; the log-mel difference dominates (test_rmvpe.py). f0 derived from a
# salience, the pitch rows of "benchmark": the threshold can only flip frames whose peak lies within the salience
# error of 0.03; none did in any measured clip (0.1 % allowed: 0 frames at 5 s). |Δcents| on jointly voiced frames:
# measured p50 <= 1e-3, p95 <= 1e-2 cents (p50 <= 1, the bound); one argmax flip between near-equal bins moves
# a frame by hundreds of cents, so p95 and raw pitch accuracy get room for a few such frames in long clips. Chunked
# against whole-sequence inference, check "chunked": the U-Net in chunks with its receptive field as overlap
# (config.receptive_field: 1583 frames full size, 59 tiny, rounded up to 1600 / 64) and the BiGRU over the whole
# sequence compute one pass's numbers on any weights: measured bitwise equal at full size (40 s, chunk 1024) and
# on MLX tiny, 1.2e-6 on torch tiny (10 s, chunk 64). Chunks of the whole network cut the BiGRU's state, which no
# overlap repairs: 1.1e-2 (calibrated weights, whose GRU forgets within a few frames) to 0.13 (long-memory weights)
# max |Δsalience| on tiny 10 s with 64 frames of overlap; the original's 32k-frame chunks had no overlap at all, so
# its output changed next to every 320 s boundary.
SALIENCE = ("max_abs", "pearson")
PITCH = ("voicing_disagreement", "cents_p50", "cents_p95", "raw_pitch_accuracy")


# ---------------------------------------------------------------------------------------------------------------
# Models and inputs, cached per process


@functools.lru_cache(maxsize=None)
def checkpoint(size: str):
    return synthetic.ensure_checkpoint(cache_dir(), size)


@functools.lru_cache(maxsize=None)
def torch_model(size: str) -> model_torch.E2E:
    return convert.load_torch(checkpoint(size)).model


@functools.lru_cache(maxsize=None)
def mlx_model(size: str) -> model_mlx.E2E:
    return convert.load_mlx(checkpoint(size)).model


def torch_log_mel(audio: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return TorchMel()(torch.from_numpy(audio).unsqueeze(0))  # [1, 128, T]


def net_torch(size, mel: torch.Tensor, **chunking) -> np.ndarray:
    with torch.inference_mode():
        return torch_model(size).mel2hidden(mel, **chunking)[0].numpy()


def net_mlx(size, mel: torch.Tensor, **chunking) -> np.ndarray:
    return np.array(mlx_model(size).mel2hidden(mx.array(mel.numpy().transpose(0, 2, 1)), **chunking)[0])


def assert_salience_close(test, ref, check: str):
    """Salience parity under one check of the tolerance table."""
    return tolerances.assert_within("rmvpe", check, parity.tensor_metrics(test, ref), only=SALIENCE)


def assert_f0_close(f0_test, f0_ref):
    """f0 parity: the pitch rows of the benchmark check, which apply to every f0 decoded from a compared salience."""
    return tolerances.assert_within("rmvpe", tolerances.BENCHMARK, parity.pitch_metrics(f0_test, f0_ref), only=PITCH)
