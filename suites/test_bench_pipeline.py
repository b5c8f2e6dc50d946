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
from rvc_bench.synth import synthetic as synth_synthetic
from rvc_bench.synth.config import DEFAULT_VARIANT, preset

JUMP_CENTS = 50.0  # a frame further apart than this is a pitch jump (mir_eval's raw pitch tolerance)

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
    files = [stages.SYNTH.checkpoint_for(backend_name, voice, cache_dir()),
             stages.HUBERT.checkpoint_for(backend_name, hubert, cache_dir(), config=hubert_preset,
                                          version=preset(variant).version),
             stages.RMVPE.checkpoint_for(backend_name, rmvpe, cache_dir())]
    return pipeline.load_models(get_backend(backend_name, device), *files, hubert_preset)


@functools.lru_cache(maxsize=None)
def bench_index(size: str) -> retrieval.FeatureIndex:
    """Seeded stand-in for a voice's index (v2: 768-d). Full: 10 000 vectors (a few minutes of training audio)."""
    n = 10_000 if size == "full" else 500
    return retrieval.load_index(retrieval.ensure_synthetic_index(cache_dir(), 768, n=n, seed=0))


def snr(test, ref) -> float:
    return parity.tensor_metrics(test, ref)["snr_db"]


def check_twins(out: pipeline.Conversion, ref: pipeline.Conversion, check: str, what: str) -> dict:
    """Assert the f0 agreement of the table's pipeline benchmark check, and, when the f0 tracks agree on every frame
    (no voicing flip, no pitch jump), the waveform SNR and cents p95 of check `<check>-f0-agrees` (see
    test_pipeline's docstring for why the SNR is conditional)."""
    f0 = parity.pitch_metrics(out.f0, ref.f0)
    flips = int(np.sum((out.f0 > 0) != (ref.f0 > 0)))
    both = (out.f0 > 0) & (ref.f0 > 0)
    jumps = int(np.sum(np.abs(parity.hz_to_cents(out.f0[both]) - parity.hz_to_cents(ref.f0[both])) > JUMP_CENTS))
    got = snr(out.waveform, ref.waveform)
    summary = dict(snr_db=got, voicing_flips=flips, pitch_jumps=jumps, cents_p50=f0["cents_p50"],
                   cents_p95=f0["cents_p95"])
    print(f"\n{what}: " + ", ".join(f"{k} {v:.3g}" for k, v in summary.items()))
    tolerances.assert_within("pipeline", tolerances.BENCHMARK, f0)
    if flips == 0 and jumps == 0:
        tolerances.assert_within("pipeline", f"{check}-f0-agrees", {**f0, "snr_db": got})
    return summary


def test_bench_pipeline(benchmark, bench, backend_name, seconds):
    size = bench.model_size
    be = bench.backend(backend_name)
    m = models(backend_name, VARIANT, size, be.device)
    index = bench_index(size)
    audio = bench.audio(seconds).audio
    opts = pipeline.Options(seed=0)
    out = bench.measure(benchmark, be, lambda x: pipeline.convert(m, x, opts, index), (audio,), stage="pipeline",
                        variant=VARIANT, seconds=seconds)

    def torch_reference():
        if backend_name == "torch" and be.device == "cpu":
            return out
        return pipeline.convert(models("torch", VARIANT, size), audio, opts, index)

    ref = bench.reference(("pipeline", VARIANT, size, seconds), torch_reference)
    # Spectral metrics need >= 1200-sample windows: the tiny models' 1 kHz output is too short for them.
    metrics = (parity.audio_metrics if size == "full" else parity.tensor_metrics)(out.waveform, ref.waveform,
                                                                                  *([ref.sr] if size == "full" else []))
    f0 = parity.pitch_metrics(out.f0, ref.f0)
    assert out.sr == ref.sr and out.audio.shape == ref.audio.shape
    bench.record_parity({**metrics, **f0})  # one vocabulary: the f0 metrics keep parity.pitch_metrics' names
    check_twins(out, ref, tolerances.BENCHMARK, f"pipeline {size} {seconds:g} s {backend_name}")
