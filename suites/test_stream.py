"""The live mode (rvc_bench.stream, spec ../shared/spec/rvc_realtime.md): sizes against the spec's worked examples,
the block logic (buffers, SOLA, crossfade) against the spec's identity test, MLX against torch block by block, the
stream against the offline pipeline, and bad options. Tiny models, 4 s clips (the benchmark is
test_bench_stream.py). Bounds: references/parity_tolerances.csv, stage stream (measurements in each row's why).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from types import SimpleNamespace

import numpy as np
import pytest
import stream_twins
from test_bench_pipeline import models

from rvc_bench import parity, pipeline, stream, tolerances
from rvc_bench.audio import HOP, SAMPLE_RATE
from rvc_bench.fixtures import generate
from rvc_bench.rmvpe.config import THRESHOLD

DEFAULTS = stream.StreamOptions()


@pytest.mark.parametrize(
    "times, sizes",
    [  # (block, crossfade, extra) -> (b, c, sola, T, skip_head, return_length, f0 window E, delay ms)
        ((0.25, 0.05, 2.5), (25, 5, 4, 281, 250, 30, 4960, 560)),  # GUIConfig (spec §2's first row)
        ((0.13, 0.08, 2.0), (13, 8, 4, 222, 200, 18, 4960, 350)),  # shipped config.json
        ((0.125, 0.01, 0.0), (12, 1, 1, 14, 0, 14, 4960, 260)),  # half to even; a 10 ms crossfade
        ((1.0, 0.05, 2.5), (100, 5, 4, 356, 250, 105, 20320, 2060)),  # E rounded up to 128 RMVPE frames
    ],
)
def test_sizes_follow_the_spec(times, sizes):
    f = stream.Frames.of(stream.StreamOptions(*times))
    got = (f.block, f.crossfade, f.sola, f.total, f.skip_head, f.return_length, f.f0_window)
    assert got + (round(f.delay_seconds() * 1000),) == sizes
    assert (f.f0_window // HOP + 1) % 32 == 0  # RMVPE sees whole 32-frame units


def test_fade_runs_from_zero_to_one():
    w = stream.fade_in(40)
    assert w[0] == 0 and w[-1] == 1 and np.all(np.diff(w) > 0)
    np.testing.assert_allclose(w, np.sin(0.5 * np.pi * np.arange(40) / 39) ** 2, atol=1e-7)


class Identity(stream.Stream):
    """Spec §8.3's plumbing test with a chunk that the SOLA search and the crossfade must handle: the chunk of block
    n is the input aligned with the synthesizer's frames, delayed by a further JITTER[n % 2] samples, plus a level
    of DC[n] (the blocks disagree in the overlap, as converted blocks do)."""

    JITTER = (0, 7)

    def infer(self):
        n, x = self.blocks, self.frames.extra * HOP - self.JITTER[self.blocks % 2]
        return self.buffer[x : x + self.frames.return_length * HOP] + np.float32(0.01 * n)


def identity_stream(opts=DEFAULTS) -> Identity:
    cfg = SimpleNamespace(upp=HOP, sr=SAMPLE_RATE, f0=False, spk_embed_dim=1, inter_channels=1)  # output at 16 kHz
    return Identity(SimpleNamespace(cfg=cfg), dataclasses.replace(opts, rms_mix_rate=1.0))


def identity_expected(x, s: Identity, n_blocks: int) -> np.ndarray:
    """The input delayed by crossfade + 10 ms, plus each block's level, faded in over the SOLA buffer from the
    previous block's level (block 0's from the zero SOLA buffer, i.e. the zero-delayed-input before the stream)."""
    f, b, sola = s.frames, s.frames.block * HOP, s.frames.sola * HOP
    delayed = np.concatenate([np.zeros((f.crossfade + 1) * HOP, np.float32), x])[: n_blocks * b]
    level = np.repeat(0.01 * np.arange(n_blocks), b)
    previous = np.repeat(0.01 * (np.arange(n_blocks) - 1), b)
    fade = np.tile(np.concatenate([s.fade_in, np.ones(b - sola, np.float32)]), n_blocks)
    out = delayed + level * fade + previous * (1 - fade)
    out[:sola] = (delayed[:sola] + 0.0) * s.fade_in  # block 0 fades in from the zero SOLA buffer
    return out


def run_identity(x, s: Identity, offsets=None):
    b = s.frames.block * HOP
    outs = [s.push(x[i : i + b], None if offsets is None else offsets[i // b]) for i in range(0, x.size, b)]
    return np.concatenate([o for o, _ in outs]), [off for _, off in outs]


def test_blocks_join_into_the_delayed_input():
    """Output = input delayed by exactly crossfade + 10 ms; the search finds each chunk's jitter; the fade blends
    the blocks' levels. A wrong offset or a missing crossfade breaks it."""
    x = (0.1 * np.random.default_rng(0).standard_normal(12 * 25 * HOP)).astype(np.float32)  # non-periodic
    s = identity_stream()
    out, offsets = run_identity(x, s)
    assert offsets == [0, 7] * 6
    expected = identity_expected(x, s, 12)
    np.testing.assert_allclose(out, expected, atol=1e-6)  # fade_in + fade_out = 1: float32 rounding only
    wrong, _ = run_identity(x, identity_stream(), offsets=[0] * 12)  # no search
    assert np.abs(wrong - expected).max() > 0.05
    hard = identity_stream()
    hard.fade_in = np.ones_like(hard.fade_in)  # no crossfade: the previous block's level jumps
    assert np.abs(run_identity(x, hard)[0] - expected).max() > 5e-3


