"""Audio constants (with units), validation, audio file I/O as upstream's ffmpeg loader does it (any format, rate
and channel count -> 16 kHz mono), resampling, and the RVC front end (peak guard, high-pass)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from rvc_bench.fileio import atomic_write_bytes

SAMPLE_RATE = 16000  # Hz: every network input is 16 kHz mono
HOP = 160  # samples per 10 ms frame (the f0 and feature frame rate is 100 Hz)
FRAME_RATE = SAMPLE_RATE // HOP  # 100 frames per second
MIN_SECONDS = 0.1  # shortest input the pipeline accepts: one HuBERT frame needs 400 samples (25 ms); keep margin
SILENCE_PEAK = 1 / 32768  # one 16-bit step: input whose peak is no louder than this is silence (output: all zero)

# Output files by extension: (soundfile format, subtype). The samples are RVC's int16 result, written as they are
# (16-bit PCM; Vorbis in .ogg, which has no PCM).
OUTPUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}

# 5th-order Butterworth high-pass at 48 Hz, as the RVC pipeline applies with filtfilt (spec §1.3).
HIGHPASS_ORDER, HIGHPASS_HZ = 5, 48


class AudioError(ValueError):
    """Unusable audio: the message says what is wrong with it."""


def validate(x: np.ndarray, what: str = "audio", sr: int = SAMPLE_RATE) -> np.ndarray:
    """Reject audio no stage can use (empty, NaN/inf, silent, too short, not mono); return it as float32."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise AudioError(f"{what}: expected mono samples [N], got shape {x.shape}")
    if x.size == 0:
        raise AudioError(f"{what}: empty")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{what}: contains NaN or infinite samples")
    if x.size < MIN_SECONDS * sr:
        raise AudioError(f"{what}: {x.size / sr:.3f} s is too short (minimum {MIN_SECONDS} s)")
    peak = float(np.abs(x).max())
    if peak <= SILENCE_PEAK:
        raise AudioError(f"{what}: silent (peak {peak:.3g}, at most one 16-bit step)")
    return x.astype(np.float32, copy=False)


# Mono downmix as ffmpeg does it (upstream decodes with `ffmpeg -ac 1 -ar 16000 -f f32le`): libswresample's default
# matrix with float output, which is not normalised: front left/right 1/sqrt(2) each (so a stereo file's mono is
# (L + R) / sqrt(2), not the mean), centre 1, LFE 0, back and side channels 1/2 each.
_CHANNEL_WEIGHTS = {
    "FL": 0.5**0.5,
    "FR": 0.5**0.5,
    "FC": 1.0,
    "LFE": 0.0,
    "BL": 0.5,
    "BR": 0.5,
    "BC": 0.5,
    "SL": 0.5,
    "SR": 0.5,
}
# The channel order ffmpeg assumes for 3 to 8 channels, by container: FLAC and Vorbis define one per count; for WAV
# and other containers ffmpeg takes its default layout for the count (a WAV channel mask naming another layout is not
# read here). Mono is FC, stereo FL FR everywhere.
_LAYOUTS = {
    "FLAC": (
        "FL FR FC",
        "FL FR BL BR",
        "FL FR FC BL BR",
        "FL FR FC LFE BL BR",
        "FL FR FC LFE BC SL SR",
        "FL FR FC LFE BL BR SL SR",
    ),
    "OGG": (
        "FL FC FR",
        "FL FR BL BR",
        "FL FC FR BL BR",
        "FL FC FR BL BR LFE",
        "FL FC FR SL SR BC LFE",
        "FL FC FR SL SR BL BR LFE",
    ),
    "default": (
        "FL FR LFE",
        "FL FR FC BC",
        "FL FR FC SL SR",
        "FL FR FC LFE SL SR",
        "FL FR FC LFE BC SL SR",
        "FL FR FC LFE BL BR SL SR",
    ),
}
MAX_CHANNELS = 8

# libswresample's defaults (ffmpeg's default resampler): a Kaiser-windowed sinc of 32 taps at the lower rate,
# cutoff at 0.97 of the lower Nyquist frequency, Kaiser beta 9.
SWR_FILTER_SIZE, SWR_CUTOFF, SWR_KAISER_BETA = 32, 0.97, 9.0


