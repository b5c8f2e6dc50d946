"""RVC's real-time (live) conversion (rt spec ../shared/spec/rvc_realtime.md): the audio is fed in blocks, each block
converts the last extra + crossfade + 10 ms + block of input, the synthesizer returns only the newest frames
(skip_head / return_length), and SOLA joins the blocks. One code path for every backend, through the same model
adapters as the offline pipeline (pipeline.Models).

Rates: the stream's input is 16 kHz (what the offline pipeline takes, so the device-rate -> 16 kHz resampler of
§3.5 is the identity) and its output is at the voice's rate (sr_type "sr_model": no output resampler). Sizes are in
10 ms frames (spec §1: every time rounded to 10 ms, half to even), i.e. 160 input samples or `upp` output samples.
Defaults are GUIConfig's (block 0.25 s, crossfade 0.05 s, extra 2.5 s, rms_mix_rate 0, key 0).
Not implemented: the threshold gate, input/output noise reduction, formant, index retrieval (index_rate 0), f0
methods other than RMVPE. Noise as the offline pipeline: with `seed`, block n's eps and NSF source noise are drawn
from numpy's default_rng([seed, n]) (identical on every backend); `deterministic` injects zeros.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from rvc_bench.audio import HOP, SAMPLE_RATE, validate
from rvc_bench.pipeline import OptionError, rms
from rvc_bench.rmvpe.decode import coarse_pitch, transpose
from rvc_bench.synth.config import stream_heads

F0_CACHE = 1024  # frames of the rolling f0 cache (RVC.__init__)
SOLA_MAX = 4  # frames: the crossfade actually faded is at most 40 ms
RMVPE_STEP = 5120  # 16 kHz samples: the f0 window is rounded up to a multiple of this (32 RMVPE frames), minus a hop
F0_MARGIN = 800  # 16 kHz samples (50 ms) of f0 window beyond the block
RMS_FLOOR = 1e-3


@dataclass(frozen=True)
class StreamOptions:
    """The live mode's options under upstream's names (GUIConfig); times in seconds, `pitch` in semitones."""

    block_time: float = 0.25
    crossfade_time: float = 0.05
    extra_time: float = 2.5
    pitch: float = 0.0  # f0 up key
    rms_mix_rate: float = 0.0  # 1 keeps the output's loudness; below 1 the input's envelope is imposed
    sid: int = 0
    seed: int | None = None
    deterministic: bool = False

    def check(self) -> None:
        for name in ("block_time", "crossfade_time", "extra_time", "pitch", "rms_mix_rate"):
            if not math.isfinite(getattr(self, name)):
                raise OptionError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.block_time < 0.01:
            raise OptionError(f"block_time must be at least 0.01 s (one 10 ms frame), got {self.block_time:g} s")
        if self.crossfade_time < 0.01:
            raise OptionError(f"crossfade_time must be at least 0.01 s, got {self.crossfade_time:g} s")
        if self.crossfade_time > self.block_time:
            raise OptionError(
                f"crossfade_time ({self.crossfade_time:g} s) must not be longer than block_time ({self.block_time:g} s)"
            )
        if self.extra_time < 0:
            raise OptionError(f"extra_time must be >= 0 s, got {self.extra_time:g} s")
        if not 0 <= self.rms_mix_rate <= 1:
            raise OptionError(f"rms_mix_rate must be in [0, 1], got {self.rms_mix_rate:g}")
        if not -48 <= self.pitch <= 48:
            raise OptionError(f"pitch must be in [-48, 48] semitones, got {self.pitch:g}")
        if self.sid < 0:
            raise OptionError(f"sid must be >= 0, got {self.sid}")
        total = Frames.of(self).total
        if total > F0_CACHE:
            raise OptionError(
                f"block_time + crossfade_time + extra_time + 0.01 s must fit the f0 cache of {F0_CACHE} frames "
                f"({F0_CACHE / 100:g} s), got {total / 100:g} s"
            )


def _frames(seconds: float) -> int:
    return int(np.round(seconds * 100))  # np.round: half to even, as upstream's start_vc


@dataclass(frozen=True)
class Frames:
    """A stream configuration's sizes in 10 ms frames (rt spec §1-§2): block b, crossfade c, extra x (= skip_head),
    the SOLA buffer s = min(c, 4) and search of 1 frame; the buffer T = x + c + 1 + b; return_length b + s + 1."""

    block: int
    crossfade: int
    extra: int

    @classmethod
    def of(cls, opts: StreamOptions) -> Frames:
        return cls(_frames(opts.block_time), _frames(opts.crossfade_time), _frames(opts.extra_time))

    sola = property(lambda self: min(self.crossfade, SOLA_MAX))
    total = property(lambda self: self.extra + self.crossfade + 1 + self.block)
    skip_head = property(lambda self: self.extra)
    return_length = property(lambda self: self.block + self.sola + 1)

    @property
    def f0_window(self) -> int:
        """E: 16 kHz samples RMVPE sees, block + 50 ms rounded up to 32 RMVPE frames (minus one hop)."""
        e0 = self.block * HOP + F0_MARGIN
        return RMVPE_STEP * ((e0 - 1) // RMVPE_STEP + 1) - HOP

    def delay_seconds(self) -> float:
        """The author's algorithmic delay, 2 x block + crossfade + 10 ms (rt spec §6), on the rounded sizes."""
        return (2 * self.block + self.crossfade + 1) / 100