def test_every_block_returns_block_time_of_output_and_state_is_bounded():
    s = identity_stream(stream.StreamOptions(block_time=0.1, crossfade_time=0.1, extra_time=0.3))
    x = np.random.default_rng(1).standard_normal(10 * HOP * 10).astype(np.float32)
    out, offsets = run_identity(x, s)
    assert out.shape == x.shape and all(0 <= o <= HOP for o in offsets)
    with pytest.raises(ValueError, match="a block is 1600 samples"):
        s.push(x[:100])


# ---------------------------------------------------------------------------------------------------------------
# On the tiny models


CLIP_SECONDS = 4.0


def clip(seed: int = 1) -> np.ndarray:
    return generate(CLIP_SECONDS, seed=seed).audio


OPTS = stream.StreamOptions(extra_time=1.0, seed=0, rms_mix_rate=0.5)  # 1 s of context: half the time


@functools.lru_cache(maxsize=None)
def torch_stream(seconds: int = 3):
    x = clip()[: seconds * SAMPLE_RATE]
    return x, stream_twins.logged_run(models("torch"), x, OPTS)


def test_another_noise_seed_breaks_the_synthesis_bounds_only():
    x, ref = torch_stream()
    other = stream_twins.twin_metrics(models("torch"), x, dataclasses.replace(OPTS, seed=1), ref)
    print(f"\nanother seed: {other['same_f0_snr_db']:.1f} dB")
    broken = {b.split(" ")[0] for b in tolerances.broken("stream", "twins", other)}
    assert broken == {"same_f0_snr_db", "same_f0_offsets_apart"}


def detuned(models) -> pipeline.WithPitch:
    """`models` with RMVPE's f0 a fifth up on the frames it decided clearly (margin >= 0.01: not ties), salience
    untouched."""

    def pitch(audio):
        salience, f0 = models.pitch(audio)
        clear = parity.decision_margin(salience, THRESHOLD) >= 0.01
        return salience, np.where(clear & (f0 > 0), 1.5 * f0, f0)

    return pipeline.WithPitch(models, pitch)


def test_a_pitch_divergence_is_not_taken_for_a_tie():
    x = clip()[: 2 * SAMPLE_RATE]
    opts = stream.StreamOptions(extra_time=0.5, seed=0)
    ref = stream_twins.logged_run(models("torch"), x, opts)
    metrics = stream_twins.twin_metrics(detuned(models("torch")), x, opts, ref)
    assert metrics["untied_frames_apart"] > 10 and metrics["frames_apart_tied"] == 0
    assert "untied_frames_apart" in " ".join(tolerances.broken("stream", "twins", metrics))


@pytest.mark.parametrize("backend", ["mlx", "onnx"])
def test_backend_streams_agree_with_torch_block_by_block(backend):
    x, ref = torch_stream()
    metrics = stream_twins.twin_metrics(models(backend), x, OPTS, ref)
    print(f"\n{backend} stream against torch's: {metrics}")
    tolerances.assert_within("stream", "twins", metrics)


def local_pitch(audio: np.ndarray) -> tuple[None, np.ndarray]:
    """A frame-local f0 (autocorrelation over 1024 samples around each frame centre; integer lags): unlike the tiny
    RMVPE's random weights, it tracks the clip's pitch (97.8 % raw pitch accuracy on the 4 s clip) and depends only
    on a frame's neighbourhood, so the stream and the offline pipeline must give the synthesizer the same f0."""
    win, lo, hi = 1024, SAMPLE_RATE // 600, SAMPLE_RATE // 60
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(audio.astype(np.float64), win // 2), win)[::HOP]
    frames = frames[: audio.shape[0] // HOP + 1]
    r = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * win)) ** 2)[:, :win]
    lag = lo + np.argmax(r[:, lo:hi], axis=1)
    voiced = r[np.arange(r.shape[0]), lag] > 0.6 * np.maximum(r[:, 0], 1e-12)
    return None, np.where(voiced & (r[:, 0] > 1e-5 * win), SAMPLE_RATE / lag, 0.0)


