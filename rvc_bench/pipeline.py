"""The whole RVC conversion (spec §1, §4, §7) on one backend: 16 kHz audio -> converted waveform at the voice's rate
(or resample_sr).

One code path for every backend (torch, MLX, ONNX Runtime). The numpy glue (peak guard, high-pass, split points,
padding, the chunk loop, pitch post-processing, retrieval blend, 2x upsample, protect, RMS mix, int16 scaling) lives
here; the three networks are loaded through the stage registry (rvc_bench.stages) and called through `Models`, which
takes and returns numpy by way of the backend adapter:

    pitch(audio [N] f32) -> f0 [N // 160 + 1] Hz        RMVPE (mel + network on the backend, decode in numpy)
    features(audio [L] f32) -> [F, C] f32                HuBERT / ContentVec (v1: 256-d, v2: 768-d)
    synthesize(phone [T, C], pitch [T], pitchf [T], sid, eps [T, inter], sine_noise [T * upp]) -> [T * upp] f32

Windowing constants are the fp32 row of Config.params_config (x_pad 1, x_query 6, x_center 38, x_max 41 s).
Noise: with `seed`, the prior noise eps and the NSF source noise of chunk i are drawn in numpy from
default_rng([seed, i]) and injected, so every backend synthesises from identical noise; `deterministic=True` injects
zeros; neither: each backend draws its own (upstream behaviour, not reproducible).
resample_sr resamples the output with the resampler that reads the input (ffmpeg's, see audio.resample), not with
librosa's default (soxr_hq) that upstream uses there. Not implemented: f0 methods other than RMVPE, f0 files, fp16.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rvc_bench import stages
from rvc_bench.audio import HOP, SAMPLE_RATE, highpass, peak_guard, resample, validate
from rvc_bench.layout import CheckpointError
from rvc_bench.rmvpe.decode import coarse_pitch, transpose

# ---------------------------------------------------------------------------------------------------------------
# Options


class OptionError(ValueError):
    """A conversion parameter out of range; one-line message."""


@dataclass(frozen=True)
class Windows:
    """Chunking in seconds (spec §1.4). Defaults: the fp32 row; tests may shrink x_query/x_center/x_max."""

    x_pad: float = 1.0  # context synthesised and dropped on each side of every chunk
    x_query: float = 6.0  # a cut is searched within +-x_query of each multiple of x_center
    x_center: float = 38.0
    x_max: float = 41.0  # audio longer than this (minus one frame) is cut

    def samples(self, x: float) -> int:
        return int(round(SAMPLE_RATE * x))

    t_pad = property(lambda self: self.samples(self.x_pad))
    t_query = property(lambda self: self.samples(self.x_query))
    t_center = property(lambda self: self.samples(self.x_center))
    t_max = property(lambda self: self.samples(self.x_max))

    def t_pad_tgt(self, sr: int) -> int:
        return int(round(sr * self.x_pad))

    def check(self) -> None:
        if self.x_pad <= 0 or self.t_pad % HOP:
            raise OptionError(f"x_pad must be a positive multiple of 10 ms, got {self.x_pad}")
        if not 0 < self.x_query < self.x_center <= self.x_max:
            raise OptionError(
                f"windows need 0 < x_query < x_center <= x_max, got {self.x_query}, {self.x_center}, {self.x_max}"
            )


MAX_RESAMPLE_SR = 192000  # Hz; upstream resamples to any rate >= 16 kHz, this bounds a typo


@dataclass(frozen=True)
class Options:
    """vc_single's user parameters (WebUI defaults) plus the noise source."""

    f0_up_key: float = 0.0  # semitones
    index_rate: float = 0.75  # retrieval blend; 0 (or no index) skips retrieval
    protect: float = 0.33  # unvoiced frames keep this share of retrieved features; 0.5 disables protect
    rms_mix_rate: float = 0.25  # 1 keeps the output's own loudness envelope, 0 imposes the input's
    sid: int = 0  # speaker id
    seed: int | None = None  # numpy noise per chunk (identical on every backend)
    deterministic: bool = False  # zero noise (takes precedence over seed)
    resample_sr: int = 0  # output rate; 0 (or the voice's rate) keeps the voice's rate
    windows: Windows = field(default_factory=Windows)

    def check(self) -> None:
        def within(name, lo, hi):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
                raise OptionError(f"{name} must be in [{lo}, {hi}], got {v!r}")

        within("index_rate", 0.0, 1.0)
        within("protect", 0.0, 0.5)
        within("rms_mix_rate", 0.0, 1.0)
        within("f0_up_key", -48.0, 48.0)
        if self.sid < 0:
            raise OptionError(f"sid must be >= 0, got {self.sid}")
        if self.resample_sr != 0 and not SAMPLE_RATE <= self.resample_sr <= MAX_RESAMPLE_SR:
            raise OptionError(
                f"resample_sr must be 0 (the voice's rate) or in [{SAMPLE_RATE}, {MAX_RESAMPLE_SR}] Hz, "
                f"got {self.resample_sr}"
            )
        self.windows.check()


