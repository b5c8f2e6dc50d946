"""The ONNX exports of tests/test_onnx.py and tests/test_onnx_files.py (tiny models), made once per fixture cache in
this process (`ensure`) with the keys the benchmark suites use, so the suites and these tests share them; and the
table's bounds on ONNX Runtime."""

from __future__ import annotations

import functools

from rvc_bench import stages, tolerances
from rvc_bench.backends import OnnxBackend
from rvc_bench.fixtures import cache_dir, generate


def within_table(stage: str, metrics: dict, check: str = tolerances.BENCHMARK, only=None) -> None:
    """The bounds the table sets for `stage` on ONNX Runtime hold (the same table the bench fixture and the gate
    apply to stored runs)."""
    tolerances.assert_within(stage, check, metrics, only, backend="onnx")


@functools.lru_cache(maxsize=None)
def backend() -> OnnxBackend:
    return OnnxBackend("cpu")


# ---- exports (cached in the fixtures cache; made once per cache) --------------------------------------------------


@functools.lru_cache(maxsize=None)
def mel_path():
    from rvc_bench.mel import model_onnx

    return model_onnx.ensure(None, cache_dir())


@functools.lru_cache(maxsize=None)
def rmvpe_models():
    """(checkpoint, export, torch RMVPE stage) of the tiny preset."""
    ckpt = stages.RMVPE.checkpoint(cache_dir(), "tiny")
    mel_path()  # the runner's log-mel
    return ckpt, stages.RMVPE.onnx.ensure(ckpt, cache_dir()), stages.RMVPE.convert.load_torch(ckpt)


@functools.lru_cache(maxsize=None)
def hubert_models(version: str):
    """(export of `version`, torch HubertModel) of the tiny preset."""
    ckpt = stages.HUBERT.checkpoint(cache_dir(), "tiny")
    return (
        stages.HUBERT.onnx.ensure(ckpt, cache_dir(), "tiny", version),
        stages.HUBERT.convert.load_torch(ckpt, config="tiny"),
    )


@functools.lru_cache(maxsize=None)
def synth_models(name: str):
    """(export, torch Synthesizer) of the tiny voice `name`."""
    from rvc_bench.synth import synthetic

    ckpt = synthetic.ensure_checkpoint(cache_dir(), "tiny", variant=name)
    return stages.SYNTH.onnx.ensure(ckpt, cache_dir()), stages.SYNTH.convert.load_torch(ckpt)


def synth_inputs(cfg, seconds: float, seed: int = 1):
    from rvc_bench.synth import synthetic

    frames = int(seconds * 100)
    return synthetic.make_inputs(cfg, generate(frames / 100 + 0.02, seed=3).f0[:frames], seed=seed)
