"""Reading user audio as upstream's loader does (`ffmpeg -i FILE -f f32le -ac 1 -ar 16000`): decode, downmix,
resample; and resampling the output.

The references are ffmpeg's own results, computed once with PyAV (which bundles ffmpeg's libraries) and stored in
tests/data/ffmpeg_load.npz, so the tests need no ffmpeg. To recompute them: `pip install -e .[ffmpeg]` (PyAV), then
`python tests/test_audio.py` (the live test here redoes the comparison when `av` is installed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from rvc_bench import audio

GOLDEN = Path(__file__).parent / "data" / "ffmpeg_load.npz"
SECONDS = 0.125
# Files as users have them: (sample rate, channels, soundfile format, subtype). Lossless formats only, so a different
# libsndfile writes the same samples the reference was made from.
CASES = {
    "44k1_stereo_pcm16_wav": (44100, 2, "WAV", "PCM_16"),
    "22k05_mono_pcm24_flac": (22050, 1, "FLAC", "PCM_24"),
    "48k_stereo_float_wav": (48000, 2, "WAV", "FLOAT"),
    "16k_stereo_pcm16_wav": (16000, 2, "WAV", "PCM_16"),  # downmix only
    "8k_mono_pcm16_wav": (8000, 1, "WAV", "PCM_16"),  # upsampling
    "11k025_3ch_pcm16_wav": (11025, 3, "WAV", "PCM_16"),  # ffmpeg's default 3-channel layout: the third is LFE
    "32k_5.1_pcm16_flac": (32000, 6, "FLAC", "PCM_16"),
}
# Containers whose channel order ffmpeg reads for 3..8 channels; the reference holds the weights it applied, measured
# by least squares (lossy Vorbis included: the weights do not depend on the encoder).
LAYOUT_FORMATS = {"WAV": "FLOAT", "FLAC": "PCM_24", "OGG": "VORBIS"}
TOLERANCE = 3e-7  # max abs against ffmpeg: float32 rounding (ffmpeg computes in float32, we in float64)


def signal_for(sr: int, channels: int, seconds: float = SECONDS) -> np.ndarray:
    """[n, channels] float32, the same on every machine: per channel a chirp from 50 Hz to 0.49 sr (it crosses the
    resampler's cutoff), a harmonic tone and integer-generated noise."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    k = np.arange(n, dtype=np.int64)
    out = np.empty((n, channels))
    for c in range(channels):
        chirp = np.sin(2 * np.pi * (50 * t + (0.49 * sr - 50) * t**2 / (2 * seconds)))
        tone = sum(np.sin(2 * np.pi * h * (110 + 37 * c) * t) / h for h in range(1, 9))
        noise = ((k * 1103515245 + 12345 * (c + 1)) % 2**31) / 2**30 - 1.0
        out[:, c] = 0.3 * chirp + 0.15 * tone + 0.1 * noise
    return out.astype(np.float32)


def write_case(folder: Path, name: str) -> Path:
    import soundfile as sf

    sr, channels, fmt, subtype = CASES[name]
    path = folder / f"{name}.{fmt.lower()}"
    sf.write(path, signal_for(sr, channels), sr, format=fmt, subtype=subtype)
    return path


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN) as data:
        return dict(data)


@pytest.mark.parametrize("name", list(CASES))
def test_read_audio_is_ffmpegs_decode_downmix_and_resample(name, golden, tmp_path):
    x, source = audio.read_audio(write_case(tmp_path, name))
    ref = golden[name]
    assert x.dtype == np.float32 and x.shape == ref.shape  # ffmpeg's length: ceil(n * 16000 / sr)
    assert np.abs(x - ref).max() <= TOLERANCE, np.abs(x - ref).max()
    sr, channels = CASES[name][:2]
    assert source.startswith(f"{sr} Hz, {channels} channel")