def fade_in(n: int) -> np.ndarray:
    """sin^2(pi/2 * i / (n - 1)), i = 0..n-1: 0 to 1 inclusive (one sample: 1)."""
    if n == 1:
        return np.ones(1, np.float32)
    return (np.sin(0.5 * np.pi * np.arange(n) / (n - 1)) ** 2).astype(np.float32)


def sola_offset(y: np.ndarray, tail: np.ndarray, search: int) -> int:
    """argmax over k = 0..search of <y[k:k+S], tail> / sqrt(|y[k:k+S]|^2 + 1e-8) (rt spec §5.1; first maximum).
    In float64 (upstream: float32 conv1d), so that near-ties do not depend on the backend's float32 sums."""
    s = tail.shape[0]
    win = np.lib.stride_tricks.sliding_window_view(y[: s + search].astype(np.float64), s)
    num = win @ tail.astype(np.float64)
    den = np.sqrt(np.sum(win * win, axis=1) + 1e-8)
    return int(np.argmax(num / den))


def rms_envelope(x: np.ndarray, hop: int, length: int) -> np.ndarray:
    """librosa RMS (frame 4 hops, centred) of x, linearly interpolated (align_corners=True) to length + 1 points,
    the last dropped: frame j sits on sample j * hop (rt spec §3.8)."""
    env = rms(x, 4 * hop, hop)
    return np.interp(np.linspace(0, env.shape[0] - 1, length + 1), np.arange(env.shape[0]), env)[:-1]