@dataclass
class Conversion:
    audio: np.ndarray  # int16 [M] at sr: what vc_single returns
    waveform: np.ndarray  # float32 [M]: the same before int16 scaling (after the RMS mix and any resampling)
    sr: int  # the voice's rate, or resample_sr
    f0: np.ndarray | None  # float64 [p_len]: transposed f0 (Hz, 0 = unvoiced) over the padded audio; None for nono
    # float32 [p_len, 360]: the RMVPE salience f0 was decoded from; None for nono or a given f0 (WithPitch)
    salience: np.ndarray | None = None
    cuts: list[int] = field(default_factory=list)  # chunk boundaries (samples of the padded audio, on the 160 grid)

    @property
    def seconds(self) -> float:
        return self.audio.size / self.sr


# ---------------------------------------------------------------------------------------------------------------
# numpy pieces (shared by every backend)


def split_points(x: np.ndarray, w: Windows = Windows()) -> list[int]:
    """Cut positions (samples of x) for audio longer than t_max (spec §1.5): the quietest 10 ms near each
    multiple of t_center, by the 160-sample moving L1 energy (per-sample |x|, the pip package's variant).

    The energy is summed as upstream sums it: the 160 shifted |xp| arrays added one after another into a float64
    accumulator. A running-sum difference rounds at the scale of the whole file's sum (~1e-10 at 60 s), more than
    the energy of digitally silent stretches, and moves the cut. Each sum is elementwise, so computing it only
    inside the search windows gives the same bits as upstream's whole-length array."""
    n = x.shape[0]
    if n + HOP <= w.t_max:
        return []
    xp = np.pad(np.abs(np.asarray(x, dtype=np.float64)), (HOP // 2, HOP // 2), mode="reflect")
    cuts = []
    for t in range(w.t_center, n, w.t_center):
        lo, hi = t - w.t_query, min(t + w.t_query, n)
        energy = np.zeros(hi - lo)  # energy[j] = sum_i |xp[lo + j + i]|, i = 0..159 in this order
        for i in range(HOP):
            energy += xp[lo + i : hi + i]
        cuts.append(lo + int(np.argmin(energy)))  # first index of the minimum
    return cuts


def protect_mix(feats: np.ndarray, feats0: np.ndarray, pitchf: np.ndarray, protect: float) -> np.ndarray:
    """[T, C] feats (retrieved), feats0 (raw) -> voiced frames (pitchf >= 1 Hz) keep feats, the others
    protect * feats + (1 - protect) * feats0 (spec §7.3f)."""
    w = np.where(pitchf < 1, np.float32(protect), np.float32(1))[:, None]
    return feats * w + feats0 * (1 - w)


RMS_PAD_MODE = "constant"  # librosa >= 0.10's default for feature.rms (0.9.x used "reflect"); pinned here


def rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """librosa.feature.rms(y, frame_length, hop_length, center=True, pad_mode="constant")[0] in float64:
    y zero-padded by frame_length // 2 per side, sqrt(mean(y^2)) over each frame."""
    y = np.pad(np.asarray(y, dtype=np.float64), frame_length // 2, mode=RMS_PAD_MODE)
    frames = np.lib.stride_tricks.sliding_window_view(y, frame_length)[::hop_length]  # [n_frames, frame]
    return np.sqrt(np.mean(frames**2, axis=1))


def interp_linear(v: np.ndarray, size: int) -> np.ndarray:
    """torch F.interpolate(mode="linear", align_corners=False) of a 1-D signal to `size` points."""
    n = v.shape[0]
    src = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    lam = src - i0
    return (1.0 - lam) * v[i0] + lam * v[i1]


def rms_mix(out: np.ndarray, sr: int, ref: np.ndarray, rate: float) -> np.ndarray:
    """Impose the input's loudness envelope on the output (spec §7.4): out * rms_in^(1-rate) * rms_out^(rate-1),
    envelopes of 1 s frames with 0.5 s hop (16 kHz input; sr // 2 * 2 at the output rate) interpolated to out."""
    rms_in = interp_linear(rms(ref, SAMPLE_RATE // 2 * 2, SAMPLE_RATE // 2), out.shape[0])
    rms_out = np.maximum(interp_linear(rms(out, sr // 2 * 2, sr // 2), out.shape[0]), 1e-6)
    return (out * (rms_in ** (1 - rate) * rms_out ** (rate - 1))).astype(np.float32)


def to_int16(out: np.ndarray) -> np.ndarray:
    """Peak-limit to 0.99 of full scale (only attenuates), scale by 32768, truncate (spec §7.6)."""
    scale = 32768.0
    peak = np.abs(out).max() / 0.99
    if peak > 1:
        scale /= peak
    return (out * np.float32(scale)).astype(np.int16)


def chunk_noise(cfg, frames: int, seed: int, chunk: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(eps [T, inter], sine_noise [T * upp] or None for nono) standard normal float32 for chunk `chunk`."""
    rng = np.random.default_rng([seed, chunk])
    eps = rng.standard_normal((frames, cfg.inter_channels), dtype=np.float32)
    return eps, (rng.standard_normal(frames * cfg.upp, dtype=np.float32) if cfg.f0 else None)


# ---------------------------------------------------------------------------------------------------------------
# The three networks on one backend: numpy in, numpy out


class Models:
    """HuBERT, RMVPE (pitch models only) and the synthesizer on one backend (an rvc_bench.backends adapter, whose
    from_numpy / to_numpy move the arrays). The twins take the same time-major inputs, so nothing here is
    framework-specific."""

    def __init__(self, backend, hubert, rmvpe, synth):
        self.backend = backend
        self.hubert, self.rmvpe, self.synth = hubert, rmvpe, synth
        self.cfg = synth.cfg

    def pitch(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N] -> (salience [T, 360] float32, f0 [T] Hz), numpy."""
        return self.rmvpe(self.backend.from_numpy(audio))

    def features(self, audio: np.ndarray) -> np.ndarray:
        return self.backend.to_numpy(self.hubert.features(self.backend.from_numpy(audio[None]), self.cfg.version)[0])

    def synthesize(
        self, phone, pitch, pitchf, sid, eps=None, sine_noise=None, skip_head=None, return_length=None
    ) -> np.ndarray:
        """skip_head, return_length: only those frames (streaming; see the twins' infer)."""
        batch = lambda a: None if a is None else self.backend.from_numpy(a[None])  # noqa: E731
        sid = self.backend.from_numpy(np.array([sid]))
        heads = {} if skip_head is None else {"skip_head": skip_head, "return_length": return_length}
        audio = self.synth.infer(
            batch(phone), None, batch(pitch), batch(pitchf), sid, batch(eps), batch(sine_noise), **heads
        )  # no lengths: every frame is valid
        return self.backend.to_numpy(audio).reshape(-1)


class WithPitch:
    """Models whose pitch() is given (audio -> (None, f0); everything else delegated): the pipeline of one backend
    on another's f0, which tells a pitch divergence from a synthesis divergence."""

    def __init__(self, inner, pitch):
        self.inner, self.pitch = inner, pitch

    def __getattr__(self, name):
        return getattr(self.inner, name)


def load_models(
    backend,
    voice: str | os.PathLike,
    hubert: str | os.PathLike,
    rmvpe: str | os.PathLike | None,
    hubert_config: str = "full",
) -> Models:
    """The three models on `backend` (an rvc_bench.backends adapter), each through its stage's loader.

    voice: RVC voice .pth (or, for MLX, a converted .safetensors; for ONNX Runtime, our export); hubert:
    hubert_base.pt-style checkpoint or Hugging Face folder of the HuBERT preset `hubert_config` (for ONNX Runtime
    also a ContentVec .onnx of the voice's version); rmvpe: rmvpe.pt (or its keys in a .safetensors; for ONNX Runtime
    also an rmvpe.onnx), needed by pitch models only. ONNX Runtime exports the other files from their torch twins
    into the fixture cache first (once, in a child process). Errors (missing files, bad or mismatched checkpoints)
    are CheckpointError with one-line messages.
    """
    for what, path in (("voice model", voice), ("HuBERT checkpoint", hubert), ("RMVPE checkpoint", rmvpe)):
        if path is not None and not Path(path).exists():  # a HuBERT may be a folder; the loaders check the rest
            raise CheckpointError(f"{what} not found: {path}")
    synth = stages.SYNTH.model(backend, voice)
    if synth.cfg.f0 and rmvpe is None:
        raise CheckpointError(f"{voice}: a pitch model needs an RMVPE checkpoint (rmvpe.pt), none given")
    hub = stages.HUBERT.model(backend, hubert, config=hubert_config, version=synth.cfg.version)
    width = hub.cfg.final_dim if synth.cfg.version == "v1" else hub.cfg.embed_dim
    if width != synth.cfg.phone_channels:
        raise CheckpointError(
            f"HuBERT {synth.cfg.version} features are {width}-d but the voice model expects "
            f"{synth.cfg.phone_channels}-d"
        )
    return Models(backend, hub, stages.RMVPE.model(backend, rmvpe) if synth.cfg.f0 else None, synth)


# ---------------------------------------------------------------------------------------------------------------
# The conversion


def _convert_chunk(models: Models, segment: np.ndarray, pitch, pitchf, opts: Options, index, noise) -> np.ndarray:
    """Pipeline.vc (spec §7.3) on one padded segment (float64) -> waveform [p_len * upp] float32."""
    cfg = models.cfg
    feats = models.features(segment.astype(np.float32))  # [F, C]
    feats0 = feats if cfg.f0 and opts.protect < 0.5 else None  # raw features, before retrieval
    if index is not None and opts.index_rate != 0:
        feats = index.blend(feats, opts.index_rate)
    feats = np.repeat(feats, 2, axis=0)  # nearest 2x: 50 -> 100 frames/s
    p_len = min(segment.shape[0] // HOP, feats.shape[0])  # = 2F
    feats = feats[:p_len]
    if cfg.f0:
        pitch, pitchf = pitch[:p_len], pitchf[:p_len]
        if feats0 is not None:
            feats = protect_mix(feats, np.repeat(feats0, 2, axis=0)[:p_len], pitchf, opts.protect)
    eps, sine_noise = noise(p_len) if noise is not None else (None, None)
    return models.synthesize(feats, pitch, pitchf, opts.sid, eps, sine_noise)


def convert(models: Models, audio: np.ndarray, opts: Options = Options(), index=None) -> Conversion:
    """vc_single -> pipeline (spec §7): 16 kHz mono float audio [N] -> Conversion at the voice's sample rate.

    index: a retrieval.FeatureIndex (or None). Raises rvc_bench.audio.AudioError on unusable audio and
    OptionError on bad options, each with a one-line message.
    """
    opts.check()
    cfg, w = models.cfg, opts.windows
    if opts.sid >= cfg.spk_embed_dim:
        raise OptionError(f"sid {opts.sid} is out of range: the voice has {cfg.spk_embed_dim} speakers")
    x = highpass(peak_guard(validate(audio, "input audio")))  # float64 from here on
    cuts = split_points(x, w)
    audio_pad = np.pad(x, (w.t_pad, w.t_pad), mode="reflect")
    p_len = audio_pad.shape[0] // HOP
    f0 = pitch = pitchf = salience = None
    if cfg.f0:  # once, on the whole padded audio
        salience, f0 = models.pitch(audio_pad.astype(np.float32))
        salience = None if salience is None else salience[:p_len]
        f0 = transpose(f0[:p_len], opts.f0_up_key)
        pitch, pitchf = coarse_pitch(f0), f0.astype(np.float32)

    t_pad2, t_pad_tgt = 2 * w.t_pad, w.t_pad_tgt(cfg.sr)
    pieces, bounds, s = [], [], 0
    for i, cut in enumerate(cuts + [None]):
        if cut is None:  # the last chunk runs to the end
            seg, frames = audio_pad[s:], slice(s // HOP, None)
        else:
            t = cut // HOP * HOP
            seg, frames = audio_pad[s : t + t_pad2 + HOP], slice(s // HOP, (t + t_pad2) // HOP)
        if opts.deterministic:
            noise = lambda n: (  # noqa: E731
                np.zeros((n, cfg.inter_channels), np.float32),
                np.zeros(n * cfg.upp, np.float32) if cfg.f0 else None,
            )
        elif opts.seed is not None:
            noise = lambda n, i=i: chunk_noise(cfg, n, opts.seed, i)  # noqa: E731
        else:
            noise = None
        out = _convert_chunk(
            models,
            seg,
            None if pitch is None else pitch[frames],
            None if pitchf is None else pitchf[frames],
            opts,
            index,
            noise,
        )
        pieces.append(out[t_pad_tgt:-t_pad_tgt])
        if cut is not None:
            s = t
            bounds.append(t)
    out = np.concatenate(pieces)
    if opts.rms_mix_rate != 1:
        out = rms_mix(out, cfg.sr, x, opts.rms_mix_rate)
    sr = cfg.sr
    if opts.resample_sr and opts.resample_sr != sr:  # spec §7.5: before the int16 scaling
        out, sr = resample(out, sr, opts.resample_sr), opts.resample_sr
    return Conversion(audio=to_int16(out), waveform=out, sr=sr, f0=f0, cuts=bounds, salience=salience)