def offline_metrics(result: stream.StreamResult, offline: pipeline.Conversion, n_input: int, delay: int = 0) -> dict:
    """The stream (advanced by its nominal delay, less `delay` frames) against the offline output: spectral metrics,
    and the f0 on the frames the offline track calls voiced."""
    audio, f0 = result.aligned(n_input)
    upp, pad = result.sr // 100, pipeline.Windows().t_pad // HOP
    n = offline.waveform.size  # whole frames of the input
    audio, f0 = np.roll(audio, delay * upp)[:n], np.roll(f0, delay)[: n // upp]
    ref_f0 = offline.f0[pad : pad + f0.size]
    return {
        **parity.audio_metrics(audio, offline.waveform, offline.sr),
        **parity.pitch_metrics(np.where(ref_f0 > 0, f0, 0), ref_f0),
    }


def test_stream_agrees_with_the_offline_pipeline():
    x = clip()
    m = pipeline.WithPitch(models("torch"), local_pitch)
    offline = pipeline.convert(m, x, pipeline.Options(deterministic=True, rms_mix_rate=1.0))
    result = stream.run(m, x, stream.StreamOptions(deterministic=True, rms_mix_rate=1.0))
    metrics = offline_metrics(result, offline, x.size)
    print(f"\nstream vs offline: {metrics}")
    tolerances.assert_within("stream", "offline", metrics)
    late = offline_metrics(result, offline, x.size, delay=result.frames.block)  # one block late
    assert {"log_mel_corr", "mrstft", "cents_p95"} <= {
        b.split(" ")[0] for b in tolerances.broken("stream", "offline", late)
    }


@pytest.mark.parametrize(
    "opts, message",
    [
        (dict(block_time=0.005), "block_time must be at least 0.01 s (one 10 ms frame), got 0.005 s"),
        (dict(crossfade_time=0.3), "crossfade_time (0.3 s) must not be longer than block_time (0.25 s)"),
        (dict(crossfade_time=0.0), "crossfade_time must be at least 0.01 s, got 0 s"),
        (dict(extra_time=-1.0), "extra_time must be >= 0 s, got -1 s"),
        (dict(extra_time=10.0), "must fit the f0 cache of 1024 frames (10.24 s), got 10.31 s"),
        (dict(block_time=float("nan")), "block_time must be a finite number, got nan"),
        (dict(rms_mix_rate=2.0), "rms_mix_rate must be in [0, 1], got 2"),
    ],
)
def test_bad_options_are_one_line_errors(opts, message):
    with pytest.raises(pipeline.OptionError) as err:
        stream.StreamOptions(**opts).check()
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# rvc-bench stream


def stream_cli(tmp_path, *extra) -> tuple[int, str, str]:
    import subprocess
    import sys

    import soundfile as sf

    from rvc_bench import fixtures, stages

    voice = stages.SYNTH.checkpoint(fixtures.cache_dir(), "tiny")
    src = tmp_path / "in.wav"
    sf.write(src, clip()[: 2 * SAMPLE_RATE], SAMPLE_RATE, subtype="FLOAT")
    args = [str(voice), str(src), "-o", str(tmp_path / "out.wav"), "--model-size", "tiny", "--synthetic-models"]
    proc = subprocess.run(
        [sys.executable, "-m", "rvc_bench.cli", "stream", *args, *extra], capture_output=True, text=True, timeout=600
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_stream_command_writes_the_aligned_stream_and_prints_its_latency(tmp_path):
    import soundfile as sf

    opts = ("--block", "0.25", "--crossfade", "0.05", "--extra", "0.5", "--deterministic", "--backend", "mlx")
    code, out, err = stream_cli(tmp_path, *opts)
    assert code == 0, err
    assert "in 9 blocks of 0.25 s on mlx:cpu" in out  # 2 s + 60 ms of delay -> 9 blocks
    assert "algorithmic delay 560 ms (2 x block + crossfade + 10 ms); per block p50 " in out
    assert re.search(r"real-time factor [0-9.]+; missed deadlines \d+ of 9 \(", out)
    written, sr = sf.read(tmp_path / "out.wav", dtype="int16")
    expected = stream.run(
        models("mlx"), clip()[: 2 * SAMPLE_RATE], stream.StreamOptions(extra_time=0.5, deterministic=True)
    )
    assert sr == expected.sr and written.size == 2 * sr  # lined up with the input, its length
    # the command's MLX runs on the BLAS it preloads (this process's does not), so it is not bit for bit the same
    # (measured 84.5 dB)
    snr = parity.tensor_metrics(written, pipeline.to_int16(expected.aligned(2 * SAMPLE_RATE)[0]))["snr_db"]
    print(f"\ncommand against this process: {snr:.1f} dB")
    assert snr >= 50


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--block", "0.005"), "block_time must be at least 0.01 s (one 10 ms frame), got 0.005 s"),
        (("--crossfade", "0.3"), "crossfade_time (0.3 s) must not be longer than block_time (0.25 s)"),
    ],
)
def test_stream_command_bad_options_are_one_line(tmp_path, extra, message):
    code, out, err = stream_cli(tmp_path, *extra)
    assert code == 2 and err == f"rvc-bench: error: {message}\n" and not (tmp_path / "out.wav").exists()