class Stream:
    """The live mode's state and per-block step on one pipeline.Models. push(16 kHz block) -> block_time of output
    at the voice's rate. State starts at zero (as after the GUI's prewarm)."""

    def __init__(self, models, opts: StreamOptions = StreamOptions()):
        opts.check()
        if opts.sid >= models.cfg.spk_embed_dim:
            raise OptionError(f"sid {opts.sid} is out of range: the voice has {models.cfg.spk_embed_dim} speakers")
        self.models, self.opts, self.cfg = models, opts, models.cfg
        self.frames = Frames.of(opts)
        upp, f = self.cfg.upp, self.frames
        self.fade_in = fade_in(f.sola * upp)
        self.buffer = np.zeros(f.total * HOP, np.float32)  # input_wav_res: the last T frames of 16 kHz input
        self.cache_pitch = np.zeros(F0_CACHE, np.int64)
        self.cache_pitchf = np.zeros(F0_CACHE, np.float32)
        self.sola_buffer = np.zeros(f.sola * upp, np.float32)
        self.blocks = 0
        self.block_f0 = None  # [block] Hz: the f0 the synthesizer got for the frames push() last returned

    def noise(self, frames: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(eps [frames - fh, inter], NSF source noise [return_length * upp]) of the current block, or (None, None)."""
        cfg, f = self.cfg, self.frames
        shape = (frames - stream_heads(f.skip_head, f.return_length)[0], cfg.inter_channels)
        n = f.return_length * cfg.upp
        if self.opts.deterministic:
            return np.zeros(shape, np.float32), np.zeros(n, np.float32) if cfg.f0 else None
        if self.opts.seed is None:
            return None, None
        rng = np.random.default_rng([self.opts.seed, self.blocks])
        eps = rng.standard_normal(shape, dtype=np.float32)
        return eps, rng.standard_normal(n, dtype=np.float32) if cfg.f0 else None

    def update_f0(self) -> None:
        """RVC.get_f0_rmvpe (rt spec §4.3): RMVPE on the newest E samples, unvoiced frames filled by interpolation,
        transposed; the caches shift by one block and their last P - 4 entries take frames [3, P - 1)."""
        _, f0 = self.models.pitch(self.buffer[-self.frames.f0_window :])
        voiced = np.flatnonzero(f0 > 0)
        if voiced.size:
            f0 = np.interp(np.arange(f0.shape[0]), voiced, f0[voiced])
        f0 = transpose(f0, self.opts.pitch)
        keep = f0.shape[0] - 4
        for cache, new in ((self.cache_pitch, coarse_pitch(f0)), (self.cache_pitchf, f0.astype(np.float32))):
            cache[: -self.frames.block] = cache[self.frames.block :].copy()
            cache[-keep:] = new[3:-1]

    def infer(self) -> np.ndarray:
        """RVC.infer (rt spec §4) on the buffer -> the chunk [return_length * upp] at the voice's rate."""
        m, f = self.models, self.frames
        t = f.total
        feats = m.features(self.buffer)  # [F, C], F = (N16 - 400) // 320 + 1
        feats = np.repeat(np.concatenate([feats, feats[-1:]]), 2, axis=0)[:t]  # last frame once more, 2x nearest
        pitch = pitchf = None
        if self.cfg.f0:
            self.update_f0()
            pitch, pitchf = self.cache_pitch[-t:], self.cache_pitchf[-t:]
            self.block_f0 = pitchf[f.skip_head : f.skip_head + f.block].copy()  # the f0 of this block's output
        eps, sine_noise = self.noise(t)
        return m.synthesize(feats, pitch, pitchf, self.opts.sid, eps, sine_noise, f.skip_head, f.return_length)

    def rms_mix(self, y: np.ndarray) -> np.ndarray:
        """Impose the input's loudness on the chunk (rt spec §3.8): 40 ms frames, 10 ms hop, output RMS floored."""
        upp, x = self.cfg.upp, self.frames.extra * HOP
        ref = self.buffer[x : x + self.frames.return_length * HOP]
        rms_in = rms_envelope(ref, HOP, y.shape[0])
        rms_out = np.maximum(rms_envelope(y, upp, y.shape[0]), RMS_FLOOR)
        return (y * (rms_in / rms_out) ** (1 - self.opts.rms_mix_rate)).astype(np.float32)

    def push(self, block: np.ndarray, offset: int | None = None) -> tuple[np.ndarray, int]:
        """One block (block_time of 16 kHz input) -> (block_time of output, SOLA offset). `offset` replaces the
        search (to replay a reference stream's offsets)."""
        f, upp = self.frames, self.cfg.upp
        if block.shape != (f.block * HOP,):
            raise ValueError(f"a block is {f.block * HOP} samples, got {block.shape}")
        self.buffer[: -block.shape[0]] = self.buffer[block.shape[0] :].copy()
        self.buffer[-block.shape[0] :] = block
        y = self.infer()
        if self.opts.rms_mix_rate < 1:
            y = self.rms_mix(y)
        s, b = f.sola * upp, f.block * upp
        off = sola_offset(y, self.sola_buffer, upp) if offset is None else offset
        y = y[off:].copy()
        y[:s] = y[:s] * self.fade_in + self.sola_buffer * (1 - self.fade_in)
        self.sola_buffer = y[b : b + s].copy()
        self.blocks += 1
        return y[:b], off


# ---------------------------------------------------------------------------------------------------------------
# A file through the live mode, on a simulated (or real) clock


@dataclass
class StreamResult:
    """A streamed conversion. `audio` is what the live mode plays: block after block, output sample k of block n
    aligned with input sample n * block + k - D, D = crossfade + 10 ms - offset[n] (rt spec §6); `f0` the
    synthesizer's f0 for each output frame, on the same delayed time base. `seconds[n]`: block n's processing
    time; `missed[n]`: whether it finished after its deadline on the clock (block n's input is complete at
    (n + 1) * block_time; its output is due one block later; a late block delays the next one's start).
    `cold_seconds`: the prewarm block's time (first call: lazy initialisation)."""

    audio: np.ndarray
    sr: int
    frames: Frames
    seconds: np.ndarray
    missed: np.ndarray
    offsets: list[int]
    f0: np.ndarray | None
    cold_seconds: float

    @property
    def block_time(self) -> float:
        return self.frames.block / 100

    def aligned(self, n_input: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(audio, f0) advanced by the nominal delay (crossfade + 10 ms) and cut to the input's length (n_input
        16 kHz samples): aligned with the input to within the SOLA offsets (at most 10 ms)."""
        d, upp = self.frames.crossfade + 1, self.sr // 100
        f0 = None if self.f0 is None else self.f0[d : d + n_input // HOP]
        return self.audio[d * upp : d * upp + n_input * upp // HOP], f0

    def figures(self) -> dict[str, float]:
        """The latency figures: algorithmic delay (2 x block + crossfade + 10 ms), per-block processing
        percentiles, real-time factor (mean processing / block), share of missed deadlines, cold first block and
        latency (delay + p95 processing), in milliseconds where times."""
        ms = self.seconds * 1000
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        delay = self.frames.delay_seconds() * 1000
        return {
            "delay_ms": delay,
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "max_ms": float(ms.max()),
            "rtf": float(self.seconds.mean() / self.block_time),
            "missed_share": float(self.missed.mean()),
            "cold_ms": self.cold_seconds * 1000,
            "latency_ms": delay + float(p95),
        }


def probe(frames: Frames) -> np.ndarray:
    """The GUI's prewarm input: 0.05 sin(2 pi 220 t), one block."""
    return (0.05 * np.sin(2 * np.pi * 220 * np.arange(frames.block * HOP) / SAMPLE_RATE)).astype(np.float32)


def run(models, audio: np.ndarray, opts: StreamOptions = StreamOptions(), realtime: bool = False, offsets=None):
    """16 kHz mono audio through the live mode -> StreamResult. The input is zero-padded to whole blocks, plus
    crossfade + 10 ms so that the delayed output covers it. A prewarm block (timed: the cold time) runs first on a
    throwaway stream, as the GUI's prewarm does. realtime: each block waits until its input would have been
    recorded (the audio's own rate); otherwise the clock is simulated. offsets: SOLA offsets to replay."""
    x = validate(audio, "input audio")
    stream = Stream(models, opts)
    f = stream.frames
    start = time.perf_counter()
    stream.push(probe(f))
    cold = time.perf_counter() - start
    stream = Stream(models, opts)
    n = -(-(x.shape[0] + (f.crossfade + 1) * HOP) // (f.block * HOP))
    x = np.pad(x, (0, n * f.block * HOP - x.shape[0]))
    outs, f0s, offs, seconds, missed = [], [], [], [], []
    block_s, origin, busy_until = f.block / 100, time.perf_counter(), 0.0
    for i in range(n):
        ready = (i + 1) * block_s  # block i's input is complete (clock time since the stream started)
        if realtime:
            time.sleep(max(0.0, origin + ready - time.perf_counter()))
        begin = time.perf_counter()
        out, off = stream.push(x[i * f.block * HOP : (i + 1) * f.block * HOP], None if offsets is None else offsets[i])
        took = time.perf_counter() - begin
        busy_until = (begin - origin if realtime else max(ready, busy_until)) + took
        outs.append(out)
        offs.append(off)
        f0s.append(stream.block_f0)
        seconds.append(took)
        missed.append(busy_until > ready + block_s)
    return StreamResult(
        audio=np.concatenate(outs),
        sr=models.cfg.sr,
        frames=f,
        seconds=np.array(seconds),
        missed=np.array(missed),
        offsets=offs,
        f0=np.concatenate(f0s) if models.cfg.f0 else None,
        cold_seconds=cold,
    )


# ---------------------------------------------------------------------------------------------------------------
# `rvc-bench stream`


def describe(result: StreamResult) -> str:
    """The latency figures, one line."""
    f = result.figures()
    n = result.seconds.size
    return (
        f"algorithmic delay {f['delay_ms']:.0f} ms (2 x block + crossfade + 10 ms); per block p50 {f['p50_ms']:.1f} "
        f"ms, p95 {f['p95_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms, max {f['max_ms']:.1f} ms; real-time factor "
        f"{f['rtf']:.3f}; missed deadlines {int(result.missed.sum())} of {n} ({100 * f['missed_share']:.1f} %); "
        f"cold first block {f['cold_ms']:.0f} ms; latency (delay + p95) {f['latency_ms']:.0f} ms"
    )


def stream_file(args) -> str:
    """`rvc-bench stream`: args.input through the live mode with args.voice into args.output (atomic; advanced by
    the nominal delay so that it lines up with the input); returns the summary and latency lines."""
    from rvc_bench import audio, infer
    from rvc_bench.backends import BackendError, get_backend
    from rvc_bench.fileio import check_output
    from rvc_bench.layout import CheckpointError
    from rvc_bench.pipeline import to_int16

    try:
        times = dict(block_time=args.block, crossfade_time=args.crossfade, extra_time=args.extra)
        same = {k: getattr(args, k) for k in ("rms_mix_rate", "sid", "seed", "deterministic")}
        opts = StreamOptions(pitch=args.f0_up_key, **times, **same)
        opts.check()
        out = check_output(args.output, [args.voice, args.input, args.hubert, args.rmvpe], args.force)
        audio.output_format(out)
        x, source = audio.read_audio(args.input)
        backend = get_backend(args.backend, getattr(args, f"{args.backend}_device"))
        models = infer.load_models(args, backend)
        result = run(models, x, opts, realtime=args.realtime)
        aligned, _ = result.aligned(x.size)
        audio.write_audio(out, to_int16(aligned), result.sr)
    except (audio.AudioError, CheckpointError, OptionError, BackendError) as err:
        raise infer.InferError(str(err)) from None
    return (
        f"rvc-bench stream: converted {x.size / SAMPLE_RATE:.2f} s ({source}) in {result.seconds.size} blocks of "
        f"{result.block_time:g} s on {infer.backend_text(args, backend)} -> {out} ({result.sr} Hz)\n"
        f"  {describe(result)}"
    )