def test_stereo_downmix_is_not_the_mean(golden, tmp_path):
    """ffmpeg mixes stereo to (L + R) / sqrt 2: a file with the same signal in both channels is sqrt 2 louder in
    mono, as upstream's input is."""
    import soundfile as sf

    sf.write(tmp_path / "dual.wav", np.repeat(signal_for(16000, 1), 2, axis=1), 16000, subtype="FLOAT")
    x, _ = audio.read_audio(tmp_path / "dual.wav")
    np.testing.assert_allclose(x, np.sqrt(2) * signal_for(16000, 1)[:, 0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fmt", list(LAYOUT_FORMATS))
def test_downmix_weights_are_ffmpegs_for_every_channel_count(fmt, golden):
    for channels in range(1, audio.MAX_CHANNELS + 1):
        np.testing.assert_allclose(
            audio.downmix_weights(channels, fmt),
            golden[f"weights_{fmt}_{channels}"],
            atol=1e-4,
            err_msg=f"{fmt}, {channels} channels",
        )


def test_resample_keeps_dc_and_tones_and_has_ffmpegs_length():
    for sr_in, sr_out in ((44100, 16000), (16000, 48000), (40000, 44100), (8000, 16000)):
        n = sr_in // 3 + 7
        y = audio.resample(np.full(n, 0.5), sr_in, sr_out)
        assert y.size == -(-n * sr_out // sr_in)
        # swr scales every phase by phase 0's sum: the others are within 1e-5 of unit gain when upsampling
        np.testing.assert_allclose(y[100:-100], 0.5, rtol=2e-5)
        t = np.arange(n) / sr_in
        tone = audio.resample(np.sin(2 * np.pi * 1000 * t), sr_in, sr_out)
        expected = np.sin(2 * np.pi * 1000 * np.arange(y.size) / sr_out)
        assert np.abs(tone - expected)[200:-200].max() < 1e-3, (sr_in, sr_out)  # 1 kHz: deep in the passband
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    assert np.array_equal(audio.resample(x, 16000, 16000), x)


def test_ogg_and_mp3_read_like_the_others(tmp_path):
    """Lossy formats through libsndfile's decoders (libvorbis, mpg123; within 1e-6 of ffmpeg's decoders on the same
    file). Their encoders change the samples, so the check is coarse: same length, level and waveform."""
    import soundfile as sf

    ref = audio.resample(signal_for(24000, 2).astype(np.float64) @ audio.downmix_weights(2), 24000, 16000)
    for fmt, subtype in (("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")):
        path = tmp_path / f"x.{fmt.lower()}"
        try:
            sf.write(path, signal_for(24000, 2), 24000, format=fmt, subtype=subtype)
        except (sf.LibsndfileError, TypeError, ValueError):  # a libsndfile built without this codec
            continue
        x, source = audio.read_audio(path)
        assert source.endswith(f"{fmt} {subtype}") and x.shape == ref.shape
        assert np.corrcoef(x, ref)[0, 1] > 0.95, fmt  # a wrong rate or channel order would decorrelate
        assert 0.9 < np.linalg.norm(x) / np.linalg.norm(ref) < 1.1, fmt  # the mean instead of ffmpeg's mix: 0.71


def test_against_live_ffmpeg(tmp_path):
    """The stored reference is still what ffmpeg computes (only where PyAV is installed)."""
    pytest.importorskip("av")
    for name in CASES:
        path = write_case(tmp_path, name)
        ref = ffmpeg_load(path)
        assert np.abs(audio.read_audio(path)[0] - ref).max() <= TOLERANCE, name


# ---------------------------------------------------------------------------------------------------------------
# The reference, computed with ffmpeg's libraries (PyAV)


def ffmpeg_load(path: Path, sr: int = audio.SAMPLE_RATE) -> np.ndarray:
    """`ffmpeg -i path -f f32le -ac 1 -ar sr -`: decode, then the filter graph the ffmpeg CLI builds for those output
    options (aformat to float mono at sr, with the aresample filter ffmpeg inserts), flushed at the end."""
    import av

    chunks = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        graph = av.filter.Graph()
        src = graph.add_abuffer(template=stream)
        fmt = graph.add("aformat", f"sample_fmts=flt:sample_rates={sr}:channel_layouts=mono")
        sink = graph.add("abuffersink")
        src.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        for frame in [*container.decode(stream), None]:
            graph.push(frame)
            while True:
                try:
                    chunks.append(graph.pull().to_ndarray().reshape(-1))
                except (av.BlockingIOError, av.EOFError):
                    break
    return np.concatenate(chunks).astype(np.float32)


def make_golden(out: Path = GOLDEN) -> None:
    import tempfile

    import soundfile as sf

    data = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            data[name] = ffmpeg_load(write_case(Path(tmp), name))
        for fmt, subtype in LAYOUT_FORMATS.items():
            for channels in range(1, audio.MAX_CHANNELS + 1):
                path = Path(tmp) / f"layout.{fmt.lower()}"
                sf.write(path, signal_for(16000, channels, 1.0), 16000, format=fmt, subtype=subtype)
                decoded, _ = sf.read(path, dtype="float64", always_2d=True)
                mixed = ffmpeg_load(path).astype(np.float64)
                n = min(len(mixed), len(decoded))
                data[f"weights_{fmt}_{channels}"] = np.linalg.lstsq(decoded[:n], mixed[:n], rcond=None)[0]
    out.parent.mkdir(exist_ok=True)
    np.savez_compressed(out, **data)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(make_golden())
