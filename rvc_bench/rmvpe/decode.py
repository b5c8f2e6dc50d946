"""Salience -> f0, shared by both backends (numpy; spec §3 "Decoding" and "f0 post-processing").

Dtypes follow the reference: salience arrives as float32, the cents table is float64, so the weighted average and
f0 are float64 (cast pitchf to float32 where a network consumes it).
"""

from __future__ import annotations

import numpy as np

from rvc_bench.rmvpe.config import N_BINS, THRESHOLD

CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (31.70 Hz relative to 10 Hz)
CENTS_PER_BIN = 20.0
HALF_WINDOW = 4  # the weighted average spans the 9 bins argmax-4 .. argmax+4
F0_MIN, F0_MAX = 50.0, 1100.0  # Hz: ends of the coarse-pitch scale
F0_MEL_MIN = 1127.0 * np.log(1.0 + F0_MIN / 700.0)  # 77.7550...
F0_MEL_MAX = 1127.0 * np.log(1.0 + F0_MAX / 700.0)  # 1064.4082...

# Zero-padded by 4 on both sides, like the salience, so a window at the edge reads zeros.
CENTS_MAPPING = np.pad(CENTS_PER_BIN * np.arange(N_BINS) + CENTS_OFFSET, (HALF_WINDOW, HALF_WINDOW))  # [368] float64
_WINDOW = np.arange(2 * HALF_WINDOW + 1)  # [9]


def local_average_cents(salience: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """[T, 360] salience -> [T] cents: salience-weighted mean of the 9 bins around the argmax; 0 where
    max <= threshold."""
    salience = np.asarray(salience)
    if salience.ndim != 2 or salience.shape[1] != N_BINS:
        raise ValueError(f"salience must be [T, {N_BINS}], got {salience.shape}")
    padded = np.pad(salience, ((0, 0), (HALF_WINDOW, HALF_WINDOW)))  # [T, 368]
    # Window starts at (argmax + 4) - 4 in padded coordinates.
    idx = np.argmax(salience, axis=1)[:, None] + _WINDOW[None, :]  # [T, 9]
    window = np.take_along_axis(padded, idx, axis=1)  # [T, 9] float32
    cents = np.sum(window * CENTS_MAPPING[idx], axis=1) / np.sum(window, axis=1)  # float64
    cents[np.max(salience, axis=1) <= threshold] = 0.0
    return cents


def cents_to_f0(cents: np.ndarray) -> np.ndarray:
    """cents above 10 Hz -> Hz; cents 0 (unvoiced) -> 0 Hz."""
    f0 = 10.0 * 2.0 ** (np.asarray(cents) / 1200.0)
    f0[f0 == 10.0] = 0.0
    return f0


def decode(salience: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """[T, 360] salience -> [T] f0 in Hz (float64), 0 = unvoiced."""
    with np.errstate(invalid="ignore", divide="ignore"):  # an all-zero window gives 0/0; it is below threshold
        cents = local_average_cents(salience, threshold)
    return cents_to_f0(np.nan_to_num(cents, nan=0.0))


def transpose(f0: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch by `semitones` (f0_up_key); unvoiced frames stay 0."""
    return np.asarray(f0) * 2.0 ** (semitones / 12.0)


def coarse_pitch(f0: np.ndarray) -> np.ndarray:
    """f0 (Hz) -> integer pitch 1..255 indexing emb_pitch: mel scale between 50 and 1100 Hz, rint; unvoiced -> 1."""
    f0_mel = 1127.0 * np.log(1.0 + np.asarray(f0, dtype=np.float64) / 700.0)
    voiced = f0_mel > 0
    f0_mel[voiced] = (f0_mel[voiced] - F0_MEL_MIN) * 254.0 / (F0_MEL_MAX - F0_MEL_MIN) + 1.0
    f0_mel[f0_mel <= 1.0] = 1.0
    f0_mel[f0_mel > 255.0] = 255.0
    return np.rint(f0_mel).astype(np.int64)  # rint: round half to even, as the reference does
