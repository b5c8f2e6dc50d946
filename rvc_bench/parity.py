"""Parity metrics, numpy only: tensors, pitch tracks and audio. `ref` is always the reference (torch), `test` the
port under test (MLX), following mir_eval's estimate-against-reference convention."""

from __future__ import annotations

import numpy as np

CENT_TOLERANCE = 50.0  # cents: half a semitone, mir_eval's raw pitch accuracy tolerance
# Salience margin below which a frame's pitch decision is not determined by float32 arithmetic (a tie): torch's
# own RMVPE salience moves by up to 5.6e-4 when its float32 log-mel is replaced by the exact (float64) one (full
# size, 60 s, calibrated weights), which flips 4 of its 6001 frames by more than 50 cents.
TIE_MARGIN = 1e-3
CLEAR_BINS = 3  # a competing peak this many bins (60 cents) from the argmax moves the decoded pitch > 50 cents


def _pair(test, ref) -> tuple[np.ndarray, np.ndarray]:
    test = np.asarray(test, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if test.shape != ref.shape:
        raise ValueError(f"shape mismatch: test {test.shape} vs reference {ref.shape}")
    if test.size == 0:
        raise ValueError("empty arrays cannot be compared")
    return test.ravel(), ref.ravel()


def tensor_metrics(test, ref) -> dict[str, float]:
    """max/mean |Δ|, relative L2 ‖Δ‖/‖ref‖, Pearson r, cosine similarity, SNR dB = 10 log10(Σref² / ΣΔ²)."""
    t, r = _pair(test, ref)
    d = t - r
    err_energy = float(np.sum(d * d))
    ref_energy = float(np.sum(r * r))
    norm_t, norm_r = np.linalg.norm(t), np.linalg.norm(r)
    tc, rc = t - t.mean(), r - r.mean()
    denom = np.linalg.norm(tc) * np.linalg.norm(rc)
    return {
        "max_abs": float(np.max(np.abs(d))),
        "mean_abs": float(np.mean(np.abs(d))),
        "rel_l2": float(np.sqrt(err_energy) / norm_r) if norm_r > 0 else (0.0 if err_energy == 0 else np.inf),
        "pearson": float(np.dot(tc, rc) / denom) if denom > 0 else float("nan"),
        "cosine": float(np.dot(t, r) / (norm_t * norm_r)) if norm_t * norm_r > 0 else float("nan"),
        "snr_db": float(10 * np.log10(ref_energy / err_energy)) if err_energy > 0 else np.inf,
    }


def hz_to_cents(f0: np.ndarray) -> np.ndarray:
    """Cents above 10 Hz (the RMVPE convention); NaN where unvoiced."""
    f0 = np.asarray(f0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f0 > 0, 1200.0 * np.log2(f0 / 10.0), np.nan)


def decision_margin(salience, threshold: float) -> np.ndarray:
    """[T, bins] salience -> [T]: how far each frame's pitch decision is from changing: the distance of its peak
    from the voicing threshold and, where voiced, from the best bin at least CLEAR_BINS away from the argmax."""
    s = np.asarray(salience, dtype=np.float64)
    peak, top = s.max(axis=1), s.argmax(axis=1)
    far = np.abs(np.arange(s.shape[1])[None, :] - top[:, None]) >= CLEAR_BINS
    rival = np.where(far, s, -np.inf).max(axis=1)
    margin = np.abs(peak - threshold)
    return np.where(peak > threshold, np.minimum(margin, peak - rival), margin)


def frames_apart(f0_test, f0_ref) -> np.ndarray:
    """[T] bool: the frames where one track is voiced and the other not, or both are more than 50 cents apart."""
    t, r = _pair(f0_test, f0_ref)
    apart = (t > 0) != (r > 0)
    both = (t > 0) & (r > 0)
    apart[both] = np.abs(hz_to_cents(t[both]) - hz_to_cents(r[both])) > CENT_TOLERANCE
    return apart


def pitch_metrics(f0_test, f0_ref, ref_margin=None) -> dict[str, float]:
    """Frame-wise pitch agreement on one time base (both tracks at 100 frames/s; 0 Hz = unvoiced).

    raw pitch / chroma accuracy: share of reference-voiced frames where the test is voiced and within 50 cents
    (chroma: after folding octave errors), as mir_eval defines them. voicing_disagreement: (FP + FN) / N over all
    frames. cents_p50/p95: |Δcents| over frames both call voiced (NaN if there are none). frames_apart: the number
    of frames where one track is voiced and the other not, or both are voiced more than 50 cents apart;
    frames_apart_tied (given the reference's decision_margin): how many of those the reference decided by less than
    TIE_MARGIN, so float32 rounding alone could flip them (a tie, not a divergence).
    """
    t, r = _pair(f0_test, f0_ref)
    tv, rv = t > 0, r > 0
    n_ref_voiced = int(rv.sum())
    both = tv & rv
    dc = np.abs(hz_to_cents(t[both]) - hz_to_cents(r[both]))
    chroma = np.abs(dc - 1200.0 * np.round(dc / 1200.0))
    nan = float("nan")
    apart = frames_apart(t, r)
    tied = (
        {}
        if ref_margin is None
        else {"frames_apart_tied": float(np.sum(apart & (_pair(ref_margin, r)[0] < TIE_MARGIN)))}
    )
    return {
        "raw_pitch_accuracy": float(np.sum(dc <= CENT_TOLERANCE) / n_ref_voiced) if n_ref_voiced else nan,
        "raw_chroma_accuracy": float(np.sum(chroma <= CENT_TOLERANCE) / n_ref_voiced) if n_ref_voiced else nan,
        "voicing_recall": float(both.sum() / n_ref_voiced) if n_ref_voiced else nan,
        "voicing_false_alarm": float(np.sum(tv & ~rv) / np.sum(~rv)) if np.any(~rv) else nan,
        "voicing_disagreement": float(np.mean(tv != rv)),
        "cents_p50": float(np.median(dc)) if dc.size else nan,
        "cents_p95": float(np.percentile(dc, 95)) if dc.size else nan,
        "frames_apart": float(np.sum(apart)),
        **tied,
    }


# Parallel WaveGAN's multi-resolution STFT settings: (n_fft, hop, window), in samples.
MRSTFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def _stft_mag(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    from scipy import signal

    _, _, z = signal.stft(x, nperseg=win, noverlap=win - hop, nfft=n_fft, window="hann", boundary="even", padded=True)
    return np.maximum(np.abs(z), 1e-7)


def mrstft_distance(test, ref) -> float:
    """Mean over resolutions of spectral convergence + mean |log magnitude difference| (0 for identical audio)."""
    t, r = _pair(test, ref)
    total = 0.0
    for n_fft, hop, win in MRSTFT_RESOLUTIONS:
        mt, mr = _stft_mag(t, n_fft, hop, win), _stft_mag(r, n_fft, hop, win)
        total += np.linalg.norm(mr - mt) / np.linalg.norm(mr) + np.mean(np.abs(np.log(mr) - np.log(mt)))
    return float(total / len(MRSTFT_RESOLUTIONS))


def log_mel_correlation(test, ref, sr: int, n_mels: int = 80) -> float:
    """Pearson r of flattened log-mel spectrograms (n_fft 1024, hop 256), the prior art's perceptual check."""
    from scipy import signal

    t, r = _pair(test, ref)
    n_fft, hop = 1024, 256
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(mel(0.0), mel(sr / 2), n_mels + 2) / 2595.0) - 1.0)
    fb = np.maximum(
        0,
        np.minimum(
            (freqs - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None]),
            (edges[2:, None] - freqs) / (edges[2:, None] - edges[1:-1, None]),
        ),
    )
    specs = []
    for x in (t, r):
        _, _, z = signal.stft(x, nperseg=n_fft, noverlap=n_fft - hop, window="hann")
        specs.append(np.log10(np.maximum(fb @ np.abs(z) ** 2, 1e-10)).ravel())
    return float(np.corrcoef(specs[0], specs[1])[0, 1])


def audio_metrics(test, ref, sr: int) -> dict[str, float]:
    """Waveform metrics plus the two spectral ones (for outputs whose phase may legitimately differ)."""
    out = tensor_metrics(test, ref)
    out["mrstft"] = mrstft_distance(test, ref)
    out["log_mel_corr"] = log_mel_correlation(test, ref, sr)
    return out