def downmix_weights(channels: int, container: str = "WAV") -> np.ndarray:
    """Per-channel weights of ffmpeg's mono downmix for a file of `container` (soundfile's format name)."""
    if channels == 1:
        return np.ones(1)
    if channels == 2:
        return np.full(2, 0.5**0.5)
    layout = _LAYOUTS.get(container, _LAYOUTS["default"])[channels - 3]
    return np.array([_CHANNEL_WEIGHTS[name] for name in layout.split()])


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample as ffmpeg's default resampler (libswresample) does, equal to it within float32 rounding.

    scipy's polyphase resample_poly, given swr's filter: a Kaiser-windowed sinc on the grid of 1/up input samples,
    its taps spanning [-taps/2, taps/2) input samples, every phase scaled by the sum of phase 0's taps. The edges are
    extended as swr extends them: mirrored about the first sample at the start; at the end, (taps + 1) // 2 samples
    mirrored including the last one. Output length ceil(n * sr_out / sr_in). (swr interpolates between 1024 phases
    where sr_out / gcd needs more; exact phases differ from that by ~1e-6.)
    """
    from scipy import signal

    x = np.asarray(x, dtype=np.float64)
    if sr_in == sr_out:
        return x.astype(np.float32)
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    factor = min(up * SWR_CUTOFF / down, 1.0)  # cutoff relative to the input's Nyquist frequency
    taps = math.ceil(SWR_FILTER_SIZE / factor)
    taps += taps % 2
    h = signal.firwin(taps * up + 1, factor / up, window=("kaiser", SWR_KAISER_BETA))
    h[-1] = 0.0
    h /= h[::up].sum() * up  # resample_poly multiplies by up
    n, n_out = x.size, -(-x.size * up // down)
    head = down * -(-taps // down)  # whole periods of `down`, so that output k lands on input k * down / up
    start = x[1 : taps + 1][::-1]
    end = x[::-1][: (min(n, taps) + 1) // 2]
    xp = np.concatenate([np.zeros(head - start.size), start, x, end, np.zeros(taps + down)])
    y = signal.resample_poly(xp, up, down, window=h, padtype="constant")
    k0 = head * up // down
    return y[k0 : k0 + n_out].astype(np.float32)


def read_audio(path: str | Path) -> tuple[np.ndarray, str]:
    """Any file libsndfile decodes (wav, flac, ogg, mp3, ...; int or float samples; 1 to 8 channels; any rate) ->
    (16 kHz mono float32, a description of the source), as upstream's ffmpeg loader makes it: downmixed with
    ffmpeg's weights, then resampled with ffmpeg's default resampler (see downmix_weights, resample). Validated
    after both steps."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        info = sf.info(path)
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"{path}: unreadable audio ({err})") from None
    if not 1 <= x.shape[1] <= MAX_CHANNELS:
        raise AudioError(f"{path}: {x.shape[1]} channels; rvc-bench reads 1 to {MAX_CHANNELS}")
    mono = x.astype(np.float64) @ downmix_weights(x.shape[1], info.format)
    source = f"{sr} Hz, {x.shape[1]} channel{'s' * (x.shape[1] > 1)}, {info.format} {info.subtype}"
    return validate(resample(mono, sr, SAMPLE_RATE), str(path)), source


def output_format(path: str | Path) -> tuple[str, str]:
    """(format, subtype) for an output file, from its extension; anything else is an error (checked up front)."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise AudioError(
            f"{path}: unsupported output format {suffix or '(no extension)'!r}: use {', '.join(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[suffix]


def write_audio(path: str | Path, samples: np.ndarray, sr: int) -> None:
    """Write int16 samples in the format the extension names, atomically (no half-written file)."""
    import soundfile as sf

    fmt, subtype = output_format(path)
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.int16), sr, format=fmt, subtype=subtype)
    atomic_write_bytes(path, buf.getvalue())


def peak_guard(x: np.ndarray) -> np.ndarray:
    """Attenuate (never boost) so that max |x| <= 0.95 (spec §1.2)."""
    m = np.abs(x).max() / 0.95
    return x / m if m > 1 else x


def highpass(x: np.ndarray) -> np.ndarray:
    """Zero-phase 48 Hz high-pass; float64 out, as the pipeline keeps it until the networks (spec §1.3)."""
    from scipy import signal

    b, a = signal.butter(HIGHPASS_ORDER, HIGHPASS_HZ, btype="high", fs=SAMPLE_RATE)
    return signal.filtfilt(b, a, np.asarray(x, dtype=np.float64))
