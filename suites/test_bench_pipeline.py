"""Full-pipeline benchmark: the whole conversion of bench.audio(seconds), models loaded beforehand; and the helpers
and bounds test_pipeline.py shares with it (tolerances explained at the top of test_pipeline.py).

No framework is imported at module level: each backend's models come from the stage registry's loaders, MLX's from
checkpoints converted once to .safetensors, ONNX Runtime's from graphs exported once by a child process, so a
benchmark process imports only the framework it measures.
"""

from __future__ import annotations

import functools

import numpy as np

from rvc_bench import parity, pipeline, retrieval, stages, tolerances
from rvc_bench.backends import get_backend
from rvc_bench.fixtures import cache_dir
from rvc_bench.rmvpe.config import THRESHOLD
from rvc_bench.rmvpe.decode import transpose
from rvc_bench.synth import synthetic as synth_synthetic
from rvc_bench.synth.config import DEFAULT_VARIANT, preset

# Spectral metrics need >= 1200-sample STFT windows: the tiny models' 1 kHz output (1 s: 980 samples) is too short,
# so tiny rows are judged on the waveform SNR and the pitch metrics alone (the table's why column says so).
SPECTRAL = ("mrstft", "log_mel_corr")

VARIANT = DEFAULT_VARIANT


@functools.lru_cache(maxsize=None)
def checkpoints(size: str = "tiny") -> tuple:
    return stages.pipeline_checkpoints(cache_dir(), size)


@functools.lru_cache(maxsize=None)
def models(backend_name: str, variant: str = VARIANT, size: str = "tiny", device: str = "cpu") -> pipeline.Models:
    """The pipeline's models on one backend, from the synthetic checkpoints (MLX: converted once to .safetensors;
    ONNX Runtime: exported once)."""
    hubert, rmvpe = checkpoints(size)
    voice = synth_synthetic.ensure_checkpoint(cache_dir(), size, variant=variant)
    hubert_preset = stages.PIPELINE_HUBERT[size]
    files = [
        stages.SYNTH.checkpoint_for(backend_name, voice, cache_dir()),
        stages.HUBERT.checkpoint_for(
            backend_name, hubert, cache_dir(), config=hubert_preset, version=preset(variant).version
        ),
        stages.RMVPE.checkpoint_for(backend_name, rmvpe, cache_dir()),
    ]
    return pipeline.load_models(get_backend(backend_name, device), *files, hubert_preset)


@functools.lru_cache(maxsize=None)
def bench_index(size: str) -> retrieval.FeatureIndex:
    """Seeded stand-in for a voice's index (v2: 768-d). Full: 10 000 vectors (a few minutes of training audio)."""
    n = 10_000 if size == "full" else 500
    return retrieval.load_index(retrieval.ensure_synthetic_index(cache_dir(), 768, n=n, seed=0))


def snr(test, ref) -> float:
    return parity.tensor_metrics(test, ref)["snr_db"]


def given_f0(m: pipeline.Models, ref: pipeline.Conversion, audio, opts: pipeline.Options, index=None):
    """The conversion of `m` given the reference's f0 (pitch() returns f0 before the transpose, so it is undone)."""
    return pipeline.convert(
        pipeline.WithPitch(m, lambda _: (None, transpose(ref.f0, -opts.f0_up_key))), audio, opts, index
    )


def twin_metrics(
    out: pipeline.Conversion, ref: pipeline.Conversion, same: pipeline.Conversion | None, spectral: bool
) -> dict:
    """What the pipeline's parity is judged on, always all of it: the waveform (identical noise on both sides), the
    spectral metrics (phase-insensitive) where the output is long enough, the f0 tracks (with how many of the frames
    apart the reference decided by less than float32's resolution: parity.TIE_MARGIN), and same_f0_snr_db, the
    waveform SNR of the tested backend's conversion given the reference's f0 (`same`): it tells a pitch divergence
    (snr_db fails, same_f0_snr_db holds) from a synthesis divergence (both fail); same=None: not measured."""
    assert out.sr == ref.sr and out.audio.shape == ref.audio.shape
    wave = (
        parity.audio_metrics(out.waveform, ref.waveform, ref.sr)
        if spectral
        else parity.tensor_metrics(out.waveform, ref.waveform)
    )
    pitch = parity.pitch_metrics(out.f0, ref.f0, parity.decision_margin(ref.salience, THRESHOLD))
    if same is None:
        return {**wave, **pitch}
    assert np.array_equal(same.f0, ref.f0)
    return {**wave, **pitch, "same_f0_snr_db": snr(same.waveform, ref.waveform)}


def judged(check: str, spectral: bool, same_f0: bool = True) -> tuple[str, ...] | None:
    """The bounds of the pipeline's `check` that apply (all, or all but the spectral ones, or all but the one of the
    conversion given the reference's f0 where that was not measured)."""
    skip = (() if spectral else SPECTRAL) + (() if same_f0 else ("same_f0_snr_db",))
    return tuple(m for m in tolerances.bounds("pipeline", check) if m not in skip) if skip else None


def describe(what: str, metrics: dict) -> str:
    keys = ("snr_db", "same_f0_snr_db", "frames_apart", "frames_apart_tied", "cents_p95", *SPECTRAL)
    # log_mel_corr: enough digits to see how far from 1 it is
    return f"\n{what}: " + ", ".join(
        f"{k} {metrics[k]:.{7 if k == 'log_mel_corr' else 3}g}" for k in keys if k in metrics
    )


def check_twins(out, ref, same, check: str, what: str, spectral: bool = False) -> dict:
    """Assert every bound of the pipeline's `check` on one conversion against its reference; returns the metrics."""
    metrics = twin_metrics(out, ref, same, spectral)
    print(describe(what, metrics))
    return tolerances.assert_within("pipeline", check, metrics, judged(check, spectral))


def test_bench_pipeline(benchmark, bench, backend_name, seconds, optimisation):
    size = bench.model_size
    be = bench.backend(backend_name)
    # A variant changes the networks in place: it gets its own copy, never the cached fp32 models.
    load = models if optimisation == "fp32" else models.__wrapped__
    m = bench.optimised(load(backend_name, VARIANT, size, be.device), "pipeline", optimisation)
    index = bench_index(size)
    audio = bench.audio(seconds).audio
    opts = pipeline.Options(seed=0)  # identical noise on both sides: the waveform is comparable sample by sample
    out = bench.measure(
        benchmark,
        be,
        lambda x: pipeline.convert(m, x, opts, index),
        (audio,),
        stage="pipeline",
        variant=VARIANT,
        seconds=seconds,
        optimisation=optimisation,
    )
    is_reference = (backend_name, be.device, optimisation) == ("torch", "cpu", "fp32")
    ref = bench.reference(
        ("pipeline", VARIANT, size, seconds),
        lambda: out if is_reference else pipeline.convert(models("torch", VARIANT, size), audio, opts, index),
    )
    # Given the reference's f0 where the tracks differ (any frame apart), to tell a pitch divergence from a synthesis
    # divergence; where they agree snr_db judges the synthesis itself, and the extra call would cost as much as the
    # benchmark's own first call (11 min for MLX at 5 min here).
    f0_apart = not is_reference and parity.pitch_metrics(out.f0, ref.f0)["frames_apart"] > 0
    same = given_f0(m, ref, audio, opts, index) if f0_apart else None
    spectral = size == "full"
    metrics = twin_metrics(out, ref, same, spectral)
    print(describe(f"pipeline {size} {seconds:g} s {backend_name}", metrics))
    bench.record_parity(metrics, only=judged(tolerances.BENCHMARK, spectral, same_f0=f0_apart))
